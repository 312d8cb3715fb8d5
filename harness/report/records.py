"""Run records: what one run (a sweep trial or a ``harness run`` directory) left behind, read from its files.

A sweep trial directory holds ``trial.json`` (its config and provenance, written by the trial), Tune's
``result.json`` (one JSON line per report: every epoch's metrics, then the run's summary) and, for a
trial that raised, Tune's ``error.txt``; the driver adds ``outcome.json`` when it sees the trial end.
A ``harness run`` directory holds ``config.yaml``, ``metrics.csv`` and ``summary.json``. Either
becomes one :class:`RunRecord`, whose summary is a typed :class:`~harness.run.summary.RunSummary`
and whose per-epoch reports stay plain rows (:data:`~harness.run.summary.EPOCH_COLUMNS`).

A trial that was restarted (a resumed sweep, a killed driver) appends a new attempt to its
``result.json``: only the last attempt counts.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.files import (
    CONFIG_FILE,
    METRICS_FILE,
    OUTCOME_FILE,
    PRETRAIN_DIR,
    SUMMARY_FILE,
    TRIAL_FILE,
    TUNE_ERROR_FILE,
    TUNE_RESULT_FILE,
)
from harness.results_csv import read_rows
from harness.run.config import RunConfig, config_from_dict
from harness.run.summary import RunSummary

#: The outcome (and stop reason) of a trial that ASHA stopped early: it has no summary, so no test accuracy.
STOPPED = "stopped_by_scheduler"

_DIVERGED = "diverged: the loss stopped being finite"


@dataclass
class RunRecord:
    """What one run left behind, read from its files."""

    config: RunConfig
    sweep: str = ""
    reports: list[dict] = field(default_factory=list)  # per-epoch metrics, in order
    summary: RunSummary | None = None  # None when the run stopped early, failed, or is still running
    error: str = ""
    outcome: str = ""  # completed | stopped_by_scheduler | error | excluded | "" (running or interrupted)
    provenance: dict = field(default_factory=dict)
    date: str = ""
    source: str = ""
    # What the sweep asked of it (trial.json): its phase (search | rerun | single; "run" for a `harness
    # run` directory), axis labels, the report rows it reproduces, and the matrix cell a rerun repeats.
    phase: str = ""
    axes: dict = field(default_factory=dict)
    references: list = field(default_factory=list)
    cell: dict = field(default_factory=dict)

    @property
    def stop_reason(self) -> str:
        """How the run ended: the summary's stop reason, else what the sweep driver saw (or ``incomplete``)."""
        if self.outcome == "excluded":
            return "excluded"
        if self.outcome == "error" or (self.error and self.summary is None):
            return "error"
        if self.summary is not None:
            return self.summary.stop_reason or "completed"
        return STOPPED if self.outcome == STOPPED else (self.outcome or "incomplete")

    @property
    def pruned(self) -> bool:
        """Whether the scheduler (ASHA) stopped the run before its budget: it has no test accuracy."""
        return self.stop_reason == STOPPED

    @property
    def epochs_reached(self) -> int:
        """The last epoch the run reported (its rung, for a pruned run)."""
        eps = [int(r["epoch"]) for r in self.reports if r.get("epoch") is not None]
        return max(eps, default=int(self.summary.epochs_run or 0) if self.summary is not None else 0)

    @property
    def finished(self) -> bool:
        """Whether the run is over (completed, stopped, failed), as opposed to interrupted."""
        return self.stop_reason != "incomplete"


def _segments_last(rows: list[dict]) -> list[dict]:
    """The reports of the last attempt: a restarted trial appends a new run starting at epoch 1 again."""
    start = 0
    prev = None
    for i, r in enumerate(rows):
        ep = r.get("epoch")
        if ep is not None:
            if prev is not None and ep <= prev:
                start = i
            prev = ep
    return rows[start:]


def _read_json_lines(path: Path) -> list[dict]:
    rows: list[dict] = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a killed driver
    return rows


def _last_attempt(rows: list[dict]) -> tuple[dict | None, list[dict]]:
    """The summary row (None if there is none) and the epoch rows of a trial's last attempt.

    After its summary, a restarted (resumed) trial may report epochs again: that attempt has no
    summary (yet), so the earlier one does not count for it.
    """
    summary_at = max((i for i, r in enumerate(rows) if RunSummary.is_summary(r)), default=None)
    epoch_at = [i for i, r in enumerate(rows) if "epoch" in r and not RunSummary.is_summary(r)]
    if summary_at is not None and epoch_at and summary_at < epoch_at[-1]:
        summary_at = None
    epochs = _segments_last([rows[i] for i in epoch_at])
    return (rows[summary_at] if summary_at is not None else None), epochs


