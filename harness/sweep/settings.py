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
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.run.config import field_info, parse_override
from harness.run.knobs import FieldInfo, knob, problem, walk
from harness.sweep.matrix import SEARCHES, Matrix

#: What ASHA optimises (``val_acc``, higher is better) and its clock (the ``epoch`` of each report).
METRIC, MODE, TIME_ATTR = "val_acc", "max", "epoch"
WANDB_CHOICES = ("auto", "online", "offline", "off")


@dataclass
class SweepSettings:
    """Everything that defines a sweep; saved as ``sweep.json`` so that ``--resume`` needs only the name.

    Each setting is declared once here (:func:`harness.run.knobs.knob`): ``harness sweep``'s flags, their
    help and the range and choice checks of :func:`validate_settings` come from these declarations. Those
    declared ``resume=True`` may be given again with ``--resume``; the rest are the saved sweep's.
    """

    matrix: str = knob("quick", "preset name (quick, zoo, full) or a matrix YAML file", flag="--matrix")
    name: str = knob("", "sweep name: its folder under --storage (default: <matrix>-<time>)", flag="--name")
    storage: str | None = knob(None, "where sweeps live (default: ./sweeps, or $HARNESS_SWEEPS_DIR)",
                               flag="--storage")
    search: str | None = knob(None, "grid: cross the grid axes; random: sample every axis; optuna: Tune's "
                              "OptunaSearch (default: the matrix's)", flag="--search", choices=SEARCHES)
    num_samples: int | None = knob(None, "grid: samples of the sampled axes per cell; random/optuna: trials "
                                   "(default: the matrix's)", flag="--num-samples", ge=1)
    max_epochs: int | None = knob(None, "epochs per trial (caps an epochs axis); ASHA's max_t",
                                  flag="--max-epochs", ge=1)
    grace_period: int | None = knob(None, "ASHA: epochs before a trial may be stopped (default: the matrix's, "
                                    "else a third of the epochs and at least the warm-up)",
                                    flag="--grace-period", ge=1)
    reduction_factor: float | None = knob(None, "ASHA: keep 1/R of the trials at each rung (default: the "
                                          "matrix's, else 3)", flag="--reduction-factor", gt=1)
    rerun_top: int | None = knob(None, "two phases: after the ASHA search, rerun the best K configurations of "
                                 "each architecture at full budget with --seeds seeds; the leaderboard ranks "
                                 "only those reruns", flag="--rerun-top", ge=1)
    workers_per_trial: int = knob(1, "1: train in the trial's process; N > 1: a Ray Train TorchTrainer with N "
                                  "DDP workers", flag="--workers-per-trial", ge=1)
    cpus_per_worker: int | None = knob(None, "CPUs per worker (default: 1 on CPU-only machines; on GPUs the "
                                       "GPU nodes' smallest CPU-per-GPU ratio)", flag="--cpus-per-worker", ge=1)
    gpus_per_worker: float | None = knob(None, "GPUs per worker (default: 1 if any; say it where an autoscaler "
                                         "adds the GPU nodes)", flag="--gpus-per-worker",
                                         ge=0)
    max_concurrent: int | None = knob(None, "at most this many trials at once", flag="--max-concurrent", ge=1)
    seeds: int = knob(1, "run each configuration with this many seeds (with --rerun-top: each rerun; the search "
                      "runs one)", flag="--seeds", ge=1)
    folds: int = knob(0, "K-fold cross-validation on the training split (K >= 2)", flag="--folds")
    target_acc: float | None = knob(None, "record time_to_target_s at this val accuracy", flag="--target-acc",
                                    gt=0, le=1)
    wandb: str = knob("auto", "auto: online with WANDB_API_KEY set, else offline (default: auto)", flag="--wandb",
                      choices=WANDB_CHOICES)
    data_dir: str | None = knob(None, "data root (default: $HARNESS_DATA_DIR or ./data)", flag="--data-dir")
    overrides: list[str] = knob(help="config override on top of every trial, e.g. --set "
                                "train.max_steps_per_epoch=5", flag="--set", factory=list)
    only: list[str] = knob(help="run only the trials whose AXIS label (or report row) matches a GLOB of the comma "
                           "list, e.g. --only row='S3.*,S4.*' (repeat to narrow further)", flag="--only",
                           factory=list)
    results_dir: str | None = knob(None, "leaderboard CSVs (default: $HARNESS_RESULTS_DIR or ./results)",
                                   flag="--results-dir", resume=True)
    docs_dir: str | None = knob(None, "where leaderboard.md and img/ go (default: $HARNESS_DOCS_DIR or ./docs; "
                                "'' skips them)", flag="--docs-dir", resume=True)
    num_cpus: int | None = knob(None, "CPUs of the local Ray cluster (default: all)", flag="--num-cpus", ge=1,
                                resume=True)
    verbose: bool = knob(False, "show Ray's and the trials' logs", flag="--verbose", resume=True)
    # Filled in by the sweep:
    matrix_text: str = ""
    matrix_path: str = ""
    created: str = ""


def setting_fields() -> list[FieldInfo]:
    """Every field of :class:`SweepSettings` with its declaration, in order."""
    return walk(SweepSettings)


def resume_flags() -> str:
    """The flags ``--resume`` may change (where results go, what is shown), as "--a, --b"."""
    return ", ".join(f.flag for f in setting_fields() if f.resume and f.flag)


def setting_field(name: str) -> FieldInfo:
    """The declaration of the setting ``name`` (a :class:`SweepSettings` field)."""
    return next(f for f in setting_fields() if f.key == name)


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
    for f in setting_fields():
        wrong = problem(f, getattr(s, f.key))
        if wrong:
            raise HarnessError(f"{f.flag} {wrong}")
    search = s.search or m.search  # the matrix's is checked when it is loaded
    if s.folds == 1 or s.folds < 0:
        raise HarnessError(f"--folds must be 0 (no cross-validation) or >= 2, got {s.folds}")
    if s.rerun_top and s.folds:
        raise HarnessError("--rerun-top reruns the best configurations with --seeds; it does not take --folds "
                           "(drop one of them)")
    if search == "optuna" and not s.rerun_top and (s.seeds > 1 or s.folds):
        raise HarnessError("--search optuna tunes one run per suggestion; --seeds/--folds need --search grid or "
                           "random (each configuration then runs every seed and fold)")
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
    wrong = problem(setting_field("wandb"), choice)
    if wrong:
        raise ConfigError(f"--wandb {wrong}")
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
