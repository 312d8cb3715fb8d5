"""End-to-end sweeps on a real local Ray cluster (2 CPUs), synthetic data and real W&B offline files.

Each sweep runs as its own `python -m harness sweep` process (as a user would run it), with a hard
timeout: a sweep that hangs fails the test instead of hanging the suite. Results, sweeps, docs and
Ray's temp files all go to temporary folders.
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
from conftest import child_env

from harness.cli import main
from harness.results_csv import read_rows

FAKE_KEY = "fake0wandb0key0that0must0never0be0written0anywhere00"
QUICK = {"data.dataset": "synthetic", "data.synthetic_size": 512, "train.batch_size": 64,
         "train.measure_inference": False, "train.checkpoint_every": 1}  # resumed trials train no epoch twice


def _matrix(path: Path, axes: str, epochs: int = 4) -> Path:
    base = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in {**QUICK, "train.epochs": epochs}.items())
    path.write_text(f"description: test\nasha: {{grace_period: 1, reduction_factor: 2}}\nbase:\n{base}\naxes:\n{axes}")
    return path


@pytest.fixture
def env(tmp_path):
    """A clean environment for the sweep process: tmp results/docs/sweeps and a short Ray temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # unix socket paths must stay short
    e = child_env(HARNESS_RESULTS_DIR=str(tmp_path / "results"), HARNESS_DOCS_DIR=str(tmp_path / "docs"),
                  HARNESS_SWEEPS_DIR=str(tmp_path / "sweeps"), RAY_TMPDIR=ray_tmp)
    yield e
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _sweep(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", "sweep", "--num-cpus", "2", *args]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"sweep did not finish within {timeout} s (hang?)\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, "")


@pytest.mark.slow
def test_four_trial_asha_sweep_finishes_stops_early_and_logs_to_wandb(tmp_path, env):
    m = _matrix(tmp_path / "m.yaml", """  run:
    - {arch: tiny_cnn, lr: 0.05, label: tiny-good}
    - {arch: lenet_cnn, lr: 0.05, label: lenet-good}
    - {arch: tiny_cnn, lr: 0.00001, label: tiny-bad}
    - {arch: lenet_cnn, lr: 0.00001, label: lenet-bad}
""")
    env["WANDB_API_KEY"] = FAKE_KEY  # --wandb offline must not write it anywhere
    r = _sweep(env, "--matrix", str(m), "--name", "four", "--wandb", "offline", "--max-concurrent", "2")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "[sweep four" in r.stdout and "best so far" in r.stdout, "the progress table is printed"

    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    pruned = read_rows(tmp_path / "results" / "pruned.csv")
    assert len(pruned) >= 1, "ASHA stopped a trial; it is listed apart, with its rung"
    assert len(rows) + len(pruned) == 4 and len({x["config_id"] for x in rows + pruned}) == 4
    assert all(x["stop_reason"] == "completed" and x["test_acc_mean"] for x in rows), "only full-budget rows"
    for x in pruned:
        assert float(x["val_acc_at_rung"]) >= 0 and int(x["rung"]) < 4 and x["sweep"] == "four"
    for x in rows:
        assert x["phase"] == "single"
        assert x["sweep"] == "four" and x["git_sha"] and x["torch"] and x["ray"] and x["hardware"]
    assert "warning: ASHA reduction factor 2" in r.stdout, "a matrix asking for less than the defaults is warned"
    assert "ranked: the trials that ran their full budget" in r.stdout
    assert read_rows(tmp_path / "results" / "throughput.csv")
    md = (tmp_path / "docs" / "leaderboard.md").read_text()
    assert "## synthetic" in md
    assert (tmp_path / "docs" / "img" / "acc_vs_time.png").is_file()
    assert (tmp_path / "docs" / "img" / "acc_vs_params.png").is_file()

    exp = tmp_path / "sweeps" / "four"
    threads = [json.loads(p.read_text())["threads"] for p in exp.glob("*/*/summary.json")]
    assert threads and set(threads) == {1}, f"2 trials on 2 cores train with a thread each: {threads}"
    runs = sorted(exp.glob("*/wandb/offline-run-*"))
    assert len(runs) == 4, runs
    for run in runs:
        blobs = b"".join(f.read_bytes() for f in run.glob("*.wandb"))
        assert b"val_acc" in blobs, f"no val_acc in {run}"
    assert b"arch:tiny_cnn" in b"".join(f.read_bytes() for run in runs for f in run.glob("*.wandb"))
    # Tune's sync follows symlinks: a trial must not carry a second copy of its run (latest-run), nor of
    # wandb-core's log for the whole process (debug-core.log), which grows with every trial the sweep runs.
    for folder in exp.glob("*/wandb"):
        assert [p.name for p in folder.iterdir() if p.is_dir()] == [p.name for p in folder.glob("offline-run-*")]
    assert not list(exp.glob("*/wandb/*/logs/debug-core.log")), "wandb-core's process-wide log was copied"

    for root in (exp, tmp_path / "results", tmp_path / "docs", Path(env["RAY_TMPDIR"])):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink() and f.stat().st_size < 50_000_000:
                assert FAKE_KEY.encode() not in f.read_bytes(), f"W&B key written to {f}"


