"""The GPU data path, tested on a CPU by construction (no machine of this project's CI has a GPU).

* tensor backend: one epoch's random parameters are drawn in one call per array and moved to the
  device once per array (counted through our own helpers), and the batches are bit-identical to
  the per-batch reference path (each batch's slice of the same numpy draws, copied per batch);
* ``auto``: the table of the pure decision function;
* torchvision backend: uint8 leaves the DataLoader, conversion happens after the device copy, and
  the default worker count follows the CPUs the process may use.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from loaders import DataOptions, build_loader, load_splits
from loaders import augment as aug_mod
from loaders import tensor_loader as tl_mod
from loaders import torchvision_loader as tv_mod
from loaders.augment import BatchParams, augment_batch, sample_params, upload
from loaders.build import DEVICE_MEMORY_FRACTION, auto_backend

PRESETS = ["none", "base", "strong", "stronger"]


@pytest.fixture(scope="module")
def synth() -> object:
    """240 training images, 32x32 (216 train / 24 val)."""
    return load_splits(DataOptions("synthetic", synthetic_size=240))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> object:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared 2-core machine: no OpenMP barrier stalls
    yield
    torch.set_num_threads(n)


class Counter:
    """Wraps one of our functions and records each call's first array argument's length."""

    def __init__(self, fn: object) -> None:
        self.fn, self.calls = fn, []

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls.append(args)
        return self.fn(*args, **kwargs)  # type: ignore[operator]


def _count(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counter]:
    c = {name: Counter(getattr(aug_mod, name)) for name in ("sample_params", "upload", "_sample_theta",
                                                            "_sample_erase")}
    for name, counter in c.items():
        monkeypatch.setattr(aug_mod, name, counter)
    # tensor_loader imported the two public helpers by name: count those bindings too.
    monkeypatch.setattr(tl_mod, "sample_params", c["sample_params"])
    monkeypatch.setattr(tl_mod, "upload", c["upload"])
    return c


# Arrays the torch-op path uploads per epoch: the index, plus (crop, flip) offsets and flips when
# the preset crops or flips, plus theta / jitter / erase when the preset has them.
UPLOADS = {"none": 1, "base": 1 + 3, "strong": 1 + 3 + 2, "stronger": 1 + 3 + 3}


@pytest.mark.parametrize("augment", PRESETS)
def test_epoch_parameters_drawn_once_and_uploaded_once_per_array(synth: object, augment: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ld = build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=50, augment=augment)  # type: ignore[attr-defined]
    ld.use_kernel = False  # the path a CUDA device takes (on a CPU its "uploads" are zero-copy)
    c = _count(monkeypatch)
    for epoch in (0, 1):
        ld.set_epoch(epoch)
        for counter in c.values():
            counter.calls.clear()
        batches = list(ld)
        assert len(batches) == len(ld) == 5  # 216 images: 4 of 50 and one of 16
        assert len(c["sample_params"].calls) == 1 and c["sample_params"].calls[0][1] == ld.num_samples == 216
        assert len(c["_sample_theta"].calls) == (augment in ("strong", "stronger"))
        assert len(c["_sample_erase"].calls) == (augment == "stronger")
        assert len(c["upload"].calls) == UPLOADS[augment]
        assert all(len(args[0]) in (216, 3, 4) for args in c["upload"].calls)  # whole-epoch arrays
    # The CPU kernel path draws the same way and uploads nothing.
    ld.use_kernel = True
    c["sample_params"].calls.clear()
    c["upload"].calls.clear()
    list(ld)
    assert len(c["sample_params"].calls) == 1 and not c["upload"].calls


def _reference(ld: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-batch path: each batch's slice of the epoch's numpy draws (same RNG stream), copied to
    the device per batch by ``augment_batch`` itself (numpy parameters), as before the change."""
    idx = ld.indices()[: len(ld) * ld.batch_size]  # type: ignore[attr-defined]
    _, _, h, w = ld.images.shape  # type: ignore[attr-defined]
    p = sample_params(ld.spec, len(idx), h, w, ld.aug_generator())  # type: ignore[attr-defined]
    out = []
    bs = ld.batch_size  # type: ignore[attr-defined]
    for k in range(len(ld)):  # type: ignore[arg-type]
        sl = slice(k * bs, (k + 1) * bs)
        bi = torch.from_numpy(idx[sl])
        q = p.slice(sl)
        q = BatchParams(*(None if a is None else np.array(a) for a in
                          (q.dy, q.dx, q.flip, q.theta, q.jitter, q.erase)))  # fresh per-batch numpy arrays
        out.append((augment_batch(ld.images[bi], ld.spec, q, ld.mean, ld.std), ld.labels[bi]))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("augment", PRESETS)
