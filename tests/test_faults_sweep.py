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
from conftest import child_env

from harness.results_csv import read_rows

MATRIX = """description: four tiny trials
asha: {grace_period: 1, reduction_factor: 2}
base:
  data.dataset: synthetic
  data.synthetic_size: 256
  train.batch_size: 64
  train.epochs: 2
  train.checkpoint_every: 1
  train.measure_inference: false
axes:
  arch: [tiny_cnn]
  lr: [0.05, 0.04, 0.03, 0.02]
"""


@pytest.fixture
def env(tmp_path):
    """The sweep process's environment: nothing of the caller's Ray, W&B or harness settings; a short Ray temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # unix socket paths must stay short
    e = child_env(HARNESS_CACHE_DIR=str(tmp_path / "cache"), RAY_TMPDIR=ray_tmp)
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
    # Trials run in reused workers: at 256 images a trial ends in about a second, and all four could end
    # before the signal lands. 2,048 images keep the second pair running when it does.
    (tmp_path / "m.yaml").write_text(MATRIX.replace("data.synthetic_size: 256", "data.synthetic_size: 2048"))
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


TWO_TRIALS = MATRIX.replace("lr: [0.05, 0.04, 0.03, 0.02]", "lr: [0.05, 0.02]")


def _wait_for(p: subprocess.Popen, ready, what: str, logs: Path, timeout: float = 150) -> object:
    """Poll ``ready()`` until it returns something truthy while the sweep runs; fail with its logs if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ready()
        if got:
            return got
        assert p.poll() is None, f"exited {p.returncode} before {what}:\n" + _logs(logs)
        time.sleep(0.05)
    raise AssertionError(f"no {what} in {timeout:.0f} s:\n" + _logs(logs))


def _logs(d: Path) -> str:
    return (d / "out.log").read_text()[-3000:] + "\n--- stderr ---\n" + (d / "err.log").read_text()[-3000:]


