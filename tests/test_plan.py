"""``harness plan``: a sweep's trials, ASHA's expected epochs and its cost, before anything runs (issue 25 item 5)."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.sweep.matrix import load_matrix
from harness.sweep.plan import asha_rungs, expected_epochs, make_plan


def test_asha_rungs_and_expected_epochs():
    assert asha_rungs(30, 3, 3) == [3, 9, 27]
    # every trial trains 3 epochs; a third goes on to 9, a ninth to 27, a 27th to 30
    assert expected_epochs(30, [3, 9, 27], 3) == pytest.approx(3 + 6 / 3 + 18 / 9 + 3 / 27)
    assert expected_epochs(10, [3, 9, 27], 3) == pytest.approx(3 + 6 / 3 + 1 / 9), "a shorter trial ends at its own"
    assert expected_epochs(2, [3], 3) == 2, "no rung before its last epoch: it trains them all"
    assert asha_rungs(10, 50, 3) == [] and expected_epochs(10, [], 3) == 10


def test_plan_counts_the_sweeps_trials_and_reruns():
    m = load_matrix("quick")
    plan = make_plan(m, [], gpus=True, rerun_top=1, seeds=2)
    assert len(plan.trials) == len(m.configurations()) == 8
    assert plan.rungs == [1] and plan.expected_epochs() == pytest.approx(8 * (1 + 1 / 3))
    assert len(plan.reruns) == 4 * 1 * 2, "4 architectures x top 1 x 2 seeds"
    assert all(t.gpu_s > 0 for t in plan.trials)


def test_plan_full_on_64_gpus_prints_trials_epochs_and_gpu_hours(capsys):
    assert main(["plan", "--matrix", "full", "--gpus", "64"]) == 0
    out = capsys.readouterr().out
    n = len(load_matrix("full").configurations())
    assert f"plan: matrix full: {n} trials" in out
    assert "rungs at epochs 3, 9, 27" in out and "expected epochs" in out
    assert "GPU-hours to search" in out and "64 trials at once" in out and "wall: about" in out


def test_list_presets_shows_trial_counts(capsys):
    assert main(["list", "presets", "quick"]) == 0
    out = capsys.readouterr().out
    assert "trials" in out.splitlines()[0]
    row = next(line for line in out.splitlines() if line.startswith("quick"))
    assert row.split()[1] == "8"
