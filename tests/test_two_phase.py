"""Two-phase sweeps (``--rerun-top K --seeds S``): selection, phase two's trials, resume across phases, ASHA's warning.

The end-to-end tests run `python -m harness sweep` on a real local Ray cluster with synthetic data, as
tests/test_sweep.py does; the selection and warning tests need no Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import _matrix, _sweep, env  # noqa: F401 - env is a fixture

from harness.report.records import STOPPED, RunRecord
from harness.results_csv import read_rows
from harness.run.config import RunConfig, apply_overrides
from harness.run.summary import RunSummary
from harness.sweep.asha import asha_params, asha_warning, default_grace
from harness.sweep.driver import _asha, _new_settings, _trial_configs
from harness.sweep.phases import rerun_cells, select_top
from harness.sweep.settings import SweepSettings
from harness.sweep.trials import trial_cells

K, S = 1, 2
AXES = """  arch: [tiny_cnn, lenet_cnn]
  lr: [0.05, 0.00001]
"""


# ---------------------------------------------------------------------------------------------
# Selection and ASHA's settings (no Ray)


def _rec(arch: str, idx: int, vals: list[float], pruned: bool = False, error: str = "") -> RunRecord:
    cfg = apply_overrides(RunConfig(), {"model.arch": arch, "data.dataset": "synthetic", "optim.lr": 0.01 * (idx + 1)})
    reports = [{"epoch": e, "val_acc": v} for e, v in enumerate(vals, start=1)]
    summary = None if pruned or error else RunSummary(val_acc=max(vals), test_acc=0.5, epochs_run=len(vals))
    return RunRecord(config=cfg, reports=reports, summary=summary, outcome=STOPPED if pruned else "completed",
                     error=error, phase="search", axes={"arch": arch, "lr": 0.01 * idx},
                     cell={"index": idx, "axes": {"arch": arch}, "overrides": {"model.arch": arch}, "references": []})


def test_selection_compares_trials_at_the_deepest_rung_they_share_per_architecture():
    recs = [
        _rec("a", 0, [0.9], pruned=True),  # best at epoch 1, but ASHA stopped it there
        _rec("a", 1, [0.3, 0.5, 0.6]),  # went all the way
        _rec("a", 2, [0.2, 0.4, 0.7]),  # went all the way and ends best: first
        _rec("a", 3, [0.95, 0.99], error="RuntimeError: boom"),  # failed: never picked
        _rec("b", 4, [0.5], pruned=True),
        _rec("b", 5, [0.6], pruned=True),
    ]
    picks = select_top(recs, 2)
    assert [(p.arch, p.rank, p.cell["index"], p.epoch) for p in picks] == [
        ("a", 1, 2, 3), ("a", 2, 1, 3), ("b", 1, 5, 1), ("b", 2, 4, 1)]
    cells = rerun_cells(select_top(recs, 1), 3)
    assert len(cells) == 2 * 3 and [c["seed"] for c in cells] == [1, 2, 3, 1, 2, 3], "fresh seeds, not the search's 0"
    assert {c["phase"] for c in cells} == {"rerun"} and [c["index"] for c in cells] == list(range(6))


def test_asha_defaults_do_not_prune_slow_starters_and_less_is_a_warning():
    assert asha_params(9, None, None) == (9, 3, 3.0)
    assert default_grace(9, warmup_epochs=5) == 5 and default_grace(2) == 1
    assert asha_warning(9, 3, 3) is None and asha_warning(9, 50, 2) is None, "no rung before the end: nothing pruned"
    w = asha_warning(9, 1, 2)
    assert w and "\n" not in w and "grace period 1" in w and "reduction factor 2" in w and "fast starters" in w
    assert "warm-up" in asha_warning(9, 3, 3, warmup_epochs=4)


@pytest.mark.parametrize("matrix, only, sets, max_t", [
    ("strategies", ["row=S5.4"], [], 30),  # a 30-epoch row selected from a matrix whose longest trains 50
    ("strategies", [], [], 50),
    ("quick", [], ["train.epochs=7"], 7),  # --set outranks the matrix's 2 epochs
    ("optuna-search", [], [], 50),  # an Optuna search: its trials are probed, not drawn
])
def test_ashas_max_t_is_the_longest_trial_the_sweep_runs(tmp_path, matrix, only, sets, max_t):
    s, m = _new_settings(SweepSettings(matrix=matrix, name="s", only=only, overrides=sets), tmp_path)
    cells = trial_cells(m, s) if m.search != "optuna" else None
    assert _asha(s, m, _trial_configs(m, s, cells))[0] == max_t


def test_a_searchs_drawn_epochs_axis_sets_max_t_by_its_top(tmp_path):
    (tmp_path / "m.yaml").write_text("search: optuna\nnum_samples: 2\nbase: {data.dataset: synthetic}\n"
                                     "axes:\n  epochs: {randint: [2, 9]}\n  lr: [0.1, 0.01]\n")
    s, m = _new_settings(SweepSettings(matrix=str(tmp_path / "m.yaml"), name="s"), tmp_path)
    assert _asha(s, m, _trial_configs(m, s, None))[0] == 8, "randint's top is exclusive; the probe saw only 2"


# ---------------------------------------------------------------------------------------------
# End to end


def _trials(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*/trial.json"))]


def _check_two_phase_result(tmp_path: Path, name: str) -> None:
    exp = tmp_path / "sweeps" / name
    state = json.loads((exp / "phases.json").read_text())
    assert state["search_done"] and len(state["picks"]) == 2 * K and len(state["cells"]) == 2 * K * S
    search, rerun = _trials(exp), _trials(exp / "rerun")
    assert len(search) == 4 and {t["phase"] for t in search} == {"search"} and {t["seed"] for t in search} == {0}
    for arch in ("tiny_cnn", "lenet_cnn"):  # phase two: exactly K x S trials per architecture
        mine = [t for t in rerun if t["config"]["model"]["arch"] == arch]
        assert len(mine) == K * S and sorted(t["seed"] for t in mine) == [1, 2] and {t["phase"] for t in mine} == {
            "rerun"}
        assert all(t["config"]["train"]["epochs"] == 3 for t in mine), "full budget"
    rerun_outcomes = [json.loads(p.read_text())["outcome"] for p in (exp / "rerun").glob("*/outcome.json")]
    assert rerun_outcomes == ["completed"] * (2 * K * S), "phase two never prunes"

    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    reruns = [r for r in rows if r["phase"] == "rerun"]
    assert len(reruns) == 2 * K and all(r["n_seeds"] == str(S) and r["seeds"] == "1 2" for r in reruns)
    assert all(r["stop_reason"] == "completed" and r["test_acc_mean"] and r["test_acc_std"] for r in reruns)
    assert {r["phase"] for r in rows} <= {"search", "rerun"}
    assert all(r["stop_reason"] != STOPPED for r in rows), "pruned trials are never leaderboard rows"
    md = (tmp_path / "docs" / "leaderboard.md").read_text()
    ranked = md.split("## synthetic")[1].split("\n## ")[0]
    body = [ln for ln in ranked.splitlines() if ln.startswith("| ") and not ln.startswith("| rank")]
    assert len(body) == 2 * K and all("| rerun | 2 |" in ln for ln in body), "the ranking uses only the reruns"


@pytest.mark.slow
def test_two_phase_sweep_reruns_the_best_per_architecture_and_ranks_only_them(tmp_path, env):  # noqa: F811
    m = _matrix(tmp_path / "m.yaml", AXES, epochs=3).read_text().replace("reduction_factor: 2", "reduction_factor: 3")
    (tmp_path / "m.yaml").write_text(m)
    r = _sweep(env, "--matrix", str(tmp_path / "m.yaml"), "--name", "two", "--rerun-top", str(K), "--seeds", str(S),
               "--wandb", "off", "--max-concurrent", "2")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "warning: ASHA" not in r.stdout, "grace 1 of 3 epochs with reduction factor 3 follows the defaults"
    assert "phase two reruns 2 configuration(s)" in r.stdout
    _check_two_phase_result(tmp_path, "two")
    pruned = read_rows(tmp_path / "results" / "pruned.csv")
    assert pruned and all(r["phase"] == "search" and int(r["rung"]) < 3 for r in pruned), "with the rung reached"
    assert "## Pruned trials (not ranked)" in (tmp_path / "docs" / "leaderboard.md").read_text()
    tail = r.stdout[r.stdout.index("ranked: the full-budget reruns"):]
    lines = tail.splitlines()
    assert lines[1].split() == ["rank", "arch", "recipe", "val", "acc", "%", "test", "acc", "%", "n", "train", "s",
                                "reported"]
    assert len([ln for ln in lines if ln.startswith(("1 ", "2 "))]) == 2 and "± " in tail
    assert lines[-1] == f"leaderboard page: {tmp_path / 'docs' / 'leaderboard.md'}"


def _outcomes(d: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["outcome"] for p in d.glob("*/outcome.json")}


@pytest.mark.slow
def test_resume_after_kill_in_phase_two_goes_straight_to_the_missing_reruns(tmp_path, env):  # noqa: F811
    """The driver is killed (-9) once phase two has finished a trial; --resume runs only what is missing."""
    _matrix(tmp_path / "m.yaml", AXES, epochs=3)  # grace 1, reduction factor 2: less than the defaults
    exp = tmp_path / "sweeps" / "t2"
    cmd = [sys.executable, "-m", "harness", "sweep", "--num-cpus", "2", "--matrix", str(tmp_path / "m.yaml"),
           "--name", "t2", "--rerun-top", str(K), "--seeds", str(S), "--wandb", "off", "--max-concurrent", "1"]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and "completed" not in _outcomes(exp / "rerun").values():
                assert p.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.3)
            assert "completed" in _outcomes(exp / "rerun").values(), "phase two did not start in time"
            os.kill(p.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
            p.wait(30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    first = log_path.read_text()
    assert sum("warning: ASHA" in ln for ln in first.splitlines()) == 1, "one warning line for reduction factor 2"
    assert "reduction factor 2" in first
    done_before = _outcomes(exp / "rerun")
    assert len(done_before) < 2 * K * S, "the kill came too late to test resuming"
    search_snapshot = {d.name: (d / "result.json").read_text() for d in exp.iterdir() if (d / "trial.json").is_file()}
    cells_before = json.loads((exp / "phases.json").read_text())["cells"]

    r = _sweep(env, "--name", "t2", "--resume")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "trials of matrix" not in r.stdout, "phase one had finished: it is not restored again"
    for d, text in search_snapshot.items():
        assert (exp / d / "result.json").read_text() == text, f"search trial {d} ran again"
    assert json.loads((exp / "phases.json").read_text())["cells"] == cells_before, "the same picks are rerun"
    after = _outcomes(exp / "rerun")
    assert len(after) == 2 * K * S and set(done_before) <= set(after)
    _check_two_phase_result(tmp_path, "t2")
