"""``harness plan``: what a sweep of a matrix will cost (trials, ASHA's expected epochs, GPU-hours, wall time)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness plan``."""
    p = sub.add_parser("plan", help="what a sweep would cost before it runs: trials, epochs, GPU-hours, wall time",
                       description="Counts a matrix's trials as `harness sweep` would make them, ASHA's expected "
                       "epochs from its grace period and reduction factor, the GPU-hours at a stated rate (or the "
                       "CPU time at rates measured on this CPU), and the wall time with the given resources. "
                       "Nothing is trained.")
    p.add_argument("--matrix", required=True, help="a preset (harness list presets) or a matrix YAML file")
    p.add_argument("--gpus", type=int, default=None, help="GPUs the sweep would get (default: 8 unless --cpus)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs the sweep would get (costs measured on this CPU)")
    p.add_argument("--gpus-per-trial", type=float, default=1.0, help="GPUs per trial (fractions share a GPU)")
    p.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs per trial (with --cpus)")
    p.add_argument("--num-samples", type=int, default=None, help="samples per grid cell or random trials "
                   "(default: the matrix's)")
    p.add_argument("--grace-period", type=int, default=None, help="ASHA's first rung in epochs (default: the "
                   "matrix's, else a third of the epochs)")
    p.add_argument("--reduction-factor", type=float, default=None, help="ASHA's reduction factor (default: the "
                   "matrix's, else 3)")
    p.add_argument("--rerun-top", type=int, default=0, help="phase two: reruns per architecture at full budget")
    p.add_argument("--seeds", type=int, default=1, help="phase two: seeds per rerun")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override applied to every trial")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    """Every option, before the matrix is planned."""
    from harness.commands import checks
    from harness.errors import HarnessError

    checks.at_least("--gpus", args.gpus, 1)
    checks.at_least("--cpus", args.cpus, 1)
    if not args.gpus_per_trial > 0:
        raise HarnessError(f"--gpus-per-trial must be > 0, got {args.gpus_per_trial:g}")
    checks.at_least("--cpus-per-trial", args.cpus_per_trial, 1)
    checks.at_least("--num-samples", args.num_samples, 1)
    checks.at_least("--grace-period", args.grace_period, 1)
    if args.reduction_factor is not None and not args.reduction_factor > 1:
        raise HarnessError(f"--reduction-factor must be > 1, got {args.reduction_factor:g}")
    checks.at_least("--rerun-top", args.rerun_top, 0)
    checks.at_least("--seeds", args.seeds, 1)
    if args.gpus is not None and args.gpus_per_trial > args.gpus:
        raise HarnessError(f"--gpus-per-trial {args.gpus_per_trial:g} is more than --gpus {args.gpus}: no trial "
                           "could ever be placed")
    if args.cpus is not None and args.cpus_per_trial > args.cpus:
        raise HarnessError(f"--cpus-per-trial {args.cpus_per_trial} is more than --cpus {args.cpus}: no trial "
                           "could ever be placed")


def run(args: argparse.Namespace) -> int:
    """Plan the sweep and print the plan."""
    from harness.errors import HarnessError
    from harness.sweep.matrix import load_matrix
    from harness.sweep.plan import make_plan, report

    _check(args)
    try:
        m = load_matrix(args.matrix)
    except HarnessError as e:
        raise HarnessError(f"--matrix: {e}") from None
    gpus = args.gpus if args.gpus is not None else (None if args.cpus else 8)
    plan = make_plan(m, args.overrides, args.num_samples, gpus=bool(gpus), threads=args.cpus_per_trial,
                     grace=args.grace_period, reduction_factor=args.reduction_factor, rerun_top=args.rerun_top,
                     seeds=args.seeds)
    for line in report(plan, gpus, args.cpus, args.gpus_per_trial, args.cpus_per_trial):
        print(line)
    return 0
