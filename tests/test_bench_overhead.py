"""``bench overhead`` compares like with like: its bare loop runs on the harness runs' device, precision
and memory layout, and its rows say which."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.bench.overhead import run_overrides, speed_settings
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


def test_rows_record_the_device_and_precision_of_both_loops(tmp_path):
    out = tmp_path / "tp.csv"
    assert main(["bench", "overhead", "--arch", "tiny_cnn", "--modes", "bare,inprocess", "--epochs", "2",
                 "--n-train", "128", "--batch-size", "64", "--out", str(out)]) == 0
    rows = read_rows(out)
    device, precision, _ = speed_settings("tiny_cnn", 128, 64, 2)
    assert [r["backend"] for r in rows] == ["bare", "inprocess"]
    assert {(r["device"], r["precision"]) for r in rows} == {(device.type, precision)}
