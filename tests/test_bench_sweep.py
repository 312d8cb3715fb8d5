"""``harness bench sweep`` with tiny N: locally (W&B offline) and on a 2-node loopback cluster.

Each run is a real sweep of null trials on a real Ray (a private local one, or raylets started with
``ray start``, their own temp dirs, token auth on, stopped by their marker); the rows are read back from
the CSV the bench wrote. Its bad options are walked by ``tests/test_bad_input.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.results_csv import read_rows

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "throughput.csv"
    proc = subprocess.run([sys.executable, "-m", "harness", "bench", "sweep", "--out", str(out), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    return proc, (read_rows(out) if out.is_file() else [])


@pytest.mark.parametrize("nodes,wandb", [(1, "offline"), (2, "off")])
def test_bench_sweep_writes_a_row_per_n(tmp_path, nodes, wandb):
    proc, rows = _bench(tmp_path, "--trials", "2,3", "--nodes", str(nodes), "--wandb", wandb)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [int(r["trials"]) for r in rows] == [2, 3] and all(r["kind"] == "sweep" for r in rows), rows
    for r in rows:
        assert f"{r['trials']}/{r['trials']} ended, {r['trials']} leaderboard rows" in r["note"], r["note"]
        assert int(r["workers"]) == nodes and float(r["trials_per_min"]) > 0
        assert 0 < float(r["driver_cpu_s_per_trial"]) < 60 and float(r["driver_peak_rss_mb"]) > 50
        assert float(r["disk_kb_per_trial"]) > 1 and float(r["merge_s"]) > 0
        # W&B offline writes a run per trial into the sweep folder; off writes none.
        assert (float(r["wandb_kb_per_trial"]) > 0) == (wandb == "offline"), r
        assert r["hardware"] and r["git_sha"]

