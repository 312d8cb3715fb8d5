"""``harness bench loaders|overhead|speed|probe|roofline|sweep``: throughput and time-to-target benchmarks that append to ``results/throughput.csv``."""

from __future__ import annotations

import argparse

from harness.bench import probe, roofline, speed
from harness.bench.probe import target_config, targets
from harness.bench.speed import recipe_config
from harness.commands import checks
from harness.errors import HarnessError
from harness.registry import unknown_name_message
from harness.run.recipes import RECIPES


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

    sp = bsub.add_parser("speed", help="time to a validation target of shipped recipes (speed94, ...)",
                         description="Time to a validation accuracy target of shipped recipes, the way the "
                         "CIFAR-10 speed records time it: whitening init, training and the (TTA) evaluation that "
                         "reached the target are timed; data loading and placement, compile warm-up (reported "
                         "apart) and earlier evaluations are not. Mean and std over --runs seeds, the fraction "
                         "that reached the target, and each recipe's time as a ratio of the first's. "
                         "Rows are appended to results/throughput.csv (kind speed) and docs/speed.md is regenerated.")
    sp.add_argument("--recipe", action="append", required=True, metavar="NAME",
                    help="a shipped recipe (harness list recipes); repeat to compare, the first is the ratio's base")
    sp.add_argument("--target", type=float, default=0.94, help="validation accuracy to reach")
    sp.add_argument("--runs", type=int, default=1, help="runs (seeds 0..N-1) per recipe")
    sp.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA_DIR or ./data)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted override applied to every recipe, e.g. --set train.compile=true")
    sp.add_argument("--stop-at-target", action="store_true",
                    help="stop each run once val accuracy reaches the target (AlgoPerf-style; the default runs "
                    "the recipe's whole budget, as the records do)")
    sp.add_argument("--no-peer", dest="peer", action="store_false",
                    help="do not run the airbench package beside (it runs only where it imports and CUDA is present)")
    sp.add_argument("--runs-dir", default=None, help="where the run directories go (default: a temp folder)")
    sp.add_argument("--out", default=None, help="CSV to append to (default: results/throughput.csv)")
    sp.set_defaults(func=_speed)

    _add_probe_parsers(bsub)
    _add_sweep_parser(bsub)


def _add_sweep_parser(bsub: argparse._SubParsersAction) -> None:
    """Register ``bench sweep``: the sweep machinery's cost per trial, on null trials."""
    wp = bsub.add_parser("sweep", help="trials/min, driver CPU s and memory per trial, disk per trial, merge time",
                         description="Runs `harness sweep --matrix null` (trials that do almost nothing) with N "
                         "trials, locally or on a loopback multi-node cluster, and appends a row per N (kind sweep): "
                         "trials per minute, the driver's CPU seconds per trial and peak RSS, disk (and W&B files) "
                         "per trial, and the time of the final leaderboard merge and docs page.")
    wp.add_argument("--trials", default="100,1000", help="comma list of N (null trials per sweep)")
    wp.add_argument("--nodes", type=int, default=1,
                    help="1: a private local Ray; more: a loopback cluster of that many 1-CPU nodes")
    wp.add_argument("--wandb", choices=["off", "offline"], default="offline", help="W&B logging of the trials")
    wp.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (--nodes 1; default: all)")
    wp.add_argument("--out", default=None, help="CSV to append to (default: results/throughput.csv)")
    wp.set_defaults(func=_sweep)


def _sweep(args: argparse.Namespace) -> int:
    try:
        args.trials = [int(x) for x in checks.comma_list("--trials", args.trials)]
    except ValueError:
        raise HarnessError(f"--trials {args.trials!r}: a comma list of whole numbers, e.g. 100,1000") from None
    checks.at_least("--trials", min(args.trials), 1)
    checks.at_least("--nodes", args.nodes, 1)
    checks.at_least("--num-cpus", args.num_cpus, 1)
    checks.output_file("--out", args.out, "CSV file")
    # imported when the command runs, so `harness --help` stays fast
    from harness.bench.sweep_cost import main

    return main(args)


