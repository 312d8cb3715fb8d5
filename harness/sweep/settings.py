"""What defines a sweep: :class:`SweepSettings` (``harness sweep``'s options) and their checks.

The settings are saved as ``sweep.json`` in the sweep's directory, so that ``--resume`` needs only
the sweep's name. Seeds and folds are replicate trials of one configuration (``--seeds S`` x
``--folds K``); the leaderboard aggregates them into one row with mean and standard deviation, and
with folds the mean validation accuracy over the folds is the row's selection metric.

With ``--rerun-top K`` a sweep has two phases (:mod:`harness.sweep.phases`): phase one, the *search*,
runs every configuration once (seed 0) under ASHA; phase two, the *rerun*, runs the best K
configurations of each architecture again at full budget (no early stopping) with ``--seeds S``
seeds (1..S). Without it a sweep is one phase (``single``) and ``--seeds`` applies to every trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.run.config import field_info, parse_override
from harness.sweep.matrix import SEARCHES, Matrix

#: What ASHA optimises (``val_acc``, higher is better) and its clock (the ``epoch`` of each report).
METRIC, MODE, TIME_ATTR = "val_acc", "max", "epoch"
WANDB_CHOICES = ("auto", "online", "offline", "off")


@dataclass
class SweepSettings:
    """Everything that defines a sweep; saved as ``sweep.json`` so that ``--resume`` needs only the name."""

    matrix: str = "quick"
    name: str = ""
    search: str | None = None  # None: the matrix's
    num_samples: int | None = None  # None: the matrix's
    max_epochs: int | None = None  # None: the matrix's epochs
    grace_period: int | None = None
    reduction_factor: float | None = None
    workers_per_trial: int = 1
    cpus_per_worker: int | None = None  # None: 1 on CPUs; per GPU, the GPU nodes' smallest CPU-per-GPU ratio
    gpus_per_worker: float | None = None  # None: 1 where there are GPUs, else 0 (must be said on an autoscaler)
    max_concurrent: int | None = None
    seeds: int = 1  # with rerun_top: the seeds of phase two only (phase one runs seed 0)
    rerun_top: int | None = None  # K: rerun the best K configurations of each architecture (phase two)
    folds: int = 0
    target_acc: float | None = None
    wandb: str = "auto"  # auto | online | offline | off
    storage: str | None = None  # None: ./sweeps
    data_dir: str | None = None
    overrides: list[str] = field(default_factory=list)  # --set key=value, on top of every trial
    only: list[str] = field(default_factory=list)  # --only AXIS=GLOB: run the matching trials only
    results_dir: str | None = None  # None: $HARNESS_RESULTS_DIR or ./results
    docs_dir: str | None = None  # None: $HARNESS_DOCS_DIR or ./docs; "" skips the docs page
    num_cpus: int | None = None  # CPUs of a local Ray cluster (None: this machine's)
    verbose: bool = False
    # Filled in by the sweep:
    matrix_text: str = ""
    matrix_path: str = ""
    created: str = ""


def validate_settings(s: SweepSettings, m: Matrix, submitted: bool = False) -> None:
    """Check the options of a sweep over matrix ``m`` before anything is resolved, started or written.

    Args:
        s: the sweep's settings.
        m: its matrix.
        submitted: checked here but run in a Ray job on a cluster (``harness submit``): its paths and
            resources are the cluster's, so only the options themselves are checked. Otherwise the
            folder options must not be files. (Whether a trial fits this machine is
            :func:`harness.sweep.resources.check_fits_locally`, which the driver calls next.)

    Raises:
        HarnessError: one line naming the bad option and what it takes.
    """
    search = s.search or m.search
    if search not in SEARCHES:
        raise HarnessError(f"--search must be grid, random or optuna, got '{search}'")
    if s.seeds < 1:
        raise HarnessError(f"--seeds must be >= 1, got {s.seeds}")
    if s.folds == 1 or s.folds < 0:
        raise HarnessError(f"--folds must be 0 (no cross-validation) or >= 2, got {s.folds}")
    if s.rerun_top is not None and s.rerun_top < 1:
        raise HarnessError(f"--rerun-top must be >= 1, got {s.rerun_top}")
    if s.rerun_top and s.folds:
        raise HarnessError("--rerun-top reruns the best configurations with --seeds; it does not take --folds "
                           "(drop one of them)")
    if search == "optuna" and not s.rerun_top and (s.seeds > 1 or s.folds):
        raise HarnessError("--search optuna tunes one run per suggestion; --seeds/--folds need --search grid or "
                           "random (each configuration then runs every seed and fold)")
    for k in ("num_samples", "max_epochs", "grace_period", "max_concurrent", "workers_per_trial"):
        v = getattr(s, k)
        if v is not None and v < 1:
            raise HarnessError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    if s.reduction_factor is not None and s.reduction_factor <= 1:
        raise HarnessError(f"--reduction-factor must be > 1, got {s.reduction_factor}")
    if s.cpus_per_worker is not None and s.cpus_per_worker < 1:
        raise HarnessError(f"--cpus-per-worker must be >= 1, got {s.cpus_per_worker}")
    if s.gpus_per_worker is not None and s.gpus_per_worker < 0:
        raise HarnessError(f"--gpus-per-worker must be >= 0, got {s.gpus_per_worker}")
    if s.target_acc is not None and not 0 < s.target_acc <= 1:
        raise HarnessError(f"--target-acc must be in (0, 1], got {s.target_acc}")
    if s.num_cpus is not None and s.num_cpus < 1:
        raise HarnessError(f"--num-cpus must be >= 1, got {s.num_cpus}")
    for o in s.overrides:  # here, not per trial: a bad --set is one error, not one per trial
        try:
            key, _ = parse_override(o)
        except ConfigError:
            raise ConfigError(f"--set {o}: expected KEY=VALUE, e.g. --set optim.lr=0.05") from None
        if not key.startswith("model.kwargs."):
            try:
                field_info(key)
            except ConfigError as e:
                raise ConfigError(f"--set {o}: {e}") from None
    wandb_mode(s.wandb)
    if submitted:
        return
    for flag, path in (("--storage", s.storage), ("--results-dir", s.results_dir), ("--docs-dir", s.docs_dir),
                       ("--data-dir", s.data_dir)):
        _folder(flag, path)


def _folder(flag: str, value: str | None) -> None:
    """A folder option: no file may stand where it (or a parent of it) goes."""
    if not value:
        return
    p = Path(value).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == p else f": {q}"
                raise HarnessError(f"{flag} {value}{where} is a file, not a folder")
            return


def wandb_mode(choice: str) -> str | None:
    """The W&B mode of ``--wandb``: ``auto`` -> ``online`` with ``WANDB_API_KEY`` set, else ``offline``;
    ``off`` -> None.

    Raises:
        ConfigError: ``choice`` is none of auto, online, offline, off.
    """
    if choice not in WANDB_CHOICES:
        raise ConfigError(f"--wandb must be auto, online, offline or off, got '{choice}'")
    if choice == "off":
        return None
    if choice == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return choice


#: The phase a trial belongs to (the ``phase`` of ``trial.json`` and of leaderboard rows).
SEARCH, RERUN, SINGLE = "search", "rerun", "single"


def search_phase(s: SweepSettings) -> str:
    """The label of a sweep's first (ASHA) phase: ``search`` when a rerun phase follows, else ``single``."""
    return SEARCH if s.rerun_top else SINGLE


def search_seeds(s: SweepSettings) -> int:
    """Seeds per configuration in the first phase: one when the rerun phase brings the seeds."""
    return 1 if s.rerun_top else s.seeds
