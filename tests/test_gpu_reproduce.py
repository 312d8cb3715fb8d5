"""``scripts/gpu-reproduce.sh`` on the CPU (DRY_RUN=1): the GPU queue's configs are written cheapest first
and every one trains (2 steps) through ``harness run`` without Ray, as it will on a lent GPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_reproduce_dry_run_trains_every_queued_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_", "HARNESS_"))}
    env["HARNESS_PROBE"] = "off"  # auto is fp32 NCHW without a probe, as in the whole suite
    env.update(OUT=str(tmp_path / "out"), DRY_RUN="1", PYTHON=sys.executable, HARNESS_CACHE_DIR=str(tmp_path / "c"))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-reproduce.sh")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "out" / "summary.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    queued = {q["rows"] for q in csv.DictReader(open(tmp_path / "out" / "queue" / "queue.tsv"), delimiter="\t")}
    assert {"T1", "T2", "S5.3", "S5.6", "O3"} <= queued, "the issue's GPU rows are all queued"
    gpu_s = [float(x["stated_gpu_s"]) for x in rows]
    assert gpu_s == sorted(gpu_s), "cheapest first"
    assert [x["status"] for x in rows] == ["ok"] * len(rows), rows
    for x in rows:
        summary = next((tmp_path / "out" / "runs" / x["config"].removesuffix(".yaml")).glob("*/summary.json"))
        assert json.loads(summary.read_text())["stop_reason"] == "max_steps"
    assert "dry run" in r.stdout
