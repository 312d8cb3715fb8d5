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
from loaders import DataOptions, build_loader, choose_backend, load_splits
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