@pytest.mark.parametrize("drop_last", [False, True])
def test_epoch_slices_are_bit_identical_to_per_batch_reference(synth: object, augment: str, drop_last: bool) -> None:
    ld = build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=50, augment=augment,  # type: ignore[attr-defined]
                      seed=11, drop_last=drop_last)
    ld.use_kernel = False
    for epoch in (0, 2):
        ld.set_epoch(epoch)
        got, ref = list(ld), _reference(ld)
        assert len(got) == len(ref) == (4 if drop_last else 5)
        for (x, y), (xr, yr) in zip(got, ref, strict=True):
            assert torch.equal(y, yr) and torch.equal(x, xr)


def test_kernel_and_torch_ops_agree_on_a_partial_last_batch(synth: object) -> None:
    # `base` is bit-identical between the numba kernel (CPU) and the torch ops (GPU path), slices included.
    a = build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=64, augment="base", seed=5)  # type: ignore[attr-defined]
    b = build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=64, augment="base", seed=5)  # type: ignore[attr-defined]
    b.use_kernel = False
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        pairs = list(zip(a, b, strict=True))
        assert pairs[-1][0][0].shape[0] == 216 - 3 * 64
        for (xa, ya), (xb, yb) in pairs:
            assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_cpu_upload_is_zero_copy() -> None:
    a = np.arange(6, dtype=np.int64)
    t = upload(a, torch.device("cpu"))
    a[0] = 42
    assert t[0].item() == 42 and t.dtype == torch.int64  # shares numpy's memory: no copy at all


# ----------------------------------------------------------------------------- auto


GiB = 2**30


@pytest.mark.parametrize("device,split,free,ffcv,betons,want", [
    ("cpu", 1 * GiB, None, True, True, "tensor"),            # CPU: always tensor, betons or not
    ("cpu", 500 * GiB, None, True, True, "tensor"),
    ("cuda", 1 * GiB, 100 * GiB, True, True, "tensor"),      # fits: tensor even with ffcv and betons
    ("cuda", 1 * GiB, 100 * GiB, False, False, "tensor"),
    ("cuda", 50 * GiB, 100 * GiB, True, True, "tensor"),     # exactly the safety fraction: still fits
    ("cuda", 51 * GiB, 100 * GiB, True, True, "ffcv"),       # too big: stream from betons
    ("cuda", 51 * GiB, 100 * GiB, True, False, "torchvision"),   # too big, no beton
    ("cuda", 51 * GiB, 100 * GiB, False, True, "torchvision"),   # too big, ffcv broken
])
def test_auto_backend_table(device: str, split: int, free: int | None, ffcv: bool, betons: bool,
                            want: str) -> None:
    assert DEVICE_MEMORY_FRACTION == 0.5
    name, reason = auto_backend(device, split, free, ffcv, betons)
    assert name == want and reason
    if device == "cpu":
        assert "CUDA" in reason
    elif want == "tensor":
        assert "fits" in reason
    else:
        assert "exceeds" in reason


# ----------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("augment", ["none", "base", "stronger"])
def test_torchvision_collates_uint8_and_converts_on_the_device(synth: object, augment: str) -> None:
    ld = build_loader(synth.train, synth.meta, backend="torchvision", train=True, batch_size=64, augment=augment,  # type: ignore[attr-defined]
                      num_workers=0, channels_last=True)
    xu, yu = next(iter(ld.loader))  # what leaves the DataLoader (and crosses to the device)
    assert xu.dtype == torch.uint8 and xu.shape == (64, 3, 32, 32) and yu.dtype == torch.int64
    x, y = next(iter(ld))
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(x).all() and y.dtype == torch.int64
    if augment == "none":  # conversion + normalisation are the tensor backend's ops
        ref = (synth.train.images[ld.indices()[:64]].float() / 255 - ld.mean) / ld.std  # type: ignore[attr-defined]
        assert torch.allclose(x, ref, atol=1e-6)


def test_torchvision_cutout_is_drawn_once_per_epoch(synth: object, monkeypatch: pytest.MonkeyPatch) -> None:
    c = Counter(aug_mod.sample_params)
    monkeypatch.setattr(tv_mod, "sample_params", c)
    ld = build_loader(synth.train, synth.meta, backend="torchvision", train=True, batch_size=100,  # type: ignore[attr-defined]
                      augment="stronger", num_workers=0)
    xs = [x for x, _ in ld]
    assert len(c.calls) == 1 and c.calls[0][1] == 216
    erased = sum(int((x == 0).all(dim=1).flatten(1).any(1).sum()) for x in xs)  # the mean colour, normalised
    assert 50 < erased < 170  # erase_p 0.5 of 216


