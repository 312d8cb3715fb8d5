"""A GPU sweep from a CPU-only driver, on a Ray node that declares a GPU it lacks (the layout of
cluster/README.md: a CPU head, GPU workers). Validation must pass (fp16 included), trials must be placed
with a GPU each, and on this CPU the trial ends with one line, "CUDA not available", the expected end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.results_csv import read_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cluster_job import _harness, running_head  # noqa: E402

MATRIX = """description: one tiny trial that asks for a GPU
search: grid
base:
  data.dataset: synthetic
  data.synthetic_size: 128
  data.augment: none
  train.epochs: 1
  train.batch_size: 32
  train.measure_inference: false
  train.precision: fp16
axes:
  arch: [tiny_cnn]
"""


@pytest.fixture(scope="module")
def gpu_head():
    with running_head("hg", num_gpus=1) as h:  # a node that declares a GPU it does not have
        yield h


@pytest.mark.slow
def test_gpu_sweep_from_a_cpu_driver_is_placed_on_the_gpu_node(gpu_head, tmp_path):
    m = tmp_path / "gpu.yaml"
    m.write_text(MATRIX)
    env = gpu_head.client_env(RAY_ADDRESS=f"127.0.0.1:{gpu_head.gcs}", WANDB_MODE="disabled")
    r = _harness(["sweep", "--matrix", str(m), "--name", "g", "--gpus-per-worker", "1", "--wandb", "off",
                  "--storage", str(tmp_path / "sweeps"), "--results-dir", str(tmp_path / "results"),
                  "--docs-dir", ""], env, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "1 worker(s) x" in r.stdout and "x 1 GPU per trial" in r.stdout, r.stdout[-2000:]
    (trial,) = [p.parent for p in (tmp_path / "sweeps" / "g").glob("*/trial.json")]
    meta = json.loads((trial / "trial.json").read_text())
    assert meta["config"]["dist"]["use_gpu"] is True and meta["config"]["train"]["precision"] == "fp16"
    assert meta["provenance"]["device"] == "cuda"
    (row,) = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert row["stop_reason"] == "error" and "CUDA not available" in row["error"], row
    assert "\n" not in row["error"]
