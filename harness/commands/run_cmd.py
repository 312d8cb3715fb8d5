"""``harness run``: one configuration becomes one run directory (the last line printed is its path)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import typing
from pathlib import Path

import yaml

from harness.commands import checks
from harness.errors import ConfigError, HarnessError
from harness.run.config import (
    FieldInfo,
    RunConfig,
    apply_overrides,
    config_to_dict,
    field_info,
    fields,
    load_config,
    parse_override,
)
from harness.run.data import data_options
from harness.run.knobs import base_type, range_text
from harness.run.recipes import RECIPES, recipe_note, recipe_path
from harness.run.resources import check_run_fits, current_shape

#: The ``dest`` prefix of the shortcut flags: ``config:optim.lr`` holds what ``--lr`` was given.
_DEST = "config:"


def recipe_help() -> str:
    """The shipped recipes and where each comes from, for ``--help``."""
    return "; ".join(f"{n} ({recipe_note(n).split(': ', 1)[-1].split(' (')[0]})" for n in RECIPES.names())


def set_only_help() -> str:
    """The epilog of ``harness run --help``: every config key without a shortcut flag, one per line.

    Each entry is ``TERM<tab>KEY``; :class:`_ConfigHelp` writes the key's help in place of ``KEY`` when help
    is printed (it lists registries, which import the model zoo).
    """
    lines = ["config keys without a shortcut flag, given as --set KEY=VALUE:"]
    lines += [f"--set {key}={_metavar(f)}\t{key}" for key, f in fields().items() if not f.flag]
    return "\n".join(lines)


def _metavar(f: FieldInfo) -> str:
    """What a key takes, from its annotation: ``N``, ``X``, ``NAME``, ``TEXT``, ``LIST``, ``MAP`` or ``BOOL``."""
    tp = base_type(f.type)
    if f.registry or f.choices:
        return "NAME"
    if tp is int:
        return "N"
    if tp is bool:
        return "BOOL"
    if tp is float or set(typing.get_args(tp)) == {int, float}:
        return "X"
    if tp is str:
        return "TEXT"
    return "MAP" if tp is dict else "LIST"


def _help(key: str) -> str:
    """The help of a config key: its text, its valid names (registry or choices) or range, its default, the key."""
    # imported when the command runs, so `harness --help` stays fast
    from harness.run.names import registry_names

    f = field_info(key)
    names = registry_names(f.registry) if f.registry else list(f.choices)
    shown = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ... (harness list)"
    text = f.help + (f"; one of: {shown}" if names else "") + (f"; {range_text(f)}" if range_text(f) else "")
    if f.flag and f.flag.startswith("--no-"):
        text = f"off: {text}"
    elif f.default not in (None, "", [], {}) and not (f.flag and base_type(f.type) is bool):
        text += f" (default: {f.default})"
    return f"{text} [{key}]"


class _ConfigHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Help of a shortcut flag from its config key's metadata, computed only when help is printed
    (listing the registries imports the model zoo, which every other command would pay for); the epilog's
    ``TERM<tab>KEY`` entries become the key's help, laid out as the options are."""

    def _expand_help(self, action: argparse.Action) -> str:
        key = getattr(action, "config_key", None)
        return _help(key) if key else super()._expand_help(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\t" not in text:
            return super()._fill_text(text, width, indent)
        out = []
        for line in text.splitlines():
            term, tab, key = line.partition("\t")
            if not tab:
                out.append(super()._fill_text(line, width, indent))
                continue
            head, pad = f"{indent}  {term}", indent + " " * 24
            if len(head) < len(pad) - 1:
                out.append(textwrap.fill(_help(key), width, initial_indent=head.ljust(len(pad)), subsequent_indent=pad))
            else:
                out += [head, textwrap.fill(_help(key), width, initial_indent=pad, subsequent_indent=pad)]
        return "\n".join(out)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness run``: its shortcut flags are the config keys declared with ``flag=``."""
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
    for key, f in fields().items():
        if not f.flag:
            continue
        if base_type(f.type) is bool:  # a switch: on, or off for --no-...
            a = p.add_argument(f.flag, dest=_DEST + key, action="store_const", const=not f.flag.startswith("--no-"),
                               help=key)
        else:  # the value stays text: the config's own parsing and checks name the key
            a = p.add_argument(f.flag, dest=_DEST + key, metavar=_metavar(f), help=key)
        a.config_key = key  # _ConfigHelp writes the help from the key's declaration
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run (Ctrl-C, SIGTERM, SIGKILL) from its last checkpoint, with "
                   "the config it was started with; only the options that change no result may be given: "
                   + ", ".join(f.flag for f in fields().values() if f.flag and f.resume))
    p.set_defaults(func=run)


def _flag_values(args: argparse.Namespace) -> dict[str, object]:
    """``{config key: value}`` of the shortcut flags given."""
    return {dest[len(_DEST):]: v for dest, v in vars(args).items() if dest.startswith(_DEST) and v is not None}


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
    over.update(_flag_values(args))
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
        shown = _flag_values(args)  # only options that change no result get here (see _given)
        checks.folder("--data-dir", shown.get("data.data_dir"))
        run_dir = Path(args.resume).expanduser().resolve()
        start = lambda: resume_run(args.resume, shown)  # noqa: E731
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
    """The options given besides ``--resume`` that would change what runs, as typed (``--config``, ``--set``,
    ``--epochs``, ...): not those declared ``resume=True`` (``--no-progress``, ``--data-dir``)."""
    given = [f for f, v in (("--config", args.config), ("--recipe", getattr(args, "recipe", None)), ("--set", args.set),
                            ("--print-config", args.print_config)) if v]
    return given + [field_info(key).flag for key in _flag_values(args) if not field_info(key).resume]


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