def _open_writer(fifo: Path) -> int | None:
    """The FIFO's write end once a reader has opened it (the sweep is then inside the merge), else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads it yet
        return None


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", ["search_done", "merge"])
def test_ctrl_c_after_tune_returned_still_exits_130(tmp_path, env, point):
    """Ctrl-C after ``Tuner.fit`` returned: once the "search done" line is out (phase two is then skipped), and
    while the final merge reads ``leaderboard.csv``. Tune's SIGINT handler used to stay installed and swallow
    both: phase two ran to its end and the sweep exited 0.

    The merge is held at a known point without a sleep: ``results/leaderboard.csv`` is a FIFO, whose write end
    opens only once the merge opens it to read the existing rows; the signal is sent then, and the (empty)
    CSV written after it.
    """
    (tmp_path / "m.yaml").write_text(TWO_TRIALS)
    storage, results, docs = tmp_path / "sweeps", tmp_path / "results", tmp_path / "docs"
    where = ["--storage", str(storage), "--results-dir", str(results), "--docs-dir", str(docs), "--num-cpus", "2"]
    # Phase two: 3 seeds on 2 CPUs, so it cannot have completed by the time the signal follows the line (a loaded
    # machine once let one rerun finish first); if it runs to its end, the Ctrl-C was swallowed.
    phases = ["--rerun-top", "1", "--seeds", "3"] if point == "search_done" else []
    cmd = [sys.executable, "-m", "harness", "sweep", "--matrix", str(tmp_path / "m.yaml"), "--name", "s",
           "--wandb", "off", "--max-concurrent", "2", "--grace-period", "2", *phases, *where]
    results.mkdir()
    fifo = results / "leaderboard.csv"
    if point == "merge":
        os.mkfifo(fifo)
    out, err = open(tmp_path / "out.log", "w"), open(tmp_path / "err.log", "w")
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if point == "search_done":
            _wait_for(p, lambda: "search done" in (tmp_path / "out.log").read_text(), "'search done' line", tmp_path)
            os.kill(p.pid, signal.SIGINT)
        else:
            fd = _wait_for(p, lambda: _open_writer(fifo), "merge", tmp_path)
            os.kill(p.pid, signal.SIGINT)
            os.close(fd)  # EOF: no earlier rows; the merge goes on
        rc = p.wait(120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        out.close()
        err.close()
    assert rc == 130, _logs(tmp_path)
    err_text = (tmp_path / "err.log").read_text()
    # Tune itself may log a traceback when it is stopped just after a fit started: its background upload of
    # the experiment state races the search state's temp-file rename ("Saving experiment state ... failed",
    # FileNotFoundError on a *-tmp-basic-variant-state file; logged, not raised). Any other
    # traceback, and any through the harness's own code, fails.
    assert err_text.count("Traceback") == err_text.count("Saving experiment state to storage at"), _logs(tmp_path)
    assert "/harness/" not in err_text, _logs(tmp_path)
    last = [line for line in err_text.splitlines() if line.strip()][-1]
    assert "harness sweep --name s --resume" in last, _logs(tmp_path)
    rows = read_rows(results / "leaderboard.csv")
    search = [x for x in rows if x["phase"] in ("search", "single")]
    assert sorted(float(x["lr"]) for x in search) == [0.02, 0.05], "both search trials merged"
    if point == "search_done":
        reruns = _outcomes(storage / "s" / "rerun")
        assert list(reruns.values()).count("completed") < 3, f"phase two ran to its end after the Ctrl-C: {reruns}"


def _slow_trainable(config: dict) -> None:
    from ray import tune

    for i in range(1, 41):  # 40 x 0.2 s: far longer than a stop takes
        time.sleep(0.2)
        tune.report({"it": i})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", ["in_fit", "before_fit"])
def test_ctrl_c_while_fit_starts_is_passed_to_tune_at_its_first_step(ray_cluster, tmp_path, monkeypatch, when):
    """A Ctrl-C after ``fit`` was entered but before Tune listens (the window between the "search done" line and
    phase two's first step) is held, then passed on at Tune's first step: the real Tune run stops early instead
    of running to its end, and the sweep knows it was interrupted. ``before_fit``: the Ctrl-C comes while the Tuner
    is built, after the driver last looked (seen in the 10x loop: phase two then ran to its end)."""
    from ray import cloudpickle, tune

    from harness.sweep.interrupt import SweepInterrupt

    # (pytest started in the background by a non-interactive shell inherits SIGINT ignored: compare with it)
    handler_before = signal.getsignal(signal.SIGINT)
    from harness.sweep.progress import SweepProgress

    cloudpickle.register_pickle_by_value(sys.modules[_slow_trainable.__module__])  # workers cannot import tests/
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    tuner = tune.Tuner(_slow_trainable, run_config=tune.RunConfig(
        name="t", storage_path=str(tmp_path), verbose=0, callbacks=[SweepProgress("t", 1)]))
    with SweepInterrupt("t") as stop:
        if when == "before_fit":
            signal.raise_signal(signal.SIGINT)
        with stop.fit():
            if when == "in_fit":
                signal.raise_signal(signal.SIGINT)  # Tune has no handler yet: held, not lost and not raised
            assert stop.interrupted
            t0 = time.monotonic()
            grid = tuner.fit()
    assert grid[0].error is None, grid[0].error  # (a trial that cannot start would also end early)
    its = grid[0].metrics.get("it", 0)
    assert its < 40, f"Tune ran to the end ({its} reports in {time.monotonic() - t0:.1f} s): the Ctrl-C was lost"
    assert signal.getsignal(signal.SIGINT) is handler_before, "the handler is restored after the sweep"


LONG_TRIALS = MATRIX.replace("train.epochs: 2", "train.epochs: 200").replace(
    "lr: [0.05, 0.04, 0.03, 0.02]", "lr: [0.05, 0.02]").replace("grace_period: 1", "grace_period: 200")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_finishes_the_wandb_runs_of_running_trials_at_once(tmp_path, env):
    """Ctrl-C while trials run: their W&B runs are finished (not killed after Ray's upload timeout, 120 s here,
    with their records unflushed), and the driver exits well before that timeout."""
    (tmp_path / "m.yaml").write_text(LONG_TRIALS)
    storage = tmp_path / "sweeps"
    cmd = [sys.executable, "-m", "harness", "sweep", "--matrix", str(tmp_path / "m.yaml"), "--name", "w",
           "--wandb", "offline", "--max-concurrent", "2", "--storage", str(storage), "--results-dir",
           str(tmp_path / "results"), "--docs-dir", str(tmp_path / "docs"), "--num-cpus", "2"]
    out, err = open(tmp_path / "out.log", "w"), open(tmp_path / "err.log", "w")
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def both_running() -> bool:  # each trial has reported an epoch: its W&B run is live
            return len([f for f in storage.glob("w/*/result.json") if f.stat().st_size > 0]) == 2
        _wait_for(p, both_running, "two running trials", tmp_path)
        time.sleep(2)
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        rc = p.wait(100)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        out.close()
        err.close()
    assert rc == 130, _logs(tmp_path)
    assert took < 60, f"the driver waited {took:.0f} s for W&B actors nobody told to finish"
    runs = sorted(storage.glob("w/*/wandb/offline-run-*"))
    assert len(runs) == 2, runs
    for run in runs:  # wandb's own log of the run says whether wandb.finish ran (offline runs have no summary file)
        log = (run / "logs" / "debug.log").read_text()
        assert "finishing run" in log and "got exitcode: 0" in log, f"{run.name} was not finished:\n{log[-2000:]}"
