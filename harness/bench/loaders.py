"""``harness bench loaders``: training-split images/s of each loader backend and augmentation preset.

What is timed: one full pass over CIFAR-10's training split (45,000 images after the validation
carve-out; synthetic CIFAR-shaped data, said so in the row, when the real files are absent),
with the batches delivered on the device and nothing else done with them. One warm-up epoch is
excluded (worker start-up, numba and FFCV compilation), then the median of ``--epochs`` epochs is
reported, with ms per step. CUDA is synchronised before each clock read.

Rows (``kind=loader``) are appended to ``results/throughput.csv`` in ``THROUGHPUT_COLUMNS`` order;
``ratio`` is the row's images/s over the ``torchvision`` backend's with the same preset. A cell that
fails is recorded with its error in ``note`` and the bench goes on.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from harness.errors import HarnessError
from harness.provenance import provenance
from harness.results_csv import THROUGHPUT_COLUMNS, append_rows, results_dir
from loaders.build import build_loader
from loaders.ffcv_loader import ffcv_import_error
from loaders.reader import MissingDataError, resolve_data_dir
from loaders.registries import AUGMENTATIONS, BACKENDS
from loaders.splits import load_splits
from loaders.types import DataOptions, SplitData

# The target on a CPU: tensor/base >= 10x torchvision/base and >= 50,000 images/s.
TARGET_RATIO = 10.0
TARGET_IMG_S = 50_000


def _time_epochs(loader: object, epochs: int, cuda: bool) -> tuple[list[float], int]:
    """Seconds per epoch for ``epochs`` timed epochs after one warm-up epoch; and images per epoch."""
    times: list[float] = []
    n = 0
    for epoch in range(epochs + 1):
        loader.set_epoch(epoch)  # type: ignore[attr-defined]
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 0
        for x, _ in loader:  # type: ignore[attr-defined]
            n += x.shape[0]
        if cuda:
            torch.cuda.synchronize()
        if epoch > 0:
            times.append(time.perf_counter() - t0)
    return times, n


def _default_backends() -> list[str]:
    names = ["torchvision", "tensor"]
    if ffcv_import_error() is None:
        names.append("ffcv")
    return names


def main(args: argparse.Namespace) -> int:
    """Run the loader benchmark (arguments: see ``harness bench loaders --help``); returns 0."""
    backends = args.backends.split(",") if args.backends else _default_backends()
    presets = [p for p in args.presets.split(",") if p]
    for b in backends:
        BACKENDS.get(b)
        if b == "auto":
            raise HarnessError("bench the concrete backends (tensor, torchvision, ffcv), not auto")
    for p in presets:
        AUGMENTATIONS.get(p)
    if args.epochs < 1 or args.batch_size < 1:
        raise HarnessError("--epochs and --batch-size must be >= 1")

    data_dir = resolve_data_dir(args.data_dir)
    try:
        splits = load_splits(DataOptions("cifar10", data_dir=str(data_dir)))
        dataset, note = "cifar10", ""
    except MissingDataError as e:
        print(f"bench loaders: no CIFAR-10 under {data_dir} ({str(e).split(';')[0]}); "
              "using synthetic CIFAR-shaped data")
        splits = load_splits(DataOptions("synthetic", synthetic_size=50_000))
        dataset, note = "synthetic-cifar10", "synthetic CIFAR-shaped data (CIFAR-10 absent)"
    train = splits.train
    if args.limit:
        train = SplitData(train.images[: args.limit].clone(), train.labels[: args.limit].clone())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    prov = provenance(device)
    print(f"bench loaders: {dataset} train split, {len(train)} images, batch {args.batch_size}, {device}, "
          f"median of {args.epochs} epochs after 1 warm-up")

    rows: list[dict] = []
    for backend in backends:
        for preset in presets:
            workers = args.workers if backend in ("torchvision", "ffcv") else 0
            row = {"kind": "loader", "backend": backend, "preset": preset, "dataset": dataset,
                   "batch_size": args.batch_size, "device": device, "precision": "fp32", "world_size": 1,
                   "workers": workers, "note": note, **prov}
            try:
                loader = build_loader(train, splits.meta, backend=backend, train=True, batch_size=args.batch_size,
                                      augment=preset, device=device, seed=0,
                                      num_workers=workers if backend != "tensor" else None)
                times, n = _time_epochs(loader, args.epochs, cuda)
                med = statistics.median(times)
                row.update(img_per_s=n / med, ms_per_step=1000 * med / max(1, len(loader)))
                del loader
            except Exception as e:  # noqa: BLE001 - a failed cell is recorded, the bench goes on
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                row["note"] = "; ".join(filter(None, [note, f"error: {type(e).__name__}: {msg}"]))
            rows.append(row)
            shown = f"{row['img_per_s']:>12,.0f} img/s" if "img_per_s" in row else "       failed"
            print(f"  {backend:12s} {preset:9s} {shown}", flush=True)

    base = {r["preset"]: r.get("img_per_s") for r in rows if r["backend"] == "torchvision"}
    for r in rows:
        if r.get("img_per_s") and base.get(r["preset"]):
            r["ratio"] = r["img_per_s"] / base[r["preset"]]
    out = Path(args.out) if args.out else results_dir() / "throughput.csv"
    append_rows(out, rows, THROUGHPUT_COLUMNS)
    _print_table(rows, out)
    return 0


def _print_table(rows: list[dict], out: Path) -> None:
    print()
    print(f"{'backend':12s} {'preset':9s} {'workers':>7s} {'img/s':>12s} {'ms/step':>9s} {'vs torchvision':>15s}")
    for r in rows:
        ips = f"{r['img_per_s']:,.0f}" if r.get("img_per_s") else "failed"
        ms = f"{r['ms_per_step']:.2f}" if r.get("ms_per_step") else ""
        ratio = f"{r['ratio']:.1f}x" if r.get("ratio") else ""
        print(f"{r['backend']:12s} {r['preset']:9s} {r['workers']:>7} {ips:>12s} {ms:>9s} {ratio:>15s}")
    t = next((r for r in rows if r["backend"] == "tensor" and r["preset"] == "base"), None)
    if t and t.get("img_per_s") and t.get("ratio") and t["device"] == "cpu":
        ok = t["img_per_s"] >= TARGET_IMG_S and t["ratio"] >= TARGET_RATIO
        print(f"\ntarget (tensor/base >= {TARGET_IMG_S:,} img/s and >= {TARGET_RATIO:.0f}x torchvision/base): "
              f"{'met' if ok else 'NOT met'} ({t['img_per_s']:,.0f} img/s, {t['ratio']:.1f}x)")
    print(f"rows appended to {out}")
