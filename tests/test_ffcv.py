"""The ffcv backend on a CPU: betons written by ``harness data prepare --ffcv``, read by ``ffcv.loader.Loader``.

These tests FAIL, never skip, when ffcv cannot be imported: CI installs it
(``bash scripts/install_ffcv.sh .venv``), and a silently skipped backend is an untested one.
They are few and tiny because each FFCV pipeline pays numba compilation on its first epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_fixtures import make_cifar_npz

from harness.cli import main as cli_main
from loaders import DataOptions, DatasetMeta, SplitData, build_loader, choose_backend, load_splits
from loaders import cifar10 as cifar_mod
from loaders.ffcv_loader import beton_path, ffcv_import_error


def test_ffcv_imports() -> None:
    why = ffcv_import_error()
    assert why is None, f"ffcv does not import ({why}); install it with: bash scripts/install_ffcv.sh .venv"


def test_prepare_betons_then_load_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    import ffcv  # noqa: F401 - an ImportError here fails the test, as intended

    data, betons = tmp_path / "data", tmp_path / "betons"
    monkeypatch.setattr(cifar_mod, "NPZ_SHA256", make_cifar_npz(data, n_train=200, n_test=40))
    argv = ["data", "prepare", "--dataset", "cifar10", "--data-dir", str(data), "--ffcv", "--beton-dir", str(betons)]
    assert cli_main(argv) == 0
    assert "test" in capsys.readouterr().out
    s = load_splits(DataOptions("cifar10", data_dir=str(data)))
    for split in (s.train, s.val, s.test):
        assert beton_path(split, s.meta, betons).is_file()

    # `none`, rank 1 of 2: the same images in the same order as the tensor backend (shared sampler).
    kw = {"train": True, "batch_size": 32, "augment": "none", "rank": 1, "world_size": 2, "seed": 7}
    f = build_loader(s.train, s.meta, backend="ffcv", beton_dir=betons, num_workers=1, **kw)
    t = build_loader(s.train, s.meta, backend="tensor", **kw)
    assert len(f) == len(t) == 2 and f.num_samples == 64  # 180 -> 90 per rank -> 2 full batches
    for epoch in (0, 1):
        f.set_epoch(epoch)
        t.set_epoch(epoch)
        kept = list(f)  # held across iterations: must not be overwritten by FFCV's buffer reuse
        for (xf, yf), (xt, yt) in zip(kept, t, strict=True):
            assert yf.dtype == torch.int64 and xf.dtype == torch.float32
            assert torch.equal(yf, yt) and torch.equal(xf, xt)

    # `base` through FFCV's RandomTranslate + RandomHorizontalFlip: same statistics as the tensor backend.
    g = build_loader(s.train, s.meta, backend="ffcv", beton_dir=betons, num_workers=1, train=True, batch_size=60,
                     augment="base", channels_last=True)
    xs = [x for x, _ in g]
    assert xs[0].shape == (60, 3, 32, 32) and xs[0].is_contiguous(memory_format=torch.channels_last)
    xg = torch.cat(xs)
    xt = torch.cat([x for x, _ in build_loader(s.train, s.meta, backend="tensor", train=True, batch_size=60,
                                               augment="base")])
    assert torch.allclose(xg.mean(dim=(0, 2, 3)), xt.mean(dim=(0, 2, 3)), atol=0.05)
    assert torch.allclose(xg.std(dim=(0, 2, 3)), xt.std(dim=(0, 2, 3)), atol=0.05)

    # auto: betons exist, but on a CPU the tensor backend is the faster choice, and says so.
    name, reason = choose_backend(s.train, s.meta, "cpu", betons)
    assert name == "tensor" and "CUDA" in reason


def test_training_drops_the_last_batch_keeps_the_order_and_normalises_in_the_pipeline(tmp_path: Path) -> None:
    """Training: drop_last on by default, the shared sampler's order through the custom TraversalOrder,
    and fp32 conversion + normalisation inside FFCV's pipeline (fresh tensors, not FFCV's buffers)."""
    from loaders.ffcv_loader import _pipeline_ops
    from loaders.sampler import epoch_indices

    n = 100
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    split = SplitData(images, torch.arange(n))  # labels = indices: the output shows what was visited
    meta = DatasetMeta("t", tuple("abc"), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), (3, 8, 8), "t")
    f = build_loader(split, meta, backend="ffcv", beton_dir=tmp_path, num_workers=1, train=True, batch_size=32,
                     augment="none", seed=3)
    assert f.drop_last and f.loader.drop_last and len(f) == len(f.loader) == 3 and f.num_samples == 96
    assert type(f.loader.traversal_order).__name__ == "ShardOrder"
    to_float, to_labels = _pipeline_ops()
    assert isinstance(f.loader.pipeline_specs["image"].transforms[-1], to_float)
    assert isinstance(f.loader.pipeline_specs["label"].transforms[-1], to_labels)
    t = build_loader(split, meta, backend="tensor", train=True, batch_size=32, augment="none", seed=3, drop_last=True)
    firsts = []
    for epoch in (0, 1):
        f.set_epoch(epoch)
        t.set_epoch(epoch)
        kept = list(f)
        firsts.append(kept[0][0])
        assert [x.shape[0] for x, _ in kept] == [32, 32, 32]
        order = epoch_indices(n, epoch=epoch, seed=3, shuffle=True)[:96]
        assert torch.cat([y for _, y in kept]).tolist() == order.tolist()
        for (xf, yf), (xt, yt) in zip(kept, t, strict=True):
            assert xf.dtype == torch.float32 and yf.dtype == torch.int64
            assert torch.equal(yf, yt) and torch.equal(xf, xt)  # torchvision's float32 arithmetic, bit for bit
    # What FFCV itself yields is already float32 and normalised: nothing is left for the default stream.
    f.loader.next_epoch = 0
    x_raw, y_raw = next(iter(f.loader))
    assert x_raw.dtype == torch.float32 and y_raw.dtype == torch.int64 and torch.equal(x_raw, firsts[0])
    # Evaluation keeps every image: no drop_last unless asked.
    e = build_loader(split, meta, backend="ffcv", beton_dir=tmp_path, num_workers=1, train=False, batch_size=32)
    assert not e.loader.drop_last and len(e) == 4 and e.num_samples == n


def test_custom_order_is_passed_in_the_form_ffcv_accepts() -> None:
    """ffcv 1.0.2 takes an instance (and calls it with the loader); later ffcv takes a class."""
    from ffcv.traversal_order.base import TraversalOrder

    from loaders.ffcv_loader import _new_ffcv_loader

    class InstanceOnly:  # ffcv 1.0.2's check
        def __init__(self, order: object, **kw: object) -> None:
            if not isinstance(order, TraversalOrder):
                raise ValueError(f"Order {order} is not a supported order type or a subclass of TraversalOrder")
            self.order = order(self)

    class ClassOnly:  # later ffcv's check
        def __init__(self, order: object, **kw: object) -> None:
            if not issubclass(order, TraversalOrder):  # TypeError for an instance
                raise ValueError("not a subclass of TraversalOrder")
            self.order = order(self)

    class Order(TraversalOrder):
        def __init__(self, loader: object = None) -> None:
            self.loader = loader

        def __call__(self, loader: object) -> Order:
            self.loader = loader
            return self

        def sample_order(self, epoch: int) -> list[int]:
            return []

    for cls in (InstanceOnly, ClassOnly):
        ld = _new_ffcv_loader(cls, Order)
        assert isinstance(ld.order, Order) and ld.order.loader is ld

    class Broken:
        def __init__(self, order: object, **kw: object) -> None:
            raise ValueError("batch_size must be positive")

    with pytest.raises(ValueError, match="batch_size"):  # other errors are not swallowed
        _new_ffcv_loader(Broken, Order)
