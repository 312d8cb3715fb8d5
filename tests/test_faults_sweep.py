"""Ctrl-C (SIGINT) and SIGTERM of a running `harness sweep`: finished trials are kept, and --resume finishes.

A real `python -m harness sweep` (4 tiny trials on synthetic data, a private local Ray with 2 CPUs) is
signalled once at least one trial has finished, as `kill -INT PID` / `kill -TERM PID` would. The sweep
must stop as Ctrl-C stops it: exit 130 (SIGINT) or 143 (SIGTERM), the finished trials merged into
results/leaderboard.csv, and the last line on stderr saying how to resume. `--resume` then finishes
the rest, with every configuration once and the finished trials not trained again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.results_csv import read_rows

MATRIX = """description: four tiny trials
asha: {grace_period: 1, reduction_factor: 2}
base:
  data.dataset: synthetic
  data.synthetic_size: 256
  train.batch_size: 64
  train.epochs: 2
  train.measure_inference: false
axes:
  arch: [tiny_cnn]
  lr: [0.05, 0.04, 0.03, 0.02]
"""


@pytest.fixture
def env(tmp_path):
    """The sweep process's environment: nothing of the caller's Ray, W&B or harness settings; a short Ray temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # unix socket paths must stay short
    e = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_", "HARNESS_"))}
    e.update(HARNESS_CACHE_DIR=str(tmp_path / "cache"), RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1")
    yield e
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _outcomes(exp: Path) -> dict[str, str]:
    out = {}
    for p in exp.glob("*/outcome.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())["outcome"]
        except (OSError, ValueError, KeyError):
            continue  # being written
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig,code", [pytest.param(signal.SIGINT, 130, id="SIGINT"),
                                      pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_sweep_interrupt_keeps_finished_trials(tmp_path, env, sig, code):
    (tmp_path / "m.yaml").write_text(MATRIX)
    storage, results, docs = tmp_path / "sweeps", tmp_path / "results", tmp_path / "docs"
    where = ["--storage", str(storage), "--results-dir", str(results), "--docs-dir", str(docs), "--num-cpus", "2"]
    exp = storage / "s"
    cmd = [sys.executable, "-m", "harness", "sweep", "--matrix", str(tmp_path / "m.yaml"), "--name", "s",
           "--wandb", "off", "--max-concurrent", "2", "--grace-period", "2", *where]
    out, err = open(tmp_path / "out.log", "w"), open(tmp_path / "err.log", "w")
    # A shell's background job (`cmd &`, as CI may run the suite) inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: give the child the default, as a terminal would.
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and "completed" not in _outcomes(exp).values():
            assert p.poll() is None, (tmp_path / "out.log").read_text()[-3000:] + (tmp_path / "err.log").read_text()
            time.sleep(0.2)
        assert "completed" in _outcomes(exp).values(), "no trial finished in time"
        os.kill(p.pid, sig)  # the driver only, as `kill -INT PID` / `kill -TERM PID` would
        rc = p.wait(90)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        out.close()
        err.close()
    log = (tmp_path / "out.log").read_text()[-3000:] + "\n--- stderr ---\n" + (tmp_path / "err.log").read_text()
    assert rc == code, log
    assert "Traceback" not in (tmp_path / "err.log").read_text(), log
    before = _outcomes(exp)
    finished = sorted(d for d, o in before.items() if o == "completed")
    assert finished and len(finished) < 4, f"the signal came too late to test resuming: {before}"
    rows = read_rows(results / "leaderboard.csv")
    assert len(rows) >= len(finished), "every finished trial is in the leaderboard"
    assert all(r["stop_reason"] == "completed" for r in rows), rows
    last = [line for line in (tmp_path / "err.log").read_text().splitlines() if line.strip()][-1]
    assert "harness sweep --name s --resume" in last, log
    snapshot = {d: (exp / d / "result.json").read_text() for d in finished}

    r = subprocess.run([sys.executable, "-m", "harness", "sweep", "--name", "s", "--resume", *where], env=env,
                       capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _outcomes(exp)
    assert len(after) == 4 and set(before) <= set(after) and set(after.values()) == {"completed"}, after
    for d in finished:  # finished trials were not trained again
        assert (exp / d / "result.json").read_text().startswith(snapshot[d])
        epochs = [json.loads(x)["epoch"] for x in (exp / d / "result.json").read_text().splitlines()
                  if x.strip() and "epoch" in json.loads(x)]
        assert epochs == sorted(set(epochs)), f"{d} was trained again: {epochs}"
    rows = read_rows(results / "leaderboard.csv")
    assert len(rows) == 4 and len({x["config_id"] for x in rows}) == 4, "each configuration exactly once"
    assert sorted(float(x["lr"]) for x in rows) == [0.02, 0.03, 0.04, 0.05]
