"""What the sweep's driver shows and records as trials end: the :class:`SweepProgress` callback and its table.

Tune's own progress output is off (``verbose=0``); :class:`SweepProgress` prints a table instead (counts
of running, pending, finished, stopped-early and failed trials, the best so far, each running
trial's epoch) at most every 30 s, and at most every 5 s while trials end, and writes each ended trial's outcome
(``outcome.json``) next to it: completed, stopped_by_scheduler (ASHA), error or excluded. Each
step it also passes on a Ctrl-C that came before Tune listened (:mod:`harness.sweep.interrupt`).

Importing this module imports Ray Tune, whose ``Callback`` :class:`SweepProgress` is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from harness.files import OUTCOME_FILE, TUNE_ERROR_FILE
from harness.report.records import STOPPED
from harness.run.summary import RunSummary
from harness.sweep.interrupt import relay_to_tune
from harness.sweep.settings import METRIC, TIME_ATTR
from harness.sweep.trials import is_excluded, trial_index, trial_label

PRINT_EVERY_S = 30
# While trials end the table is printed at most this often: a table costs O(trials) (45 ms at 10,000),
# and printing one per ended trial made the driver's cost grow with the square of the sweep.
ENDED_EVERY_S = 5


class SweepProgress(Callback):
    """Writes each trial's outcome next to it and prints the sweep's progress table.

    Tune saves its callbacks with the experiment and unpickles this one on ``--resume``: it is a
    module-level class so that it unpickles by reference, and :meth:`setup` resets its clock.
    """

    def __init__(self, name: str, total: int | None) -> None:
        self.name = name
        self.total = total
        self.setup()

    def setup(self, **info: Any) -> None:  # also after a resume, which unpickles this callback
        self.t0 = time.monotonic()
        self.last_print = 0.0
        self.events: list[str] = []
        self.trials: list = []

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.trials = trials

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials = trials
        out = _outcome(trial)
        _write_outcome(trial, out)
        r = trial.last_result or {}
        summary = RunSummary.from_dict(r)
        what = {"completed": f"finished: test_acc {_fmt(summary.test_acc)}",
                STOPPED: f"stopped early by ASHA at epoch {r.get(TIME_ATTR, '?')}",
                "error": f"FAILED: {summary.error}", "excluded": "excluded by the matrix"}[out]
        self.events.append(f"  {trial_index(trial)} {trial_label(trial.config)}: {what}")
        self.print_table(trials, every=ENDED_EVERY_S, ended=trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials = trials
        _write_outcome(trial, "error")
        self.events.append(f"  {trial_index(trial)} {trial_label(trial.config)}: FAILED (see {TUNE_ERROR_FILE})")
        self.print_table(trials, every=ENDED_EVERY_S, ended=trial)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # A Ctrl-C that came while ``fit`` was starting, before Tune listened for a stop, is passed on now.
        relay_to_tune()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.trials = trials
        self.print_table(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_table(trials, every=0)  # the events since the last table, and the final counts

    def print_table(self, trials: list, every: float = PRINT_EVERY_S, ended: Any = None) -> None:
        """Print :func:`progress_table` (and the events since the last one), at most every ``every`` seconds."""
        now = time.monotonic()
        if now - self.last_print < every:
            return
        self.last_print = now
        print(progress_table(self.name, trials, now - self.t0, self.total, self.events, ended), flush=True)
        self.events = []


def progress_table(name: str, trials: list, elapsed: float, total: int | None, events: list[str],
                   ended: Any = None) -> str:
    """The terminal table: counts of running, pending, finished, stopped-early and failed trials, and the best.

    ``ended`` is a trial Tune is ending right now (its status still says RUNNING).
    """
    counts = {"running": 0, "pending": 0, "finished": 0, "stopped early": 0, "failed": 0}
    best = None
    running = []
    for t in trials:
        r = t.last_result or {}
        if t.status == "RUNNING" and t is not ended:
            counts["running"] += 1
            running.append(t)
        elif t.status in ("PENDING", "PAUSED"):
            counts["pending"] += 1
        elif t.status in ("TERMINATED", "ERROR") or t is ended:
            out = "error" if t is ended and t.status != "TERMINATED" and not r else _outcome(t)
            key = {"completed": "finished", STOPPED: "stopped early", "error": "failed"}.get(out)
            if key:
                counts[key] += 1
        v = r.get(METRIC)
        if isinstance(v, (int, float)) and (best is None or v > best[0]):
            best = (v, t)
    if total:
        counts["pending"] = max(counts["pending"], total - sum(counts.values()) + counts["pending"])
    mins, secs = divmod(int(elapsed), 60)
    head = f"[sweep {name} {mins:02d}:{secs:02d}] " + " | ".join(f"{v} {k}" for k, v in counts.items())
    lines = [head, *events]
    if best:
        v, t = best
        test_acc = RunSummary.from_dict(t.last_result or {}).test_acc
        lines.append(f"  best so far: val_acc {v:.4f}  {trial_index(t)} {trial_label(t.config)}"
                     + (f"  test_acc {_fmt(test_acc)}" if test_acc is not None else ""))
    for t in running:
        r = t.last_result or {}
        ep = r.get(TIME_ATTR)
        lines.append(f"  running {trial_index(t)} {trial_label(t.config)}: "
                     + (f"epoch {ep} val_acc {_fmt(r.get(METRIC))}" if ep else "starting"))
    return "\n".join(lines)


def _outcome(trial: Any) -> str:
    """completed | stopped_by_scheduler | error | excluded, from the trial's status and last result."""
    r = trial.last_result or {}
    if trial.status == "ERROR":
        return "error"
    if is_excluded(r):
        return "excluded"
    if RunSummary.is_summary(r):  # the trial ended itself: with its summary, or with a failure
        return "error" if RunSummary.from_dict(r).failed else "completed"
    return STOPPED  # its last result is an epoch's: ASHA ended it


def _write_outcome(trial: Any, outcome: str) -> None:
    # Into the trial's folder in storage (a path on this machine: the harness's --storage), where the
    # trial's own files are, at once: the staging copy reached storage only at Tune's next sync (>= 10 s),
    # so a sweep whose trials end within seconds showed no ended trial until the very end.
    for path in (trial.path, trial.local_path):
        if path and Path(path).is_dir():
            (Path(path) / OUTCOME_FILE).write_text(json.dumps({"outcome": outcome, "status": trial.status}))
            return


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"