@pytest.mark.parametrize("cpus,want", [(1, 0), (2, 1), (3, 2), (16, 15)])
def test_default_workers_leave_one_cpu(cpus: int, want: int) -> None:
    assert tv_mod.default_workers(cpus) == want


def test_default_workers_follow_the_affinity_mask(synth: object, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tv_mod.usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5, 7})
    assert tv_mod.usable_cpus() == 4
    ld = build_loader(synth.train, synth.meta, backend="torchvision", train=True, batch_size=8)  # type: ignore[attr-defined]
    assert ld.num_workers == 3  # no workers start before iteration
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert tv_mod.usable_cpus() == 1 and tv_mod.default_workers(tv_mod.usable_cpus()) == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs for a 1-CPU share to be the smaller")
def test_a_ray_tasks_cpu_share_caps_its_loader_workers(ray_cluster: object) -> None:
    """Inside a real Ray task scheduled with 1 CPU, the share caps the count (Ray does not pin affinity);
    the driver, which has no share, keeps its affinity mask."""
    import ray

    inside = ray.get(ray.remote(num_cpus=1)(tv_mod.usable_cpus).remote())
    assert inside == 1 < len(os.sched_getaffinity(0))
    assert tv_mod.usable_cpus() == len(os.sched_getaffinity(0))



# ----------------------------------------------------------------------------- airbench layout


@pytest.mark.parametrize("augment", ["none", "base"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_airbench_layout_matches_the_uint8_layout(synth: object, augment: str, channels_last: bool) -> None:
    kw = {"train": True, "batch_size": 64, "augment": augment, "seed": 4, "channels_last": channels_last}
    ref = build_loader(synth.train, synth.meta, backend="tensor", **kw)  # type: ignore[attr-defined]
    f32 = tl_mod.TensorLoader(synth.train, synth.meta, layout="airbench", layout_dtype=torch.float32, **kw)  # type: ignore[attr-defined]
    half = build_loader(synth.train, synth.meta, backend="tensor", layout="airbench", **kw)  # type: ignore[attr-defined]
    assert f32.images is None and f32.padded.shape[2:] == ((40, 40) if augment == "base" else (32, 32))
    assert f32.padded.is_contiguous(memory_format=torch.channels_last)
    for epoch in (0, 1):
        for ld in (ref, f32, half):
            ld.set_epoch(epoch)
        for (xr, yr), (xa, ya), (xh, yh) in zip(ref, f32, half, strict=True):
            assert torch.equal(yr, ya) and torch.equal(yr, yh)
            assert xa.dtype == torch.float32 and torch.equal(xa, xr)  # fp32 storage: bit-identical
            assert xh.dtype == tl_mod.airbench_dtype(torch.device("cpu"))
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            assert xa.is_contiguous(memory_format=fmt)


def test_airbench_layout_in_half_precision_rounds_once(synth: object) -> None:
    kw = {"train": True, "batch_size": 100, "augment": "base", "seed": 1}
    ref = build_loader(synth.train, synth.meta, backend="tensor", **kw)  # type: ignore[attr-defined]
    for dtype in (torch.bfloat16, torch.float16):
        ld = tl_mod.TensorLoader(synth.train, synth.meta, layout="airbench", layout_dtype=dtype, **kw)  # type: ignore[attr-defined]
        for (xr, _), (xh, _) in zip(ref, ld, strict=True):
            assert xh.dtype == dtype and torch.equal(xh, xr.to(dtype))


def test_airbench_layout_refuses_float_stages_and_other_backends(synth: object) -> None:
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="rotation"):
        build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=8, augment="strong",  # type: ignore[attr-defined]
                     layout="airbench")
    with pytest.raises(HarnessError, match="tensor backend"):
        build_loader(synth.train, synth.meta, backend="torchvision", train=True, batch_size=8, layout="airbench")  # type: ignore[attr-defined]
    with pytest.raises(HarnessError, match="layout"):
        build_loader(synth.train, synth.meta, backend="tensor", train=True, batch_size=8, layout="nhwc")  # type: ignore[attr-defined]
    # Evaluation never augments, so any preset's evaluation loader takes the layout.
    ev = build_loader(synth.val, synth.meta, backend="tensor", train=False, batch_size=8, augment="strong",  # type: ignore[attr-defined]
                      layout="airbench")
    assert ev.padded.shape[2:] == (32, 32)