def _mtimes(run_dir: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in run_dir.iterdir() if f.is_file()}


def _outcomes(exp: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["outcome"] for p in exp.glob("*/outcome.json")}


@pytest.mark.slow
def test_kill_9_then_resume_finishes_once_with_seeds_and_a_failed_trial(tmp_path, env):
    m = _matrix(tmp_path / "m.yaml", """  run:
    - {arch: tiny_cnn, lr: 0.05, label: tiny}
    - {arch: tiny_cnn, lr: 1000000.0, label: diverges}
""", epochs=2)
    exp = tmp_path / "sweeps" / "t1"
    cmd = [sys.executable, "-m", "harness", "sweep", "--num-cpus", "2", "--matrix", str(m), "--name", "t1",
           "--seeds", "2", "--wandb", "off", "--max-concurrent", "1", "--grace-period", "2"]
    # Tune saves its experiment state only as the sweep starts: the kill then always lands before it has
    # saved a finished trial as finished, so --resume restarts that trial (the case that trained it again).
    first_env = {**env, "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    log = open(tmp_path / "first.log", "w")
    p = subprocess.Popen(cmd, env=first_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "completed" not in _outcomes(exp).values():
            assert p.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.1)
        assert "completed" in _outcomes(exp).values(), "no trial finished in time"
        os.kill(p.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
        p.wait(30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()
    before = _outcomes(exp)
    assert len(before) < 4, "the kill came too late to test resuming (one trial at a time: 3 were left)"
    finished = [d for d, o in before.items() if o == "completed" and (exp / d / "run" / "summary.json").is_file()]
    assert finished, before
    # A trial trained again rewrites its run's summary.json and last.pt: both must stay as they were.
    snapshot = {d: ((exp / d / "run" / "summary.json").read_text(), _mtimes(exp / d / "run")) for d in finished}

    r = _sweep(env, "--name", "t1", "--resume")
    assert r.returncode == 0, r.stdout[-3000:]
    after = _outcomes(exp)
    assert len(after) == 4 and set(before) <= set(after)
    for d in finished:
        assert (exp / d / "run" / "summary.json").read_text() == snapshot[d][0], f"{d} was trained again"
        assert _mtimes(exp / d / "run") == snapshot[d][1], f"{d} was trained again"
        rows = [json.loads(x) for x in (exp / d / "result.json").read_text().splitlines() if x.strip()]
        epochs = [x["epoch"] for x in rows if "epoch" in x]
        assert epochs == sorted(set(epochs)), f"{d} reported its epochs again: {epochs}"

    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert len(rows) == 2 and len({x["config_id"] for x in rows}) == 2, "each configuration exactly once"
    by = {(x["arch"], x["lr"]): x for x in rows}
    good = by[("tiny_cnn", "0.05")]
    assert good["n_seeds"] == "2" and good["seeds"] == "0 1"
    bad = by[("tiny_cnn", "1e+06")]
    assert bad["stop_reason"] == "diverged" and "diverged" in bad["error"] and bad["test_acc_mean"] == ""


@pytest.mark.slow
def test_optuna_search_with_ddp_trials(tmp_path, env):
    """Optuna suggests the trials; each trial fits a 2-worker TorchTrainer (TuneReportCallback)."""
    m = _matrix(tmp_path / "m.yaml", """  arch: [tiny_cnn, lenet_cnn]
  lr: {loguniform: [0.001, 0.1]}
""", epochs=2)
    r = _sweep(env, "--matrix", str(m), "--name", "opt", "--search", "optuna", "--num-samples", "2",
               "--workers-per-trial", "2", "--wandb", "off")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "at most 1 at once" in r.stdout, "2 workers x 1 CPU on 2 CPUs: one trial at a time"
    states = sorted((tmp_path / "sweeps" / "opt").glob("*/trial.json"))
    assert len(states) == 2
    lrs = {json.loads(s.read_text())["config"]["optim"]["lr"] for s in states}
    assert len(lrs) == 2 and all(0.001 <= x <= 0.1 for x in lrs), "Optuna suggested the lrs"
    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert len(rows) == 2 and {x["world_size"] for x in rows} == {"2"}
    assert all(x["stop_reason"] == "completed" and x["test_acc_mean"] for x in rows)


@pytest.mark.slow
def test_resume_of_a_sweep_stopped_before_any_trial_ran_starts_it_afresh(tmp_path, env):
    """A sweep stopped in its first seconds leaves its sweep.json and nothing of Tune's: --resume runs it."""
    m = _matrix(tmp_path / "m.yaml", "  run:\n    - {arch: tiny_cnn, lr: 0.05, label: t}\n", epochs=1)
    assert _sweep(env, "--matrix", str(m), "--name", "early", "--wandb", "off").returncode == 0
    exp = tmp_path / "sweeps" / "early"
    for p in exp.iterdir():  # what the stop leaves: the definition only
        if p.name != "sweep.json":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    r = _sweep(env, "--name", "early", "--resume", "--wandb", "off")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "stopped before any trial started; starting it from the beginning" in r.stdout
    assert list(exp.glob("*/*/summary.json")) and list(exp.glob("experiment_state-*.json")), "it ran, resumably"


def test_resume_and_name_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_SWEEPS_DIR", str(tmp_path))
    assert main(["sweep", "--matrix", "quick", "--name", "nope", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no sweep 'nope'" in err
    (tmp_path / "taken").mkdir()
    assert main(["sweep", "--matrix", "quick", "--name", "taken", "--wandb", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err
    assert main(["sweep", "--matrix", "quick", "--search", "optuna", "--seeds", "2", "--wandb", "off"]) == 2
    assert "optuna" in capsys.readouterr().err
    assert main(["sweep", "--matrix", "quick", "--workers-per-trial", "4", "--cpus-per-worker", "8",
                 "--num-cpus", "2", "--wandb", "off", "--data-dir", str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "32 CPUs" in err


def test_resume_refuses_options_that_would_change_the_sweep(tmp_path, capsys, monkeypatch):
    """A new --only or --seeds on --resume would be ignored (the saved sweep wins): it is refused instead."""
    import dataclasses

    from harness.sweep.driver import _changed_on_resume
    from harness.sweep.matrix import matrix_path
    from harness.sweep.settings import SweepSettings

    monkeypatch.setenv("HARNESS_SWEEPS_DIR", str(tmp_path))
    allcnn = matrix_path("allcnn")
    saved = SweepSettings(matrix="allcnn", name="old", seeds=2, only=["row=A4"], data_dir=str(tmp_path),
                          matrix_path=str(allcnn), matrix_text=allcnn.read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sweep.json").write_text(json.dumps(dataclasses.asdict(saved)))
    (tmp_path / "old" / "experiment_state-2026-12-07_11-58-03.json").write_text("{}")
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    for args, msg in [(["--seeds", "3"], "--seeds 2, not 3"), (["--only", "row=A3"], "--only row=A4, not row=A3"),
                      (["--matrix", "zoo"], "--matrix allcnn, not zoo"),
                      (["--matrix", "quick"], "--matrix allcnn, not quick"),  # quick: the default, still given
                      (["--gpus-per-worker", "0"], "--gpus-per-worker (default), not 0")]:  # 0 == False
        assert main(["sweep", "--name", "old", "--resume", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err and "--results-dir" in err, err
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before, "nothing written"
    as_given = dataclasses.asdict(saved)
    same = SweepSettings(**{**as_given, "data_dir": f"{tmp_path}/./"})  # the same folder, spelt otherwise
    assert _changed_on_resume(same, as_given) == ""
    assert _changed_on_resume(SweepSettings(name="old", results_dir="elsewhere"), as_given) == ""
    # A damaged sweep.json: one line naming it, and the folder is left as it was.
    for text, msg in [("{bad", "cannot be read"), (json.dumps({**as_given, "matrix_text": ""}), "holds no matrix")]:
        (tmp_path / "old" / "sweep.json").write_text(text)
        assert main(["sweep", "--name", "old", "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err and "sweep.json" in err, err
        assert (tmp_path / "old" / "sweep.json").read_text() == text