def _tune_error(trial_dir: Path) -> str | None:
    """The last line of Tune's ``error.txt`` (the exception), or None where the trial did not raise."""
    path = trial_dir / TUNE_ERROR_FILE
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "error"


def _trial_outcome(trial_dir: Path, rows: list[dict]) -> str:
    """What the driver recorded in ``outcome.json``; ``excluded`` for a combination the matrix excludes."""
    # An excluded trial reports a bare status row, no summary: it is Tune's row, read as such.
    outcome = "excluded" if any(r.get("status") == "excluded" for r in rows) else ""
    path = trial_dir / OUTCOME_FILE
    if path.is_file():
        outcome = json.loads(path.read_text()).get("outcome", "")
    return outcome


def _trial_date(summary: RunSummary | None, last_row: dict) -> str:
    """When the trial last reported: the summary's ``run_date``, else Tune's ``timestamp`` of that report."""
    date = summary.run_date if summary is not None else str(last_row.get("run_date") or "")
    if not date and last_row.get("timestamp"):
        date = _dt.datetime.fromtimestamp(float(last_row["timestamp"]), _dt.timezone.utc).replace(
            microsecond=0).isoformat()
    return date


def read_trial(trial_dir: Path) -> RunRecord | None:
    """One sweep trial directory (``trial.json`` written by the trial, Tune's ``result.json``).

    Returns:
        The trial's record; None for a trial that never started (no ``trial.json``).
    """
    meta_path = trial_dir / TRIAL_FILE
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    rows = _read_json_lines(trial_dir / TUNE_RESULT_FILE)
    summary_row, epochs = _last_attempt(rows)
    summary = RunSummary.from_dict(summary_row) if summary_row is not None else None
    outcome = _trial_outcome(trial_dir, rows)
    error = ""
    if summary is not None and summary.failed:
        error = summary.error or "failed"
    elif (tune_error := _tune_error(trial_dir)) is not None:
        error, outcome = tune_error, "error"
    if summary is not None and summary.diverged:
        error = summary.error or _DIVERGED
    last_row = summary_row if summary_row is not None else (epochs[-1] if epochs else {})
    date = _trial_date(summary, last_row)
    return RunRecord(
        config=config_from_dict(meta["config"]), sweep=meta.get("sweep", ""), reports=epochs,
        summary=summary if summary is not None and not summary.failed else None,
        error=error, outcome=outcome, provenance=meta.get("provenance", {}),
        date=date or str(meta.get("started", "")), source=str(trial_dir),
        # A trial written before phases existed was a one-phase sweep's.
        phase=str(meta.get("phase") or "single"), axes=dict(meta.get("axes") or {}),
        references=list(meta.get("references") or []), cell=dict(meta.get("cell") or {}),
    )


def _num(v: Any) -> Any:
    """A ``metrics.csv`` cell as the number it was written from (ints stay ints); other text unchanged."""
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    return v


def read_run_dir(run_dir: Path) -> RunRecord | None:
    """A ``harness run`` directory (``config.yaml`` + ``summary.json``).

    Returns:
        The run's record; None without a summary or a config.
    """
    cp = run_dir / CONFIG_FILE
    summary = RunSummary.read(run_dir) if cp.is_file() else None
    if summary is None:
        return None
    cfg = config_from_dict(yaml.safe_load(cp.read_text()) or {})
    mp = run_dir / METRICS_FILE
    rows = [{k: _num(v) for k, v in r.items()} for r in read_rows(mp)] if mp.is_file() else []
    error = summary.error or (_DIVERGED if summary.diverged else "")
    return RunRecord(config=cfg, sweep="", reports=rows, summary=summary, error=error, outcome="completed",
                     provenance=summary.provenance(), date=summary.run_date, source=str(run_dir), phase="run")


def _inside_trial(run_dir: Path) -> bool:
    """Whether a run directory is a sweep trial's own, or transfer's stage one: counted with its trial or run."""
    return (run_dir / TRIAL_FILE).is_file() or run_dir.name == PRETRAIN_DIR or any(
        (a / TRIAL_FILE).is_file() for a in run_dir.parents)


def collect(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every run under ``paths``: sweep directories (trial dirs with ``trial.json``) and run directories.

    Raises:
        HarnessError: a path does not exist or holds no runs.
    """
    out: list[RunRecord] = []
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            raise HarnessError(f"--from {p}: no such sweep or runs directory")
        trials = [read_trial(meta.parent) for meta in sorted(p.rglob(TRIAL_FILE))]
        runs = [read_run_dir(sp.parent) for sp in sorted(p.rglob(SUMMARY_FILE)) if not _inside_trial(sp.parent)]
        found = [r for r in (*trials, *runs) if r is not None]
        if not found:
            raise HarnessError(f"--from {p}: no sweep trials (trial.json) or runs (summary.json) found")
        out += found
    return out
