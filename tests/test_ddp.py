"""Ray Train DDP on CPU (gloo): the same loop with 2 workers, and recovery from a killed worker."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

RUN = [sys.executable, "-m", "harness", "run", "--arch", "tiny_cnn", "--dataset", "synthetic", "--loader", "tensor",
       "--augment", "none", "--batch-size", "32", "--set", "train.measure_inference=false", "--scheduler", "constant",
       "--lr", "0.01"]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    # AF_UNIX socket paths are capped at 107 bytes, so Ray's temp dir must be short.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="r", dir="/tmp")
    env.pop("RAY_ADDRESS", None)
    return env


# Ray prefixes each line a worker prints with its process, e.g. "(RayTrainWorker pid=4242) [rank 1/2] training ...".
_RANK1_LINE = re.compile(r"pid=(\d+)[^)]*\)\s*\[rank 1/2\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _rank1_pids(lines: list[str]) -> list[int]:
    """The pids of the Ray worker processes that printed as rank 1, in order (a restarted worker is a new one)."""
    return [int(m.group(1)) for line in list(lines) if (m := _RANK1_LINE.search(_ANSI.sub("", line)))]


def test_two_cpu_workers(tmp_path):
    out = tmp_path / "runs"
    # lr 1e-6: accuracies stay near chance, so a count over 52 images cannot pass for one over 51 (at 100 % both
    # are 1.0).
    proc = subprocess.run([*RUN, "--workers", "2", "--cpus-per-worker", "1", "--epochs", "2", "--lr", "1e-6",
                           "--set", "data.synthetic_size=512", "--out", str(out)],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "[rank 0/2]" in log and "[rank 1/2]" in log
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stop_reason"] == "completed"
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # Validation and test are sharded across ranks and summed: every image counted once. 512 synthetic images
    # make 51 validation images, an odd count that 2 ranks cannot split evenly (a padded or doubled shard
    # shows), and 102 test images.
    from harness.run.config import load_config
    from harness.run.data import data_options
    from loaders import load_splits

    splits = load_splits(data_options(load_config(run_dir / "config.yaml")))
    assert (len(splits.val), len(splits.test)) == (51, 102)
    with open(run_dir / "confusion.csv") as fh:
        confusion = [[int(v) for v in row[1:]] for row in list(csv.reader(fh))[1:]]
    assert sum(map(sum, confusion)) == len(splits.test), "every test image counted once across the ranks"
    assert sum(confusion[i][i] for i in range(len(confusion))) / len(splits.test) == pytest.approx(summary["test_acc"])
    assert all(0 < float(r["val_acc"]) < 1 for r in rows), rows
    for r in rows:  # an accuracy over 51 images is k/51; over 52 (one image twice) it cannot be
        k = float(r["val_acc"]) * len(splits.val)
        assert abs(k - round(k)) < 0.01, f"epoch {r['epoch']}: val_acc {r['val_acc']} is not a count over 51 images"
    assert (run_dir / "best.pt").is_file()


def test_killed_worker_resumes_from_checkpoint(tmp_path):
    out = tmp_path / "runs"
    epochs = 6
    env = _env(tmp_path)
    env["RAY_DEDUP_LOGS"] = "0"  # Ray would fold rank 1's start line into rank 0's ("repeated 2x"), pid and all
    proc = subprocess.Popen([*RUN, "--workers", "2", "--cpus-per-worker", "1", "--epochs", str(epochs),
                             "--max-failures", "2", "--checkpoint-every", "1",  # the default 5 restarts late
                             "--set", "data.synthetic_size=3000", "--arch", "vanilla_cnn",
                             "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    killed = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            # Kill once the controller has surely *registered* a checkpoint: a checkpoint folder on disk
            # is not enough (Ray restores only registered ones), but when epoch 2's row is written,
            # epoch 1's report (a barrier across ranks) finished a whole epoch earlier.
            runs = list(out.glob("*/metrics.csv"))
            pids = _rank1_pids(lines)
            if runs and pids:
                with open(runs[0]) as fh:
                    rows = list(csv.DictReader(fh))
                if len(rows) >= 2:
                    killed = pids[-1]
                    # rank 1 is a Ray worker process of this run: raylet, a child of `harness run`, forked it
                    assert killed in {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}, lines[-20:]
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.2)
        assert killed, "no checkpoint appeared before the run ended"
        proc.wait(timeout=300)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines)
    assert proc.returncode == 0, log[-3000:]
    run_dir = Path(log.strip().splitlines()[-1])
    with open(run_dir / "metrics.csv") as fh:
        epochs_logged = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs_logged == list(range(1, epochs + 1))
    assert "resumed from the checkpoint of epoch" in log, log[-4000:]
    new_pid = _rank1_pids(lines)[-1]
    assert new_pid != killed, "the restarted rank 1 is a new worker process"
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == epochs
