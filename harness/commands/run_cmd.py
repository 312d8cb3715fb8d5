"""``harness run``: one configuration becomes one run directory (the last line printed is its path)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import yaml

from harness.commands import checks
from harness.errors import ConfigError, HarnessError
from harness.run.config import (
    RunConfig,
    apply_overrides,
    config_to_dict,
    field_info,
    load_config,
    parse_override,
)
from harness.run.data import data_options
from harness.run.recipes import RECIPES, recipe_note, recipe_path
from harness.run.resources import check_run_fits, current_shape

# shortcut flag -> dotted config key. Help, valid names and checks come from the key's metadata
# (harness.run.config.knob), so a new registered name shows up here without an edit.
SHORTCUTS: dict[str, str] = {
    "--arch": "model.arch", "--init": "model.init", "--dataset": "data.dataset", "--data-dir": "data.data_dir",
    "--img-size": "data.img_size", "--subset": "data.subset", "--val-fraction": "data.val_fraction",
    "--loader": "data.loader", "--augment": "data.augment", "--strategy": "strategy.name",
    "--weights": "strategy.weights", "--init-from": "strategy.init_from", "--head-layers": "strategy.head_layers",
    "--trainable": "strategy.trainable", "--freeze": "strategy.freeze",
    "--pretrain-dataset": "strategy.pretrain_dataset", "--pretrain-epochs": "strategy.pretrain_epochs",
    "--epochs": "train.epochs", "--batch-size": "train.batch_size", "--optimizer": "optim.name", "--lr": "optim.lr",
    "--momentum": "optim.momentum", "--weight-decay": "optim.weight_decay", "--head-lr": "optim.head_lr",
    "--body-lr": "optim.body_lr", "--lr-scaling": "optim.lr_scaling", "--scheduler": "sched.name",
    "--warmup-epochs": "sched.warmup_epochs", "--label-smoothing": "train.label_smoothing",
    "--grad-clip": "train.grad_clip", "--early-stop": "train.early_stop_patience", "--min-delta": "train.min_delta",
    "--budget": "train.budget", "--target-acc": "train.target_acc", "--precision": "train.precision",
    "--seed": "train.seed", "--workers": "dist.workers", "--cpus-per-worker": "dist.cpus_per_worker",
    "--max-failures": "dist.max_failures", "--checkpoint-every": "train.checkpoint_every", "--out": "out",
    "--name": "name", "--tta": "train.tta", "--ema": "train.ema", "--flip": "data.flip",
    "--translate": "data.translate",
}
# boolean flags: set the key to true (--no-progress sets train.progress to false)
FLAGS: dict[str, str] = {
    "--grayscale": "data.grayscale", "--channels-last": "train.channels_last", "--compile": "train.compile",
    "--deterministic": "train.deterministic", "--nesterov": "optim.nesterov", "--download": "data.download",
    "--no-progress": "train.progress", "--whiten": "model.whiten", "--decoupled": "optim.decoupled",
}


def recipe_help() -> str:
    """The shipped recipes and where each comes from, for ``--help``."""
    return "; ".join(f"{n} ({recipe_note(n).split(': ', 1)[-1].split(' (')[0]})" for n in RECIPES.names())


#: keys without a shortcut flag that ``--help`` lists (``--set KEY=VALUE``): the speed track's knobs
SET_ONLY_HELP = ("model.whiten_bias_epochs", "optim.bn_bias_lr_mult", "optim.muon_lr", "optim.muon_momentum",
                 "sched.peak_at", "sched.floor_factor", "sched.warmup_start_factor", "train.ema_decay",
                 "train.ema_every", "train.ema_ramp", "train.stop_at_target", "train.max_steps_per_epoch",
                 "train.max_steps")


def set_only_help() -> str:
    """The epilog of ``harness run --help``: config keys that take ``--set`` (no shortcut flag)."""
    return "more keys (--set KEY=VALUE): " + "; ".join(f"{k}: {field_info(k).help}" for k in SET_ONLY_HELP)


def _help(key: str) -> str:
    """The help of a config key: its text, then its valid names (from the registry or the choices)."""
    # imported when the command runs, so `harness --help` stays fast
    from harness.run.names import registry_names

    f = field_info(key)
    names = registry_names(f.registry) if f.registry else list(f.choices)
    shown = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ... (harness list)"
    return f.help + (f"; one of: {shown}" if names else "") + f" [{key}]"


class _ConfigHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Help of a shortcut flag from its config key's metadata, computed only when help is printed
    (listing the registries imports the model zoo, which every other command would pay for)."""

    def _expand_help(self, action: argparse.Action) -> str:
        key = getattr(action, "config_key", None)
        return _help(key) if key else super()._expand_help(action)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness run``."""
    p = sub.add_parser(
        "run", help="train one configuration (in process or as Ray Train DDP)",
        description="Train one configuration. Values come from the defaults, then --recipe or --config YAML, "
        "then --set overrides, then the shortcut flags. The resolved config is saved in the run directory, "
        "whose path is the last line printed.",
        formatter_class=_ConfigHelp, epilog=set_only_help(),
    )
    p.add_argument("--config", help="YAML recipe (any subset of the config tree)")
    p.add_argument("--recipe", metavar="NAME", help="a shipped recipe by name (harness list recipes): "
                   + recipe_help())
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set optim.lr=0.05 (repeatable)")
    for flag, key in SHORTCUTS.items():
        p.add_argument(flag, dest="sc_" + key.replace(".", "__"), default=None, metavar="V",
                       help=key).config_key = key
    for flag, key in FLAGS.items():
        a = p.add_argument(flag, dest="fl_" + key.replace(".", "__"), action="store_true", help=key)
        if flag == "--no-progress":
            a.help = "no per-epoch progress lines [train.progress]"
        else:
            a.config_key = key
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run (Ctrl-C, SIGTERM, SIGKILL) from its last checkpoint, with "
                   "the config it was started with; no other options")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    """The RunConfig from defaults, --config, --set and shortcut flags, in that order."""
    if args.config and getattr(args, "recipe", None):
        raise ConfigError("give --recipe NAME or --config FILE, not both (add --set overrides on top of either)")
    if getattr(args, "recipe", None):
        try:
            cfg = load_config(recipe_path(args.recipe))
        except ConfigError as e:
            raise ConfigError(f"--recipe {e}") from None
    elif args.config:
        checks.input_file("--config", args.config, "YAML file")
        try:
            cfg = load_config(args.config)
        except ConfigError as e:
            raise ConfigError(f"--config {e}") from None
    else:
        cfg = RunConfig()
    over: dict[str, object] = {}
    for o in args.set:
        try:
            k, v = parse_override(o)
        except ConfigError:
            raise ConfigError(f"--set {o}: expected KEY=VALUE, e.g. --set optim.lr=0.05") from None
        over[k] = v
    for name, value in vars(args).items():
        if name.startswith("sc_") and value is not None:
            over[name[3:].replace("__", ".")] = value
        elif name.startswith("fl_") and value:
            key = name[3:].replace("__", ".")
            over[key] = key != "train.progress"
    return apply_overrides(cfg, over) if over else cfg


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so it stops as Ctrl-C does (and exits 143, not 130)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, print the summary and the run directory.

    Ctrl-C (exit 130) or SIGTERM (exit 143) mid-run keeps the finished epochs, marks ``summary.json``
    interrupted, and the last line says how to resume.
    """
    # imported when the command runs, so `harness --help` stays fast
    from harness.run.resolve import resolve, settle_probe
    from harness.run.trainer import fit, make_run_dir, resume_run

    if args.resume and _given(args):
        raise HarnessError("--resume RUN_DIR continues a run with the config it was started with; "
                           f"drop the other options ({', '.join(_given(args))})")
    if args.resume:
        run_dir, start = Path(args.resume).expanduser().resolve(), (lambda: resume_run(args.resume))
    else:
        asked = resolve_config(args)
        cfg = resolve(asked, _cluster_gpus(asked), probe=False)
        if not args.print_config:
            preflight(cfg)  # every check before the probe spends seconds timing steps
        cfg = settle_probe(asked, cfg)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
            return 0
        run_dir = make_run_dir(cfg)
        start = lambda: fit(cfg, run_dir=run_dir)  # noqa: E731
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = start()
    except KeyboardInterrupt as e:
        print(f"interrupted: the finished epochs are in {run_dir}; continue with: harness run --resume {run_dir}",
              file=sys.stderr, flush=True)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, old)
        _shutdown_ray()
    print(summary.cli_line())
    print(summary.run_dir)
    return 0


