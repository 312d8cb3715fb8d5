"""``harness bench loaders|overhead``: throughput benchmarks that append to ``results/throughput.csv``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness bench`` and its benchmarks."""
    p = sub.add_parser("bench", help="throughput benchmarks (rows go to results/throughput.csv)",
                       description="Throughput benchmarks. Warm-up is excluded and figures are medians; "
                       "rows are appended to results/throughput.csv with hardware and versions.")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True

    lp = bsub.add_parser("loaders", help="training-split images/s of each loader backend and preset",
                         description="Images/s of each available loader backend with the base and strong "
                         "presets on CIFAR-10 (synthetic CIFAR-shaped data when it is absent).")
    lp.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA_DIR or ./data)")
    lp.add_argument("--backends", default=None, help="comma list (default: every available backend)")
    lp.add_argument("--presets", default="base,strong", help="comma list of augmentation presets")
    lp.add_argument("--batch-size", type=int, default=512)
    lp.add_argument("--epochs", type=int, default=5, help="timed epochs per cell (median reported)")
    lp.add_argument("--workers", type=int, default=2, help="num_workers of the torchvision backend")
    lp.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    lp.add_argument("--out", default=None, help="CSV to append to (default: results/throughput.csv)")
    lp.set_defaults(func=_loaders)

    op = bsub.add_parser("overhead", help="harness run vs a bare PyTorch loop vs Ray Train, same model and data",
                         description="Training images/s of (a) a bare PyTorch loop, (b) harness run in "
                         "process, (c) harness run --workers 1 under Ray Train; same model, data and batch.")
    op.add_argument("--arch", default="resnet20")
    op.add_argument("--batch-size", type=int, default=128)
    op.add_argument("--epochs", type=int, default=4, help="epochs per mode; the first is warm-up")
    op.add_argument("--n-train", type=int, default=2560,
                    help="synthetic in-memory training images (at least one --batch-size)")
    op.add_argument("--modes", default="bare,inprocess,ray", help="comma list of bare, inprocess, ray")
    op.add_argument("--out", default=None, help="CSV to append to (default: results/throughput.csv)")
    op.set_defaults(func=_overhead)


def _check_loaders(args: argparse.Namespace) -> None:
    """Every option of ``bench loaders``, before any data loads."""
    from harness.commands import checks
    from harness.errors import HarnessError
    from loaders import AUGMENTATIONS, BACKENDS

    if args.backends is not None:
        backends = checks.comma_list("--backends", args.backends)
        checks.names_in("--backends", backends, BACKENDS)
        if "auto" in backends:
            concrete = ", ".join(n for n in BACKENDS.names() if n != "auto")
            raise HarnessError(f"--backends: bench the concrete backends ({concrete}), not auto")
    checks.names_in("--presets", checks.comma_list("--presets", args.presets), AUGMENTATIONS)
    checks.at_least("--batch-size", args.batch_size, 1)
    checks.at_least("--epochs", args.epochs, 1)
    checks.at_least("--workers", args.workers, 0)
    checks.at_least("--limit", args.limit, 1)
    checks.folder("--data-dir", args.data_dir)
    checks.output_file("--out", args.out, "CSV file")


def _check_overhead(args: argparse.Namespace) -> None:
    """Every option of ``bench overhead``, before anything is measured."""
    from architectures import list_models
    from harness.commands import checks
    from harness.errors import HarnessError
    from harness.registry import unknown_name_message

    if args.arch not in list_models():
        raise HarnessError(f"--arch: {unknown_name_message('model', args.arch, list_models())}")
    from harness.bench.overhead import MODES

    for m in checks.comma_list("--modes", args.modes):
        if m not in MODES:
            raise HarnessError(f"--modes: unknown mode '{m}' (valid: {', '.join(MODES)})")
    checks.at_least("--batch-size", args.batch_size, 1)
    if args.epochs < 2:
        raise HarnessError(f"--epochs must be >= 2 (the first epoch is warm-up), got {args.epochs}")
    if args.n_train < args.batch_size:
        raise HarnessError(f"--n-train {args.n_train} is less than one --batch-size {args.batch_size}: "
                           "no training step to time")
    checks.output_file("--out", args.out, "CSV file")


def _loaders(args: argparse.Namespace) -> int:
    from loaders.bench import main

    _check_loaders(args)
    return main(args)


def _overhead(args: argparse.Namespace) -> int:
    from harness.bench.overhead import main

    _check_overhead(args)
    return main(args)
