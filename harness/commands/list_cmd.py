"""``harness list KIND``: what is registered (models with their size and cost, datasets, loaders, ...)."""

from __future__ import annotations

import argparse
import fnmatch
import importlib

from harness.errors import HarnessError
from harness.registry import suggest
from harness.run.recipes import RECIPES, recipe_note
from harness.sweep.matrix import list_presets

# kind -> (module, attribute holding the Registry); imported lazily so `harness --help` stays fast.
REGISTRIES: dict[str, tuple[str, str]] = {
    "datasets": ("loaders", "DATASETS"),
    "loaders": ("loaders", "BACKENDS"),
    "augment": ("loaders", "AUGMENTATIONS"),
    "strategies": ("harness.run.strategies", "STRATEGIES"),
    "optimizers": ("harness.run.optim", "OPTIMIZERS"),
    "schedulers": ("harness.run.optim", "SCHEDULERS"),
}
KINDS = ["models", "presets", "recipes", *REGISTRIES]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness list``."""
    p = sub.add_parser("list", help="list registered models, presets, datasets, loaders, ...",
                       description="List what is registered under one kind, by name.")
    p.add_argument("kind", choices=KINDS, help="what to list")
    p.add_argument("pattern", nargs="?", default="*",
                   help="glob filter on names, e.g. 'resnet*'; a pattern that matches nothing is an error "
                   "naming the closest names")
    p.set_defaults(func=run)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


def _matching(kind: str, names: list[str], pattern: str) -> list[str]:
    """The names matching the glob ``pattern``.

    Raises:
        HarnessError: nothing matches; the message names the closest and the valid names.
    """
    found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not found:
        close = suggest(pattern.strip("*?[]"), names)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        shown = ", ".join(names) if len(names) <= 40 else ", ".join(names[:40]) + ", ..."
        raise HarnessError(f"no {kind} match '{pattern}'{hint} (valid: {shown})")
    return found


def run(args: argparse.Namespace) -> int:
    """Print the table for ``args.kind`` (the names matching ``args.pattern``)."""
    if args.kind == "models":
        # imported when the command runs, so `harness --help` stays fast
        from architectures import list_models, model_info

        rows = []
        for name in _matching("models", list_models(), args.pattern):
            info = model_info(name)
            rows.append([name, info.family, f"{info.params / 1e6:.3f}", f"{info.mflops:.1f}",
                         f"{info.default_img_size}", info.source])
        _print_table(["name", "family", "params_M", "MFLOPs", "input", "source"], rows)
        return 0
    if args.kind == "presets":
        presets = dict(list_presets())
        names = _matching("presets", list(presets), args.pattern)
        _print_table(["preset", "trials", "description"], [[n, _trials(n), presets[n]] for n in names])
        return 0
    if args.kind == "recipes":
        names = _matching("recipes", RECIPES.names(), args.pattern)
        _print_table(["recipe", "source"], [[n, recipe_note(n)[:160]] for n in names])
        return 0
    mod, attr = REGISTRIES[args.kind]
    reg = getattr(importlib.import_module(mod), attr)
    for name in _matching(args.kind, reg.names(), args.pattern):
        print(name)
    return 0


def _trials(preset: str) -> str:
    """How many trials a sweep of ``preset`` makes (grid cells x samples, or its random draws); see `harness plan`."""
    # imported when listed, so `harness --help` stays fast
    from harness.errors import HarnessError
    from harness.sweep.matrix import load_matrix

    try:
        return str(len(load_matrix(preset).configurations()))
    except HarnessError as e:  # a preset that does not load says so in its row, the others still list
        return f"error: {e}"
