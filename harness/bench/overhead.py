"""``harness bench overhead``: what the harness costs on top of a bare PyTorch loop.

Same model, same in-memory data, same batch, measured side by side in one run:
(a) a bare loop written here (forward, backward, step, nothing else), with the torch backend flags the
    harness's loop sets (cuDNN autotuning, TF32);
(b) ``harness run`` in process, as a subprocess (so imports and setup count toward its start-up);
(c) ``harness run --workers 1`` under Ray Train, also a subprocess.
Training images/s are steady state: the first epoch is warm-up and excluded, the median of the rest is
reported. Start-up is the seconds from launching the command to its first optimizer step.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness.errors import HarnessError
from harness.files import METRICS_FILE, THROUGHPUT_CSV
from harness.provenance import provenance
from harness.results_csv import THROUGHPUT_COLUMNS, append_rows, results_dir
from harness.run.config import RunConfig, apply_overrides
from harness.run.measure import apply_backend_flags, autocast, backend_flags
from harness.run.summary import RunSummary
from loaders import DataOptions, load_splits

if TYPE_CHECKING:
    from harness.run.resolve import ResolvedConfig

MODES = ("bare", "inprocess", "ray")
# What the bench checks: harness images/s as a fraction of the bare loop's, Ray's seconds to a first step.
RATIO_TARGETS = (("inprocess", 0.95), ("ray", 0.90))
RAY_FIRST_STEP_S = 20

VAL_FRACTION = 0.05


def _data_args(n_train: int) -> dict:
    # synthetic_size counts images before the validation carve-out
    return {"dataset": "synthetic", "synthetic_size": int(round(n_train / (1 - VAL_FRACTION))),
            "val_fraction": VAL_FRACTION, "num_classes": 10}


def run_overrides(arch: str, n_train: int, batch_size: int, epochs: int, workers: int) -> dict[str, object]:
    """The config of the harness runs, as dotted overrides: the same model, data, batch and optimizer."""
    d = _data_args(n_train)
    return {"model.arch": arch, "data.dataset": "synthetic", "data.synthetic_size": d["synthetic_size"],
            "data.val_fraction": VAL_FRACTION, "train.epochs": epochs, "train.batch_size": batch_size,
            "data.loader": "tensor", "data.augment": "none", "optim.name": "sgd", "optim.lr": 0.05,
            "sched.name": "constant", "dist.workers": workers, "train.measure_inference": False,
            "train.progress": False}


def _resolved(arch: str, n_train: int, batch_size: int, epochs: int) -> ResolvedConfig:
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from harness.run.resolve import resolve

    return resolve(apply_overrides(RunConfig(), run_overrides(arch, n_train, batch_size, epochs, 0)))


def _settings(cfg: ResolvedConfig) -> tuple[torch.device, str, bool]:
    return torch.device("cuda" if cfg.dist.use_gpu else "cpu"), cfg.train.precision, bool(cfg.train.channels_last)


def speed_settings(arch: str, n_train: int, batch_size: int, epochs: int) -> tuple[torch.device, str, bool]:
    """Device, precision and memory layout the harness runs resolve to (the bare loop uses the same)."""
    return _settings(_resolved(arch, n_train, batch_size, epochs))


def bare_loop(arch: str, n_train: int, batch_size: int, epochs: int) -> list[float]:
    """Images/s per epoch of the plainest correct loop over the same normalised data, on the same device,
    in the same precision, memory layout and torch backend flags as the harness runs (:func:`speed_settings`,
    :func:`~harness.run.measure.backend_flags`)."""
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures import create_model

    cfg = _resolved(arch, n_train, batch_size, epochs)
    device, precision, channels_last = _settings(cfg)
    # The harness's loop sets these before it trains (cuDNN autotuning on CUDA, TF32 for fp32); without
    # them the bare loop would be timed on other kernels and the ratio would not compare like with like.
    apply_backend_flags(backend_flags(precision, cfg.train.deterministic, device.type))
    d = _data_args(n_train)
    splits = load_splits(DataOptions(dataset="synthetic", synthetic_size=d["synthetic_size"],
                                     val_fraction=VAL_FRACTION, num_classes=10))
    meta = splits.meta
    mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
    std = torch.tensor(meta.std).view(1, -1, 1, 1)
    x_all = ((splits.train.images.float() / 255.0 - mean) / std).to(device)  # meta.mean/std are in [0, 1] units
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    y_all = splits.train.labels.to(device)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_chans=meta.shape[0], img_size=meta.shape[-1]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    crit = nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_all), device=device)
        t = time.perf_counter()
        n = 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            with autocast(precision, device):
                loss = crit(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            n += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(n / (time.perf_counter() - t))
    return rates


def harness_run(arch: str, n_train: int, batch_size: int, epochs: int, workers: int) -> tuple[list[float], float]:
    """Run ``harness run`` as a subprocess; return its per-epoch images/s and seconds to the first step."""
    with tempfile.TemporaryDirectory(prefix="harness-overhead-") as out:
        over = run_overrides(arch, n_train, batch_size, epochs, workers)
        cmd = [sys.executable, "-m", "harness", "run", "--out", out]
        for k, v in over.items():
            cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
        if workers:
            cmd += ["--cpus-per-worker", str(os.cpu_count() or 1)]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"harness run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        run_dir = Path(proc.stdout.strip().splitlines()[-1])
        summary = RunSummary.read(run_dir)
        if summary is None or summary.first_step_at is None:
            raise RuntimeError(f"harness run wrote no summary with a first step in {run_dir}")
        with open(run_dir / METRICS_FILE) as fh:
            rates = [float(r["train_img_per_s"]) for r in csv.DictReader(fh)]
        return rates, summary.first_step_at - t0


def _check(args: argparse.Namespace) -> list[str]:
    """The modes asked for, checked before anything is measured."""
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise HarnessError(f"unknown mode '{m}' (valid: {', '.join(MODES)})")
    if args.epochs < 2:
        raise HarnessError("--epochs must be >= 2 (the first epoch is warm-up)")
    return modes


def _measure(args: argparse.Namespace, modes: list[str]) -> dict[str, dict]:
    """Per mode: steady-state images/s (median after the warm-up epoch), seconds to the first step, all epochs."""
    results: dict[str, dict] = {}
    for m in modes:
        print(f"overhead: measuring {m} ...", flush=True)
        if m == "bare":
            rates, first = bare_loop(args.arch, args.n_train, args.batch_size, args.epochs), None
        else:
            rates, first = harness_run(args.arch, args.n_train, args.batch_size, args.epochs,
                                       0 if m == "inprocess" else 1)
        results[m] = {"img_per_s": statistics.median(rates[1:]), "first_step_s": first, "epochs": rates}
    return results


def _table_rows(args: argparse.Namespace, results: dict[str, dict], base: float | None) -> list[dict]:
    """Print the table; return its ``throughput.csv`` rows (ratios are against the bare loop)."""
    device, precision, _ = speed_settings(args.arch, args.n_train, args.batch_size, args.epochs)
    prov = provenance(device.type)
    rows = []
    print(f"\n{'mode':<10} {'img/s':>9} {'ms/step':>8} {'ratio':>6} {'first step':>11}")
    for m, r in results.items():
        ratio = r["img_per_s"] / base if base else None
        ms = 1000 * args.batch_size / r["img_per_s"]
        first = f"{r['first_step_s']:.1f}s" if r["first_step_s"] is not None else "-"
        print(f"{m:<10} {r['img_per_s']:>9.0f} {ms:>8.1f} {ratio if ratio else 0:>6.3f} {first:>11}")
        rows.append({"kind": "overhead", "arch": args.arch, "backend": m, "dataset": "synthetic",
                     "batch_size": args.batch_size, "device": device.type,
                     "precision": precision, "world_size": 1, "workers": 1 if m == "ray" else 0,
                     "img_per_s": r["img_per_s"], "ms_per_step": ms, "first_step_s": r["first_step_s"],
                     "ratio": ratio, "note": f"median of epochs 2-{args.epochs}; n_train={args.n_train}", **prov})
    return rows


def _print_targets(results: dict[str, dict], base: float | None) -> None:
    if base:
        for m, target in RATIO_TARGETS:
            if m in results:
                ok = results[m]["img_per_s"] / base >= target
                print(f"target {m}/bare >= {target}: {'met' if ok else 'MISSED'}")
    first = results.get("ray", {}).get("first_step_s")
    if first is not None:
        print(f"target ray first step <= {RAY_FIRST_STEP_S} s: {'met' if first <= RAY_FIRST_STEP_S else 'MISSED'}")


def main(args: argparse.Namespace) -> int:
    """Measure the modes, print the table, append rows to results/throughput.csv.

    Raises:
        HarnessError: an unknown mode, or fewer than two epochs.
    """
    modes = _check(args)
    results = _measure(args, modes)
    base = results.get("bare", {}).get("img_per_s")
    rows = _table_rows(args, results, base)
    out = Path(args.out) if args.out else results_dir() / THROUGHPUT_CSV
    append_rows(out, rows, THROUGHPUT_COLUMNS)
    _print_targets(results, base)
    print(f"rows appended to {out}")
    return 0
