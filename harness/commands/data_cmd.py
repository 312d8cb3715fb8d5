"""``harness data info|prepare``: what a dataset looks like once loaded, and building its caches.

``info`` loads the splits with the given options and prints split sizes, classes, image shape,
mean/std and where the files were found. ``prepare`` does the same load (which writes the decoded
cache, and downloads with ``--download``) and, with ``--ffcv``, writes the FFCV betons of the
three splits. ``loaders`` is imported inside the handlers so that ``harness --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import checks
from harness.errors import HarnessError


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="cifar10, mnist, imagenette or synthetic")
    p.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA_DIR or ./data)")
    p.add_argument("--grayscale", action="store_true", help="convert to one channel")
    p.add_argument("--img-size", type=int, default=None, help="square image size (resize; Imagenette default 64)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="validation share of the training split, in [0, 1) (0: no validation split)")
    p.add_argument("--subset", type=int, default=None,
                   help="keep only the first N images of each class (train and test); a class with fewer keeps all")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation carve-out")
    p.add_argument("--download", action="store_true", help="download missing files (needs internet)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness data info`` and ``harness data prepare``."""
    p = sub.add_parser("data", help="dataset info, caches and FFCV betons",
                       description="Inspect a dataset as the harness loads it, or build its caches.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    info = dsub.add_parser("info", help="split sizes, classes, shape, mean/std and where the files are",
                           description="Load a dataset (building its decode cache if needed) and describe it.")
    _add_options(info)
    info.set_defaults(func=_info)
    prep = dsub.add_parser("prepare", help="build the decoded cache (and FFCV betons with --ffcv)",
                           description="Load a dataset once so its decoded cache exists; with --ffcv also "
                           "write the FFCV .beton files of its train, val and test splits.")
    _add_options(prep)
    prep.add_argument("--ffcv", action="store_true", help="also write FFCV betons (needs ffcv installed)")
    prep.add_argument("--beton-dir", default=None, help="where betons go (default: <cache>/ffcv)")
    prep.set_defaults(func=_prepare)


def _check(args: argparse.Namespace) -> None:
    """Every option, before anything loads (and so before any cache is written)."""
    # imported when the command runs, so `harness --help` stays fast
    from loaders import DATASETS

    checks.names_in("--dataset", [args.dataset], DATASETS)
    checks.at_least("--img-size", args.img_size, 1)
    if not 0 <= args.val_fraction < 1:
        raise HarnessError(f"--val-fraction must be in [0, 1), got {args.val_fraction:g}")
    checks.at_least("--subset", args.subset, 1)
    checks.at_least("--seed", args.seed, 0)
    checks.folder("--data-dir", args.data_dir)
    missing = args.data_dir and not Path(args.data_dir).expanduser().exists()
    if missing and args.dataset != "synthetic" and not args.download:
        raise HarnessError(f"--data-dir {args.data_dir} does not exist; give the folder that holds the {args.dataset} "
                           "files, or add --download")
    if getattr(args, "beton_dir", None):
        if not args.ffcv:
            raise HarnessError("--beton-dir is where --ffcv writes the betons; add --ffcv (or drop --beton-dir)")
        checks.folder("--beton-dir", args.beton_dir)


def _options(args: argparse.Namespace) -> object:
    # imported when the command runs, so `harness --help` stays fast
    from loaders import DataOptions

    _check(args)
    return DataOptions(dataset=args.dataset, data_dir=args.data_dir, grayscale=args.grayscale,
                       img_size=args.img_size, val_fraction=args.val_fraction, subset=args.subset,
                       seed=args.seed, download=args.download)


def _fmt(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _info(args: argparse.Namespace) -> int:
    # imported when the command runs, so `harness --help` stays fast
    from loaders import load_splits

    s = load_splits(_options(args))  # type: ignore[arg-type]
    m = s.meta
    c, h, w = m.shape
    how = f"{args.val_fraction:g} of train, stratified, seed {args.seed}"
    print(f"dataset   {m.name}")
    print(f"source    {m.source}")
    print(f"cache     {m.cache_dir}")
    print(f"splits    {len(s.train)} train / {len(s.val)} val / {len(s.test)} test   (val: {how})")
    print(f"classes   {len(m.classes)}: {', '.join(m.classes)}")
    print(f"shape     {c}x{h}x{w} (C x H x W), uint8")
    print(f"mean      {_fmt(m.mean)}   (train split, [0, 1] units)")
    print(f"std       {_fmt(m.std)}")
    if m.note:
        print(f"note      {m.note}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    # imported when the command runs, so `harness --help` stays fast
    from loaders import load_splits
    from loaders.ffcv_loader import beton_path, write_beton

    s = load_splits(_options(args))  # type: ignore[arg-type]
    print(f"{s.meta.name}: {len(s.train)} train / {len(s.val)} val / {len(s.test)} test; "
          f"decoded cache under {s.meta.cache_dir}")
    if args.ffcv:
        for name, split in (("train", s.train), ("val", s.val), ("test", s.test)):
            if len(split) == 0:
                print(f"  {name:5s} empty, no beton")
                continue
            path = beton_path(split, s.meta, args.beton_dir)
            existed = path.exists()
            write_beton(split, path)
            print(f"  {name:5s} {path}{' (already there)' if existed else ''}")
    return 0
