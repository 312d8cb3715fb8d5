"""``scripts/gpu-reproduce.sh`` on the CPU (DRY_RUN=1): the GPU queue's configs are written cheapest first,
the script trains the first ones (2 steps) through ``harness run`` without Ray, as it will on a lent GPU, and
every queued config trains the same 2 steps in this process (one ``harness run`` process per row cost ~20 s
of start-up each, most of this test's time)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env

from harness.run.config import apply_overrides, load_config
from harness.run.trainer import fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_reproduce_dry_run_trains_every_queued_row(tmp_path):
    env = child_env(OUT=str(tmp_path / "out"), DRY_RUN="1", PYTHON=sys.executable, HARNESS_CACHE_DIR=str(tmp_path / "c"),
                    GPU_REPRODUCE_MAX_ROWS="2")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-reproduce.sh")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "out" / "summary.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    queue = tmp_path / "out" / "queue"
    queued = {q["rows"] for q in csv.DictReader(open(queue / "queue.tsv"), delimiter="\t")}
    assert {"T1", "T2", "S5.3", "S5.6", "O3"} <= queued, "the issue's GPU rows are all queued"
    gpu_s = [float(x["stated_gpu_s"]) for x in rows]
    assert gpu_s == sorted(gpu_s), "cheapest first"
    assert [x["status"] for x in rows] == ["ok"] * 2 + ["SKIP (GPU_REPRODUCE_MAX_ROWS=2)"] * (len(rows) - 2), rows
    for x in rows[:2]:
        summary = next((tmp_path / "out" / "runs" / x["config"].removesuffix(".yaml")).glob("*/summary.json"))
        assert json.loads(summary.read_text())["stop_reason"] == "max_steps"
    assert "dry run" in r.stdout
    for x in rows[2:]:  # the script's dry-run overrides, on every other queued config
        cfg = apply_overrides(load_config(queue / x["config"]), _dry_overrides(ROOT / "scripts" / "gpu-reproduce.sh"))
        summary = fit(cfg, tmp_path / "inproc" / x["config"].removesuffix(".yaml"))
        assert summary.stop_reason == "max_steps", (x["config"], summary.error)


def _dry_overrides(script: Path) -> list[str]:
    """The ``--set`` overrides of the script's DRY_RUN branch (what it adds to every queued config)."""
    text = script.read_text()
    block = text[text.index('if [ "$DRY" = 1 ]; then'):text.index("DATA_NOTE=")]
    return re.findall(r"--set ([^\s)]+)", block)
