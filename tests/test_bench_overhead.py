"""``bench overhead`` compares like with like: its bare loop runs on the harness runs' device, precision,
memory layout and torch backend flags, and its rows say which."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from harness.bench.overhead import bare_loop, run_overrides, speed_settings
from harness.cli import main
from harness.results_csv import read_rows
from harness.run.config import RunConfig, apply_overrides
from harness.run.trainer import fit


def test_bare_loop_uses_what_the_harness_run_resolves_to(tmp_path):
    over = run_overrides("tiny_cnn", 128, 64, 2, 0)
    s = fit(apply_overrides(RunConfig(), {**over, "out": str(tmp_path / "runs")}))
    saved = yaml.safe_load((Path(s.run_dir) / "config.yaml").read_text())
    device, precision, channels_last = speed_settings("tiny_cnn", 128, 64, 2)
    assert saved["train"]["precision"] == precision == s.precision
    assert saved["train"]["channels_last"] == channels_last
    assert ("cuda" if saved["dist"]["use_gpu"] else "cpu") == device.type == s.device


def _backend_flags() -> tuple[bool, bool, bool]:
    return torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_backend_flags(flags: tuple[bool, bool, bool]) -> None:
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_bare_loop_sets_the_backend_flags_the_harness_loop_sets(tmp_path):
    before = _backend_flags()
    try:
        over = run_overrides("tiny_cnn", 128, 64, 2, 0)
        fit(apply_overrides(RunConfig(), {**over, "out": str(tmp_path / "runs")}))
        harness = _backend_flags()
        # Every flag the other way round first, so the bare loop has to set each one itself.
        _set_backend_flags(tuple(not f for f in harness))
        bare_loop("tiny_cnn", 128, 64, 2)
        assert _backend_flags() == harness
    finally:
        _set_backend_flags(before)


def test_rows_record_the_device_and_precision_of_both_loops(tmp_path):
    out = tmp_path / "tp.csv"
    assert main(["bench", "overhead", "--arch", "tiny_cnn", "--modes", "bare,inprocess", "--epochs", "2",
                 "--n-train", "128", "--batch-size", "64", "--out", str(out)]) == 0
    rows = read_rows(out)
    device, precision, _ = speed_settings("tiny_cnn", 128, 64, 2)
    assert [r["backend"] for r in rows] == ["bare", "inprocess"]
    assert {(r["device"], r["precision"]) for r in rows} == {(device.type, precision)}
