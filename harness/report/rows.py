"""A report's rows beside ours: each reference of a report matrix joined with the leaderboard row that ran it.

Apart from the page (:mod:`harness.report.reproduce`) so that what reads rows and their costs (the
campaign, the cost column, the cost measure) does not import the page that shows them.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.files import LEADERBOARD_CSV
from harness.provenance import publishable
from harness.report.leaderboard import ranked
from harness.results_csv import read_rows
from harness.run.timing import NATIVE_SIZE
from harness.sweep.matrix import Matrix

#: The smallest tolerance of a *holds* verdict (3 percentage points), widened to 2 x std where larger.
MIN_TOLERANCE = 0.03
#: An assumed effective training rate of one current data-centre GPU, for cost estimates only (stated
#: on every page): well under an A100's dense bf16 peak, since small CIFAR models at small batches
#: are bound by memory traffic and launch overhead rather than by FLOPs.
GPU_FLOPS = 20e12
#: Training images per epoch of each dataset at the default validation fraction (0.1).
TRAIN_IMAGES = {"cifar10": 45_000, "mnist": 54_000, "imagenette": 8_522, "synthetic": 1_000}


@dataclass
class Row:
    """One report row beside ours."""

    ref: dict[str, Any]  # the matrix's reference: row, figure, metric, table, setting, note
    overrides: dict[str, Any]  # the configuration the matrix gives it
    ours: float | None = None
    std: float | None = None
    n: int = 0
    train_s: float | None = None
    test: float | None = None  # our test accuracy where the report gives val (shown beside it)
    source: dict[str, Any] | None = None  # the leaderboard row

    @property
    def diff(self) -> float | None:
        fig = self.ref.get("figure")
        return None if self.ours is None or fig is None else self.ours - float(fig)

    @property
    def tolerance(self) -> float:
        return max(MIN_TOLERANCE, 2 * self.std) if self.std is not None else MIN_TOLERANCE

    @property
    def verdict(self) -> str:
        if self.ours is None:
            return "not run"
        if self.diff is None:
            return "no figure"
        # The boundary holds: 0.63 - 0.60 is 0.030000000000000027 in floats, and no figure has more than
        # 0.01 pp of precision, so a 1e-9 slack decides nothing but the rounding.
        if abs(self.diff) <= self.tolerance + 1e-9:
            return "holds"
        return "better" if self.diff > 0 else "worse"


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def leaderboard_rows(results: Path) -> list[dict[str, Any]]:
    """The rows of ``results/leaderboard.csv`` (none when it does not exist yet)."""
    path = Path(results) / LEADERBOARD_CSV
    return read_rows(path) if path.is_file() else []


def join(m: Matrix, rows: list[dict[str, Any]]) -> list[Row]:
    """Every reference of ``m`` beside the leaderboard row that reproduces it (the best by validation)."""
    out = []
    trials = m.configurations()
    for trial in trials:
        for ref in trial["references"]:
            tag = f"{m.name} {ref['row']}:"
            mine = [r for r in rows if any(part.strip().startswith(tag) for part in str(r.get("reference", "")).split(";"))]
            mine = [r for r in mine if _same_variant(r, trial, ref["row"], trials)]
            row = Row(ref=ref, overrides=trial["overrides"])
            # Full-budget rows only: a two-phase sweep's search rows chose, they are not results.
            # ... and made by committed code: a +dirty row names no code anyone can check out.
            done = [r for r in mine if ranked(r) and publishable(str(r.get("git_sha", "")))
                    and _num(r.get(f"{ref['metric']}_acc_mean")) is not None]
            if done:
                # Several configurations answer a search's row (O2: every Optuna trial): the one with the
                # best validation accuracy is the search's choice. Selection never looks at test accuracy.
                best = max(done, key=lambda r: (_num(r.get("val_acc_mean")) or 0.0, int(_num(r.get("n_seeds")) or 0)))
                row.source, row.n = best, int(_num(best.get("n_seeds")) or 0)
                row.ours = _num(best.get(f"{ref['metric']}_acc_mean"))
                row.std = _num(best.get(f"{ref['metric']}_acc_std"))
                row.train_s = _num(best.get("train_s"))
                row.test = _num(best.get("test_acc_mean")) if ref["metric"] == "val" else None
            out.append(row)
    order = {r["row"]: i for i, r in enumerate(m.all_references())}
    return sorted(out, key=lambda r: order.get(r.ref["row"], 0))


def _same_variant(lb_row: dict[str, Any], trial: dict[str, Any], row_id: str, trials: list[dict[str, Any]]) -> bool:
    """Whether ``lb_row`` ran ``trial``'s own configuration, where several answer one report row (K2: LeakyReLU
    and ELU). Compared on the keys in which those configurations differ, in the row's ``options`` column."""
    peers = [t for t in trials if any(r["row"] == row_id for r in t["references"])]
    if len(peers) < 2:
        return True
    keys = {k for t in peers for k in t["overrides"] if any(p["overrides"].get(k) != t["overrides"].get(k) for p in peers)}
    options = str(lb_row.get("options", ""))
    for k in keys:
        v = trial["overrides"].get(k)
        if v is not None and f"{k}={json.dumps(v)}" not in options and f"{k}={v}" not in options:
            return False
    return True


