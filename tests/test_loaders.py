"""Splits and loader backends: disjoint stratified splits, shapes, DDP sharding, backend agreement."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from data_fixtures import make_cifar_npz

from harness.errors import HarnessError
from loaders import AUGMENTATIONS, BACKENDS, DataOptions, DatasetMeta, SplitData, build_loader, load_splits
from loaders import cifar10 as cifar_mod
from loaders.sampler import epoch_indices
from loaders.splits import stratified_fold, stratified_holdout

CPU_BACKENDS = ["tensor", "torchvision"]  # ffcv has its own test file (it must fail, not skip, when absent)


@pytest.fixture(scope="module")
def synth() -> object:
    """400 training images of 10 classes, 32x32, split 360/40."""
    return load_splits(DataOptions("synthetic", synthetic_size=400))


def indexed_split(n: int, c: int = 3, size: int = 8) -> SplitData:
    """A split whose labels are the sample indices, so a loader's output reveals what it visited."""
    images = torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    return SplitData(images, torch.arange(n))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> object:
    """In-process per-sample transforms are thousands of tiny ops: with 2 OpenMP threads on a shared
    2-core machine each op can stall on a barrier, turning 0.4 s into 20 s. Workers use 1 thread too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _loader(split: SplitData, meta: object, backend: str, **kw: object) -> object:
    if backend == "torchvision":
        kw.setdefault("num_workers", 0)  # worker start-up would dominate these tiny tests
    return build_loader(split, meta, backend=backend, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- splits


def test_holdout_is_disjoint_stratified_and_seeded() -> None:
    labels = torch.arange(1000) % 7
    tr, va = stratified_holdout(labels, 0.1, seed=0)
    assert len(va) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(va.tolist()) and set(tr.tolist()) | set(va.tolist()) == set(range(1000))
    per_class = torch.bincount(labels[va], minlength=7)
    assert per_class.max() - per_class.min() <= 1  # 1000/7 per class -> 14 or 15 each
    assert torch.equal(va, stratified_holdout(labels, 0.1, seed=0)[1])
    assert not torch.equal(va, stratified_holdout(labels, 0.1, seed=1)[1])


def test_holdout_total_is_exact_with_unequal_classes() -> None:
    # MNIST's class counts: per-class rounding would give 5,999, not 6,000.
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    assert len(stratified_holdout(labels, 0.1, seed=0)[1]) == 6000


def test_folds_partition_the_training_split() -> None:
    labels = torch.arange(103) % 4
    vals = [stratified_fold(labels, 5, i, seed=2)[1] for i in range(5)]
    assert sorted(torch.cat(vals).tolist()) == list(range(103))
    for v in vals:
        counts = torch.bincount(labels[v], minlength=4)
        assert counts.max() - counts.min() <= 1


def test_load_splits_never_touches_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar_mod, "NPZ_SHA256", make_cifar_npz(tmp_path, n_train=200, n_test=50))
    full = load_splits(DataOptions("cifar10", data_dir=str(tmp_path), val_fraction=0.0))
    s = load_splits(DataOptions("cifar10", data_dir=str(tmp_path), val_fraction=0.2, seed=4))
    k = load_splits(DataOptions("cifar10", data_dir=str(tmp_path), folds=4, fold=1))
    for split in (s, k):
        assert torch.equal(split.test.images, full.test.images) and torch.equal(split.test.labels, full.test.labels)
        # Pixel (0, 0, 0) codes the training index: train and val are disjoint and cover the training split.
        tr, va = split.train.images[:, 0, 0, 0].tolist(), split.val.images[:, 0, 0, 0].tolist()
        assert set(tr).isdisjoint(va) and sorted(tr + va) == list(range(200))
        assert torch.bincount(split.val.labels, minlength=10).tolist() == [len(va) // 10] * 10
    assert len(s.val) == 40 and len(k.val) == 50 and "fold 1/4" in k.meta.note


def test_grayscale_resize_subset_and_stats(synth: object) -> None:
    g = load_splits(DataOptions("synthetic", synthetic_size=400, grayscale=True, img_size=40, subset=20))
    assert g.train.images.shape[1:] == (1, 40, 40) and g.meta.shape == (1, 40, 40)
    assert len(g.meta.mean) == len(g.meta.std) == 1
    assert len(g.train) + len(g.val) == 200 and "subset 20/class" in g.meta.note
    x = synth.train.images.double() / 255  # type: ignore[attr-defined]
    assert torch.allclose(torch.tensor(synth.meta.mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)))  # type: ignore[attr-defined]
    assert torch.allclose(torch.tensor(synth.meta.std, dtype=torch.float64),  # type: ignore[attr-defined]
                          x.std(dim=(0, 2, 3), unbiased=False))


@pytest.mark.parametrize("bad", [{"val_fraction": 1.0}, {"folds": 1}, {"folds": 3, "fold": 3}, {"subset": 0},
                                 {"fold": 1}, {"img_size": 0}])
def test_impossible_options_are_errors(bad: dict) -> None:
    with pytest.raises(HarnessError):
        load_splits(DataOptions("synthetic", synthetic_size=100, **bad))


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("augment", ["none", "base", "strong", "stronger"])
def test_every_backend_and_preset_yields_the_contract(synth: object, backend: str, augment: str) -> None:
    ld = _loader(synth.train, synth.meta, backend, train=True, batch_size=100, augment=augment)  # type: ignore[attr-defined]
    batches = list(ld)
    assert ld.backend == backend and len(batches) == len(ld) == 4 and ld.num_samples == 360
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (100, 3, 32, 32) and torch.isfinite(x).all()
    assert y.dtype == torch.int64 and y.shape == (100,)
    assert batches[-1][0].shape[0] == 60  # no drop_last by default in one process


def test_registry_walk_and_helpful_errors(synth: object) -> None:
    assert BACKENDS.names() == ["auto", "ffcv", "tensor", "torchvision"]
    assert set(AUGMENTATIONS.names()) == {"none", "base", "rotate", "resized", "color", "strong", "stronger",
                                          "airbench", "page"}
    with pytest.raises(HarnessError, match="did you mean tensor"):
        build_loader(synth.train, synth.meta, backend="tensr", train=True, batch_size=8)  # type: ignore[attr-defined]
    with pytest.raises(HarnessError, match="did you mean strong"):
        build_loader(synth.train, synth.meta, train=True, batch_size=8, augment="strnog")  # type: ignore[attr-defined]
    if not torch.cuda.is_available():  # asking for CUDA without it is an error, never a silent CPU
        with pytest.raises(HarnessError, match="CUDA is not available"):
            build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=8, device="cuda")  # type: ignore[attr-defined]


def test_tensor_and_torchvision_identical_under_none(synth: object) -> None:
    kw = {"train": True, "batch_size": 64, "augment": "none", "seed": 3}
    a = _loader(synth.train, synth.meta, "tensor", **kw)  # type: ignore[attr-defined]
    b = _loader(synth.train, synth.meta, "torchvision", **kw)  # type: ignore[attr-defined]
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        pairs = list(zip(a, b, strict=True))
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(ya, yb) and torch.equal(xa, xb)  # bit-identical, same order
    a.set_epoch(0)
    first = next(iter(a))[1]
    a.set_epoch(1)
    assert not torch.equal(first, next(iter(a))[1])  # a new permutation each epoch


def test_base_statistics_match_between_backends(synth: object) -> None:
    kw = {"train": True, "batch_size": 120, "augment": "base"}
    stats = []
    for backend in CPU_BACKENDS:
        x = torch.cat([b for b, _ in _loader(synth.train, synth.meta, backend, **kw)])  # type: ignore[attr-defined]
        stats.append((x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))))
    (ma, sa), (mb, sb) = stats
    assert torch.allclose(ma, mb, atol=0.03) and torch.allclose(sa, sb, atol=0.03)


@pytest.mark.parametrize("augment", ["base", "strong", "stronger"])
def test_numba_kernel_matches_torch_ops(synth: object, augment: str) -> None:
    a = build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=90, augment=augment)  # type: ignore[attr-defined]
    b = build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=90, augment=augment)  # type: ignore[attr-defined]
    b.use_kernel = False  # the path a CUDA device takes
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb)
        if augment == "base":
            assert torch.equal(xa, xb)
        else:  # float sums in another order; a nearest-neighbour tie may round the other way
            off = (xa - xb).abs() > 1e-4
            assert off.float().mean() < 1e-4


def test_base_crop_and_flip_semantics() -> None:
    # One white pixel: after pad-4 crop + flip it must move by at most 4 px, mirrored or not.
    img = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    img[:, 0, 5, 9] = 255
    split = SplitData(img, torch.zeros(64, dtype=torch.int64))
    meta = DatasetMeta("t", ("a",), (0.0,), (1.0,), (1, 16, 16), "t")
    x = torch.cat([b for b, _ in build_loader(split, meta, backend="tensor", train=True, batch_size=64,
                                              augment="base")])
    assert x.shape == (64, 1, 16, 16)
    seen = set()
    for im in x:
        nz = torch.nonzero(im[0] == 1.0)
        if len(nz):
            (yy, xx), = nz.tolist()
            assert abs(yy - 5) <= 4 and (abs(xx - 9) <= 4 or abs(xx - 6) <= 4)
            seen.add((yy, xx))
    assert len(seen) > 5  # the crops vary


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n,world", [(10, 3), (11, 2), (7, 4), (12, 1)])
def test_ddp_sharding_every_index_exactly_once(backend: str, n: int, world: int) -> None:
    split = indexed_split(n)
    meta = DatasetMeta("t", ("a",), (0.5,) * 3, (0.25,) * 3, (3, 8, 8), "t")
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in range(world):
            ld = _loader(split, meta, backend, train=False, batch_size=2, rank=rank, world_size=world)
            ld.set_epoch(epoch)
            got = torch.cat([y for _, y in ld]).tolist() if len(ld) else []
            assert len(got) == ld.num_samples
            seen += got
        assert sorted(seen) == list(range(n))  # evaluation: every index once, no padding
        # Training under DDP: equal steps on every rank, disjoint shards, a fresh permutation per epoch.
        shards = []
        for rank in range(world):
            ld = _loader(split, meta, backend, train=True, batch_size=2, rank=rank, world_size=world, seed=5)
            ld.set_epoch(epoch)
            shards.append(torch.cat([y for _, y in ld]).tolist() if len(ld) else [])
            if world > 1:
                assert len(ld) == (n // world) // 2  # drop_last by default under DDP
        flat = [i for s in shards for i in s]
        assert len(flat) == len(set(flat))
        if world > 1:
            assert len({len(s) for s in shards}) == 1


def test_epoch_indices_shards_a_shared_permutation() -> None:
    full = epoch_indices(23, epoch=4, seed=9, shuffle=True)
    parts = [epoch_indices(23, epoch=4, seed=9, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert sorted(full.tolist()) == list(range(23))
    assert sorted(sum((p.tolist() for p in parts), [])) == list(range(23))
    assert parts[1].tolist() == full[1::3].tolist()


def test_channels_last_and_eval_never_augments(synth: object) -> None:
    ld = build_loader(synth.val, synth.meta, backend="tensor", train=False, batch_size=16, augment="stronger",  # type: ignore[attr-defined]
                      channels_last=True)
    x, y = next(iter(ld))
    assert x.is_contiguous(memory_format=torch.channels_last)
    ref = ((synth.val.images[:16].float() / 255 - torch.tensor(synth.meta.mean).view(1, 3, 1, 1))  # type: ignore[attr-defined]
           / torch.tensor(synth.meta.std).view(1, 3, 1, 1))  # type: ignore[attr-defined]
    assert torch.allclose(x, ref, atol=1e-5) and torch.equal(y, synth.val.labels[:16])  # type: ignore[attr-defined]


def test_auto_picks_tensor_on_cpu_and_says_why_once(synth: object, capsys: pytest.CaptureFixture) -> None:
    import loaders.build as build_mod

    build_mod._announced.clear()
    a = build_loader(synth.train, synth.meta, train=True, batch_size=32)  # type: ignore[attr-defined]
    build_loader(synth.val, synth.meta, train=False, batch_size=32)  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert a.backend == "tensor" and err.count("loader: tensor (") == 1


def test_bench_appends_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.bench.loaders import main

    out = tmp_path / "throughput.csv"
    args = argparse.Namespace(data_dir=str(tmp_path / "absent"), backends="tensor,torchvision", presets="base",
                              batch_size=128, epochs=1, workers=0, limit=512, out=str(out))
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["backend"] for r in rows] == ["tensor", "torchvision"]
    assert all(r["kind"] == "loader" and r["dataset"] == "synthetic-cifar10" and "synthetic" in r["note"]
               and float(r["img_per_s"]) > 0 and r["torch"] and r["git_sha"] for r in rows)
    assert float(rows[0]["ratio"]) > 1
    assert "tensor" in capsys.readouterr().out


def test_warp_parameters_mean_what_the_presets_say() -> None:
    import math

    import numpy as np

    from loaders.augment import STRONG, STRONGER, sample_params

    gen = np.random.default_rng(0)
    th = sample_params(STRONG, 500, 32, 32, gen).theta
    lin = th[:, :, :2].astype(np.float64)
    assert np.allclose(lin @ lin.transpose(0, 2, 1), np.eye(2), atol=1e-6)  # a pure rotation
    angles = np.degrees(np.arctan2(lin[:, 0, 1], lin[:, 0, 0]))
    assert np.abs(angles).max() <= 10 + 1e-4 and np.abs(angles).max() > 8 and np.allclose(th[:, :, 2], 0)
    th = sample_params(STRONGER, 500, 32, 32, gen).theta
    det = np.linalg.det(th[:, :, :2].astype(np.float64))  # 1 / scale^2, scale in [0.9, 1.1]
    assert (det >= 1 / 1.1**2 - 1e-5).all() and (det <= 1 / 0.9**2 + 1e-5).all()
    assert np.abs(th[:, :, 2]).max() <= 2 * 0.1 * 1.2 + 1e-5 and np.abs(th[:, :, 2]).max() > 0.1
    assert math.isfinite(float(th.sum()))
