"""``harness sweep``: run a matrix (a preset or a YAML file) as a Ray Tune ASHA sweep."""

from __future__ import annotations

import argparse
import signal
import sys
import typing

from harness.commands import checks
from harness.errors import ConfigError
from harness.run.knobs import FieldInfo, base_type
from harness.sweep.driver import run_sweep
from harness.sweep.matrix import matrix_path
from harness.sweep.settings import SweepSettings, resume_flags, setting_fields


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
    p.add_argument("--resume", action="store_true",
                   help=f"finish the interrupted sweep --name (Tune's restore); only {resume_flags()} may "
                   "change; any other option given must be the sweep's own; a sweep stopped before its first trial "
                   "saved anything starts again from the beginning")
    for f in setting_fields():
        if f.flag:
            add_setting_flag(p, f)
    p.set_defaults(func=run)


def add_setting_flag(p: argparse.ArgumentParser, f: FieldInfo, help: str | None = None,  # noqa: A002
                     default: object = None) -> None:
    """The flag of one :class:`SweepSettings` field, from its declaration (``help``: another command's words).

    A flag not given stays ``default`` (None: an empty list, or false), so :func:`settings_from_args` leaves
    the field's default, and ``--name ''`` stays distinguishable from no ``--name``.
    """
    tp, text = base_type(f.type), help or f.help
    if tp is bool:
        p.add_argument(f.flag, dest=f.key, action="store_true", help=text)
    elif typing.get_origin(tp) is list:
        p.add_argument(f.flag, dest=f.key, action="append", default=[], metavar=_METAVARS.get(f.flag), help=text)
    else:
        p.add_argument(f.flag, dest=f.key, type=tp, choices=f.choices or None, default=default,
                       metavar=_METAVARS.get(f.flag), help=text)


_METAVARS = {"--set": "KEY=VALUE", "--only": "AXIS=GLOB", "--rerun-top": "K"}  # how --help shows their values


def settings_from_args(args: argparse.Namespace, check_matrix: bool | None = None) -> SweepSettings:
    """The :class:`SweepSettings` of parsed ``harness sweep`` arguments, with the checks that need no Ray.

    Args:
        args: the parsed arguments.
        check_matrix: check that ``--matrix`` names a preset or a file (None: unless ``--resume``, which
            reuses the matrix saved with the sweep).

    Raises:
        HarnessError: a bad ``--name`` or ``--matrix`` (one line naming the flag).
    """
    checks.safe_name("--name", getattr(args, "name", None), "sweep name")
    given = {f.key: getattr(args, f.key) for f in setting_fields() if f.flag and getattr(args, f.key) is not None}
    s = SweepSettings(**{k: list(v) if isinstance(v, list) else v for k, v in given.items()})
    if check_matrix if check_matrix is not None else not args.resume:
        try:
            matrix_path(s.matrix)
        except ConfigError as e:
            raise ConfigError(f"--matrix: {e}") from None
    return s


class Terminated(KeyboardInterrupt):
    """SIGTERM before Tune runs: stops the sweep as Ctrl-C does (and exits 143, not 130)."""


def given_settings(args: argparse.Namespace) -> set[str]:
    """The :class:`SweepSettings` fields whose flags were given in parsed ``harness sweep`` arguments."""
    return {f.key for f in setting_fields() if f.flag and _given(getattr(args, f.key))}


def _given(value: object) -> bool:
    # Flags not given parse as None, [] or False (add_setting_flag). None and False by identity, not with
    # `in`: 0 == False, so `--gpus-per-worker 0` would read as not given.
    return value is not None and value is not False and value != []


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
        rc = run_sweep(s, resume=args.resume, given=given_settings(args))
    except Terminated:
        resume = f"; continue it with: harness sweep --name {s.name} --resume" if s.name else ""
        print(f"sweep {s.name or s.matrix}: terminated; what finished is on disk{resume}", file=sys.stderr,
              flush=True)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old)
    if terminated and rc in (0, 130):
        return 143
    return rc