def _cluster_gpus(cfg) -> float | None:
    """With ``RAY_ADDRESS`` and DDP workers, the GPUs of the cluster they run on (the device is theirs, not
    this machine's; see :func:`harness.run.resolve.target_device_type`); None otherwise."""
    if cfg.dist.workers > 0 and os.environ.get("RAY_ADDRESS"):
        # imported when the command runs, so `harness --help` stays fast
        from harness.run.trainer import ray_cluster_gpus

        return ray_cluster_gpus(cfg)
    return None


def _given(args: argparse.Namespace) -> list[str]:
    """The options given besides ``--resume``, as typed (``--config``, ``--set``, ``--epochs``, ...)."""
    flag_of = {"sc_" + k.replace(".", "__"): f for f, k in SHORTCUTS.items()}
    flag_of.update({"fl_" + k.replace(".", "__"): f for f, k in FLAGS.items()})
    given = [f for f, v in (("--config", args.config), ("--recipe", getattr(args, "recipe", None)), ("--set", args.set),
                            ("--print-config", args.print_config)) if v]
    return given + [flag_of[k] for k, v in vars(args).items() if k in flag_of and v]


def preflight(cfg) -> None:
    """What can be known before the run directory is made: a bad name, a file where a folder goes,
    missing dataset files, Ray Train workers this machine can never place (without ``RAY_ADDRESS``).

    Raises:
        HarnessError: one line naming the flag (or config key).
    """
    checks.safe_name("--name", cfg.name or None, "run name")
    checks.folder("--out", cfg.out)
    checks.folder("--data-dir", cfg.data.data_dir)
    if cfg.dist.workers > 0:
        check_run_fits(cfg, current_shape())  # the nodes of $RAY_ADDRESS, or this machine's
    if os.environ.get("RAY_ADDRESS") and cfg.dist.workers > 0:
        return  # the workers, and the data they read, are the cluster's

    if not cfg.data.download:
        data_dir = cfg.data.data_dir
        if data_dir and cfg.data.dataset != "synthetic" and not Path(data_dir).expanduser().exists():
            raise HarnessError(f"--data-dir {data_dir} does not exist; give the folder that holds the "
                               f"{cfg.data.dataset} files, or add --download")
        _check_data_files(cfg)


def _check_data_files(cfg) -> None:
    """Locate the files of the run's datasets (no decoding, nothing written): missing ones are one line now."""
    # imported when the command runs, so `harness --help` stays fast
    from loaders import DATASETS, resolve_data_dir

    for ds in dict.fromkeys([cfg.data.dataset, cfg.strategy.pretrain_dataset or cfg.data.dataset]):
        opts = data_options(cfg, dataset=ds, seed=0)
        DATASETS.get(ds).locate(opts, resolve_data_dir(opts.data_dir))


def _shutdown_ray() -> None:
    """Stop the local Ray instance, if any, so forwarded worker logs are flushed before our last lines."""
    if "ray" not in sys.modules:
        return
    # ray is heavy: imported only where Ray is used
    import ray

    if ray.is_initialized():
        ray.shutdown()