def _add_probe_parsers(bsub: argparse._SubParsersAction) -> None:
    """Register ``bench probe`` and ``bench roofline``, which share their targets and options."""
    for name, helptext, desc in (
            ("probe", "time each layout x precision of a model's training step; the one `auto` picks on a CPU",
             "Times a model's training step in NCHW and channels_last, fp32 and (where the CPU has native bf16: "
             "amx_bf16/avx512_bf16) bf16 autocast, over several rounds, and prints images/s, the ratio to fp32 "
             "NCHW, the loader's share of a step and the choice train.precision=auto / an unset "
             "train.channels_last resolve to on this CPU (channels_last when >= 1.05x, bf16 when >= 1.2x). "
             "The timings replace the cached ones that auto reads. Rows go to results/throughput.csv (kind probe)."),
            ("roofline", "this CPU's matmul GFLOP/s and the fraction of it training reaches",
             "Prints this machine's fp32 (and native bf16) matmul GFLOP/s, and the training GFLOP/s of each "
             "target under fp32 NCHW and under auto's choice, as a fraction of that peak. Rows go to "
             "results/throughput.csv (kind roofline).")):
        q = bsub.add_parser(name, help=helptext, description=desc)
        q.add_argument("--arch", default="resnet20" if name == "probe" else "resnet20,tv_resnet18",
                       help="comma list of models (harness list models); default %(default)s")
        q.add_argument("--recipe", default="speed94", help="comma list of shipped recipes (harness list recipes), "
                       "each probed with its own batch and settings; '' for none (default %(default)s)")
        q.add_argument("--dataset", default="cifar10", help="the shape of the --arch targets' images (default %(default)s)")
        q.add_argument("--batch-size", type=int, default=None, help="batch of every target (default: its own, 128 for --arch)")
        q.add_argument("--rounds", type=int, default=3, help="timed rounds per candidate, interleaved; the median counts")
        q.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's, all cores)")
        q.add_argument("--data-dir", default=None, help="data root, whose cache holds auto's probe (default: "
                       "$HARNESS_DATA_DIR or ./data)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="dotted override applied to every target, e.g. --set model.kwargs.width=2")
        if name == "probe":
            q.add_argument("--compile", action="store_true",
                           help="also time auto's choice under torch.compile: compile seconds and payback epochs")
        q.add_argument("--out", default=None, help="CSV to append to (default: results/throughput.csv)")
        q.set_defaults(func=_probe if name == "probe" else _roofline)


def _check_loaders(args: argparse.Namespace) -> None:
    """Every option of ``bench loaders``, before any data loads."""
    # imported when the command runs, so `harness --help` stays fast
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
    # imported when the command runs, so `harness --help` stays fast
    from architectures import list_models

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


def _check_speed(args: argparse.Namespace) -> None:
    """Every option of ``bench speed``, before anything runs (each recipe's config is resolved too)."""
    for name in args.recipe:
        RECIPES.get(name)
    if not 0 < args.target <= 1:
        raise HarnessError(f"--target must be a validation accuracy in (0, 1], got {args.target}")
    checks.at_least("--runs", args.runs, 1)
    checks.folder("--data-dir", args.data_dir)
    checks.folder("--runs-dir", args.runs_dir)
    checks.output_file("--out", args.out, "CSV file")

    for name in args.recipe:  # a bad --set is one line now, not after the first recipe's runs
        recipe_config(name, args.target, 0, args.set, args.data_dir, args.runs_dir or "runs", args.stop_at_target)


def _check_probe(args: argparse.Namespace) -> None:
    """Every option of ``bench probe`` and ``bench roofline``, before anything is timed (targets resolved)."""
    # imported when the command runs, so `harness --help` stays fast
    from loaders import DATASETS

    args.targets = targets(args.arch, args.recipe)
    if not args.targets:
        raise HarnessError("--arch and --recipe are both empty: name at least one model or recipe")
    checks.names_in("--dataset", [args.dataset], DATASETS)
    checks.at_least("--batch-size", args.batch_size, 1)
    checks.at_least("--rounds", args.rounds, 1)
    checks.at_least("--threads", args.threads, 1)
    checks.folder("--data-dir", args.data_dir)
    checks.output_file("--out", args.out, "CSV file")
    for t in args.targets:  # an unknown model or recipe, or a bad --set: one line now, not after the first target
        kind, name = t.split(":", 1)
        try:
            target_config(t, args)
        except HarnessError as e:
            raise HarnessError(f"--{kind} {name}: {e}") from None


def _probe(args: argparse.Namespace) -> int:
    _check_probe(args)
    return probe.main(args)


def _roofline(args: argparse.Namespace) -> int:
    _check_probe(args)
    return roofline.main(args)


def _speed(args: argparse.Namespace) -> int:
    _check_speed(args)
    return speed.main(args)


def _loaders(args: argparse.Namespace) -> int:
    # imported when the command runs, so `harness --help` stays fast
    from harness.bench.loaders import main

    _check_loaders(args)
    return main(args)


def _overhead(args: argparse.Namespace) -> int:
    # imported when the command runs, so `harness --help` stays fast
    from harness.bench.overhead import main

    _check_overhead(args)
    return main(args)
