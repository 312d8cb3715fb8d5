"""The names of the files that runs, sweeps, leaderboards and cluster jobs share: one place for all of them.

A run directory (``harness run``, a sweep trial's ``run/``, transfer's ``pretrain/``) holds
``config.yaml``, ``metrics.csv``, ``summary.json`` and the checkpoints. A sweep trial directory adds
``trial.json`` (written by the trial), ``outcome.json`` (written by the driver) and Tune's own
``result.json`` / ``error.txt``. A sweep directory holds ``sweep.json``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# A run directory
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
BEST_CKPT = "best.pt"
LAST_CKPT = "last.pt"
PRETRAIN_DIR = "pretrain"  # transfer's stage one, inside the stage-two run directory

# A sweep and its trials
SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"
OUTCOME_FILE = "outcome.json"
PHASES_FILE = "phases.json"  # a two-phase sweep's state: search finished, phase two's picks and cells
RERUN_DIR = "rerun"  # phase two's Tune experiment, inside the sweep's folder
TRIAL_RUN_DIR = "run"  # a trial's run directory, inside its trial directory
TUNE_RESULT_FILE = "result.json"  # Tune's per-trial JSON lines
TUNE_ERROR_FILE = "error.txt"  # Tune's per-trial error
TRACEBACK_FILE = "traceback.txt"  # a failed trial's full traceback, next to Tune's files

# Results
LEADERBOARD_CSV = "leaderboard.csv"
THROUGHPUT_CSV = "throughput.csv"
PRUNED_CSV = "pruned.csv"  # trials the scheduler stopped, with the rung they reached: never ranked


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a reader (or a concurrent sweep) never sees half a file,
    and a kill mid-write leaves the previous version whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
