"""``harness sweep``: run a matrix (a preset or a YAML file) as a Ray Tune ASHA sweep."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from harness.commands import checks
from harness.errors import ConfigError
from harness.sweep.driver import run_sweep
from harness.sweep.matrix import matrix_path
from harness.sweep.settings import SweepSettings

if TYPE_CHECKING:
    from harness.sweep.settings import SweepSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness sweep``."""
    p = sub.add_parser(
        "sweep", help="run a matrix of trials with Ray Tune + ASHA, W&B and leaderboards",
        description="Run every trial of a matrix (a preset from `harness list presets` or a YAML file) as one "
        "Ray Tune experiment. ASHA stops hopeless trials early on val_acc; every trial is logged to W&B; at the "
        "end results/leaderboard.csv, results/throughput.csv and docs/leaderboard.md are updated. "
        "Ctrl-C (exit 130) or SIGTERM (exit 143) stops the sweep keeping its finished trials, in its folder and in "
        "the leaderboard, and the last line says how to finish the rest: harness sweep --name NAME --resume "
        "(which also finishes a sweep whose driver was killed with kill -9). With --rerun-top K the sweep has two "
        "phases: the ASHA search (one seed per configuration), then the best K configurations of each "
        "architecture again at full budget, without early stopping, with --seeds S seeds; only those reruns are "
        "ranked. Trials ASHA stopped are listed apart (results/pruned.csv).")
    p.add_argument("--matrix", default="quick", help="preset name (quick, zoo, full) or a matrix YAML file")
    p.add_argument("--name", default=None, help="sweep name: its folder under --storage (default: <matrix>-<time>)")
    p.add_argument("--storage", default=None, help="where sweeps live (default: ./sweeps, or $HARNESS_SWEEPS_DIR)")
    p.add_argument("--resume", action="store_true", help="finish the interrupted sweep --name (Tune's restore)")
    p.add_argument("--search", choices=["grid", "random", "optuna"], default=None,
                   help="grid: cross the grid axes; random: sample every axis; optuna: Tune's OptunaSearch "
                   "(default: the matrix's)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="grid: samples of the sampled axes per cell; random/optuna: trials (default: the matrix's)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (caps an epochs axis); ASHA's max_t")
    p.add_argument("--grace-period", type=int, default=None,
                   help="ASHA: epochs before a trial may be stopped (default: the matrix's, else a third of the "
                   "epochs and at least the warm-up)")
    p.add_argument("--reduction-factor", type=float, default=None,
                   help="ASHA: keep 1/R of the trials at each rung (default: the matrix's, else 3)")
    p.add_argument("--rerun-top", type=int, default=None, metavar="K",
                   help="two phases: after the ASHA search, rerun the best K configurations of each architecture "
                   "at full budget with --seeds seeds; the leaderboard ranks only those reruns")
    p.add_argument("--workers-per-trial", type=int, default=1,
                   help="1: train in the trial's process; N > 1: a Ray Train TorchTrainer with N DDP workers")
    p.add_argument("--cpus-per-worker", type=int, default=None,
                   help="CPUs per worker (default: 1 on CPU-only machines, the CPUs per GPU otherwise)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (default: 1 if any)")
    p.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    p.add_argument("--seeds", type=int, default=1,
                   help="run each configuration with this many seeds (with --rerun-top: each rerun; the search "
                   "runs one)")
    p.add_argument("--folds", type=int, default=0, help="K-fold cross-validation on the training split (K >= 2)")
    p.add_argument("--target-acc", type=float, default=None, help="record time_to_target_s at this val accuracy")
    p.add_argument("--wandb", choices=["auto", "online", "offline", "off"], default="auto",
                   help="auto: online with WANDB_API_KEY set, else offline (default: auto)")
    p.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA_DIR or ./data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override on top of every trial, e.g. --set train.max_steps_per_epoch=5")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=GLOB",
                   help="run only the trials whose AXIS label (or report row) matches a GLOB of the comma list, e.g. --only row='S3.*,S4.*' "
                        "(repeat to narrow further)")
    p.add_argument("--results-dir", default=None, help="leaderboard CSVs (default: $HARNESS_RESULTS_DIR or ./results)")
    p.add_argument("--docs-dir", default=None,
                   help="where leaderboard.md and img/ go (default: $HARNESS_DOCS_DIR or ./docs; '' skips them)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--verbose", action="store_true", help="show Ray's and the trials' logs")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace, check_matrix: bool | None = None) -> SweepSettings:
    """The :class:`SweepSettings` of parsed ``harness sweep`` arguments, with the checks that need no Ray.

    Args:
        args: the parsed arguments.
        check_matrix: check that ``--matrix`` names a preset or a file (None: unless ``--resume``, which
            reuses the matrix saved with the sweep).

    Raises:
        HarnessError: a bad ``--name`` or ``--matrix`` (one line naming the flag).
    """
    if args.name is not None:
        checks.safe_name("--name", args.name, "sweep name")
    if check_matrix if check_matrix is not None else not args.resume:
        try:
            matrix_path(args.matrix)
        except ConfigError as e:
            raise ConfigError(f"--matrix: {e}") from None
    return SweepSettings(
        matrix=args.matrix, name=args.name or "", search=args.search, num_samples=args.num_samples,
        max_epochs=args.max_epochs, grace_period=args.grace_period, reduction_factor=args.reduction_factor,
        rerun_top=args.rerun_top,
        workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker, max_concurrent=args.max_concurrent, seeds=args.seeds,
        folds=args.folds, target_acc=args.target_acc, wandb=args.wandb, storage=args.storage,
        data_dir=args.data_dir, overrides=list(args.overrides), only=list(args.only), results_dir=args.results_dir,
        docs_dir=args.docs_dir, num_cpus=args.num_cpus, verbose=args.verbose)


class Terminated(KeyboardInterrupt):
    """SIGTERM before Tune runs: stops the sweep as Ctrl-C does (and exits 143, not 130)."""


def run(args: argparse.Namespace) -> int:
    """Build the settings and run (or resume) the sweep.

    SIGTERM is Ctrl-C: while Tune runs it asks Tune to stop (Tune saves the experiment, the finished
    trials are merged into the leaderboard and the last line says how to resume), exit 143 instead
    of 130.
    """
    s = settings_from_args(args)
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        handler = signal.getsignal(signal.SIGINT)  # Tune's own while it runs: stop and save
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)
        else:
            raise Terminated()

    old = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        rc = run_sweep(s, resume=args.resume)
    except Terminated:
        resume = f"; continue it with: harness sweep --name {s.name} --resume" if s.name else ""
        print(f"sweep {s.name or args.matrix}: terminated; what finished is on disk{resume}", file=sys.stderr,
              flush=True)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old)
    if terminated and rc in (0, 130):
        return 143
    return rc