def cpu_rate(rows: list[Row]) -> float | None:
    """Training FLOP/s this CPU achieved on the rows already run (median), for the cost of the others."""
    rates = []
    for r in rows:
        if r.source is None or not r.train_s:
            continue
        work = training_flops(r.source.get("arch", ""), r.overrides, r.source)
        if work:
            rates.append(work / r.train_s)
    return statistics.median(rates) if rates else None


def training_flops(arch: str, overrides: dict[str, Any], lb_row: dict[str, Any] | None = None) -> float | None:
    """About 3 x forward FLOPs per image x images x epochs (backward costs about twice the forward)."""
    mflops = _num(lb_row.get("mflops")) if lb_row else None
    if mflops is None:
        mflops = model_mflops(arch, overrides)
    if mflops is None:
        return None
    epochs = float(overrides.get("train.epochs", 10))
    images = TRAIN_IMAGES.get(str(overrides.get("data.dataset", "cifar10")), 45_000)
    return 3 * mflops * 1e6 * images * epochs


_MFLOPS: dict[str, float | None] = {}


def forward_mflops(cfg: Any) -> float | None:
    """Forward MFLOPs per image of ``cfg``'s model at the size it trains at (its dataset's native size unless
    ``data.img_size`` says otherwise; the model's default for a dataset of unknown size), with torch's FLOP
    counter (:func:`model_mflops`)."""
    size = cfg.data.img_size or NATIVE_SIZE.get(cfg.data.dataset)
    return model_mflops(cfg.model.arch, {"data.img_size": size, "data.grayscale": cfg.data.grayscale,
                                         "model.kwargs": cfg.model.kwargs})


def model_mflops(arch: str, overrides: dict[str, Any]) -> float | None:
    """Forward MFLOPs per image of ``arch`` with the row's model keywords at its input size.

    Counted with torch's FLOP counter on the model as the row builds it (``resize_to`` included), once
    per configuration; None where the model cannot be built here.
    """
    kwargs = dict(overrides.get("model.kwargs") or {})
    grey = bool(overrides.get("data.grayscale"))  # one input channel: the first conv's FLOPs differ
    key = repr((arch, sorted(kwargs.items()), overrides.get("data.img_size"), grey))
    if key not in _MFLOPS:
        try:
            # torch is heavy: loaded when this runs, so importing this module stays light
            from architectures import model_info

            info = model_info(arch)
            size = max(int(overrides.get("data.img_size") or info.default_img_size), info.min_img_size)
            chans = 1 if grey else 3
            _MFLOPS[key] = _count(arch, chans, size, kwargs)
        except Exception:  # noqa: BLE001 - an unbuildable row has no estimate
            _MFLOPS[key] = None
    return _MFLOPS[key]


def _count(arch: str, chans: int, size: int, kwargs: dict[str, Any]) -> float:
    """:func:`architectures.count_mflops` of the model built on the meta device, where its ops allow: shapes
    only, no compute (a full plan counts ~80 models: a minute of CPU forward passes, under a second here)."""
    import torch

    from architectures import count_mflops, create_model

    def build() -> Any:
        return create_model(arch, num_classes=10, in_chans=chans, img_size=size, **kwargs)

    try:
        with torch.device("meta"):
            model = build()
        return float(count_mflops(model, chans, size))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on the CPU
        return float(count_mflops(build(), chans, size))
