"""Interrupting ``harness run`` (SIGINT, SIGTERM, SIGKILL) loses no finished epoch, and ``--resume`` finishes it."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EPOCHS = 6
ARGS = ["run", "--dataset", "synthetic", "--arch", "tiny_cnn", "--epochs", str(EPOCHS), "--batch-size", "32",
        "--set", "data.synthetic_size=1500", "--set", "train.measure_inference=false", "--no-progress",
        "--checkpoint-every", "1"]  # every epoch (the default is 5): resuming must not train one twice


def _metrics(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.csv"
    return list(csv.DictReader(open(p))) if p.is_file() else []


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "runs"
    # A shell's background job (`cmd &`, as CI may run the suite) inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: give the child the default, as a terminal would.
    p = subprocess.Popen([sys.executable, "-m", "harness", *ARGS, "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        dirs = list(out.glob("*")) if out.is_dir() else []
        if dirs and len(_metrics(dirs[0])) >= 2:
            return p, dirs[0]
        if p.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {p.communicate()}")
        time.sleep(0.05)
    p.kill()
    pytest.fail("no epoch finished in 240 s")


def _resume_and_check(run_dir: Path, interrupted_at: int) -> None:
    r = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(run_dir)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["epochs_run"] == EPOCHS
    assert summary["test_acc"] is not None
    assert [int(m["epoch"]) for m in _metrics(run_dir)] == list(range(1, EPOCHS + 1)), "one row per epoch"
    assert interrupted_at < EPOCHS


@pytest.mark.parametrize("sig,code", [pytest.param(signal.SIGINT, 130, id="SIGINT"),
                                      pytest.param(signal.SIGTERM, 143, id="SIGTERM")])
def test_interrupt_then_resume(tmp_path, sig, code):
    p, run_dir = _start(tmp_path)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert err.strip().splitlines()[-1].endswith(f"harness run --resume {run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    done = len(_metrics(run_dir))
    assert summary["stop_reason"] == "interrupted" and summary["test_acc"] is None
    assert summary["epochs_run"] == done >= 2
    _resume_and_check(run_dir, done)


def test_sigkill_then_resume(tmp_path):
    p, run_dir = _start(tmp_path)
    p.kill()
    p.wait(timeout=60)
    assert not (run_dir / "summary.json").exists()
    _resume_and_check(run_dir, len(_metrics(run_dir)))


def test_resume_refuses_finished_runs_and_corrupt_checkpoints(tmp_path):
    def harness(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", *a], capture_output=True, text=True, timeout=300)

    r = harness("run", "--resume", str(tmp_path))
    assert r.returncode == 2 and "not a run directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("model:\n  arch: tiny_cnn\ndata:\n  dataset: synthetic\n")
    (d / "last.pt").write_bytes(b"\x80\x02not a checkpoint")
    r = harness("run", "--resume", str(d))
    assert r.returncode == 2 and "last.pt: not a readable checkpoint" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    (d / "summary.json").write_text(json.dumps({"stop_reason": "completed"}))
    r = harness("run", "--resume", str(d))
    assert r.returncode == 2 and "already ended (completed)" in r.stderr
    r = harness("run", "--resume", str(d), "--epochs", "3")
    assert r.returncode == 2 and "drop the other options" in r.stderr


def test_resume_takes_the_options_that_change_no_result(tmp_path, capsys):
    """``--no-progress`` and ``--data-dir`` change how a run is shown and where it reads, not what runs:
    ``--resume`` takes them; an option that would change the run (``--lr``) is still refused, in one line."""
    from harness.cli import main
    from harness.run.config import RunConfig, apply_overrides, load_config
    from harness.run.trainer import fit, make_run_dir

    cfg = apply_overrides(RunConfig(), {"data.dataset": "synthetic", "data.synthetic_size": 200,
                                        "model.arch": "tiny_cnn", "train.epochs": 3, "train.batch_size": 64,
                                        "train.measure_inference": False, "out": str(tmp_path / "runs")})
    run_dir = make_run_dir(cfg)

    def stop_after_epoch_one(metrics: dict) -> None:
        if not metrics["done"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, run_dir=run_dir, report=stop_after_epoch_one)
    capsys.readouterr()

    assert main(["run", "--resume", str(run_dir), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop the other options (--lr)" in err[0], err

    data_dir = tmp_path / "elsewhere"
    assert main(["run", "--resume", str(run_dir), "--no-progress", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == str(run_dir)
    assert "epoch 2/3" not in out, "--no-progress was not applied"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["epochs_run"] == 3
    resumed = load_config(run_dir / "config.yaml")
    assert resumed.data.data_dir == str(data_dir) and resumed.train.progress is False
    assert resumed.optim.lr == cfg.optim.lr
