"""Leaderboard rows: run records -> ``results/leaderboard.csv`` and ``throughput.csv``.

Shape (after ffcv-imagenet's ``agg.csv`` and timm's results CSVs): one flat row per configuration,
in a fixed documented column order, with provenance columns and an ``error`` column instead of a
missing row. A configuration is everything that changes results except the seed and the fold
(:func:`~harness.run.config.config_id`); its seeds and folds are aggregated into one row (mean and
sample standard deviation). Rows are merged by ``config_id``: a rerun replaces its own row and keeps
the others, and every write is atomic and locked (:func:`harness.results_csv.merge_rows`), so
concurrent sweeps lose nothing.

Model selection is on validation accuracy only: the best configuration per architecture is the one
with the highest ``val_acc_mean``. Test accuracy is measured once, at the end of a run, on the
weights of its best validation epoch. ``train_s`` is read from the summary as it is: a transfer
run's summary already counts its pretraining stage.

Only full-budget runs are ranked. Trials the scheduler stopped (``stopped_by_scheduler``) have no
test accuracy and never share a table with finished runs: each is a row of ``results/pruned.csv``
(:func:`pruned_rows`) with the rung (epoch) it reached. Every row carries its ``phase``: ``search``
(phase one of a two-phase sweep: it chose what to rerun, and is never ranked), ``rerun`` (phase two:
the full-budget reruns with seeds), ``single`` (a one-phase sweep) or ``run`` (a ``harness run``
directory); :func:`ranked` says which rows a table ranks. Leaderboard rows are keyed by
``(config_id, phase)``, so a configuration's search trial and its reruns are separate rows.

The records come from :mod:`harness.report.records`, the docs page from :mod:`harness.report.docs`.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.files import LEADERBOARD_CSV, PRUNED_CSV, THROUGHPUT_CSV
from harness.report.records import RunRecord
from harness.results_csv import THROUGHPUT_COLUMNS, merge_rows, results_dir
from harness.run.config import NOT_IDENTITY, RunConfig, config_id, flat_config
from harness.run.summary import RunSummary

#: The documented column order of ``results/leaderboard.csv`` (see docs/leaderboard.md).
DOCUMENTED_COLUMNS: list[str] = [
    "dataset", "arch", "strategy", "optimizer", "scheduler", "augment", "epochs_planned", "epochs_run",
    "batch_size", "lr", "params_m", "mflops", "n_seeds", "test_acc_mean", "test_acc_std", "val_acc_mean",
    "test_loss", "time_to_target_s", "train_s", "stop_reason", "device", "world_size", "torch", "ray",
    "git_sha", "sweep", "date", "error",
]
#: Appended after the documented columns: what else tells configurations apart, and the row key.
EXTRA_COLUMNS: list[str] = ["weight_decay", "seeds", "folds", "hardware", "options", "val_acc_std", "reference",
                             "lr_reductions", "phase", "total_s", "cpu_s", "config_id"]
LEADERBOARD_COLUMNS: list[str] = DOCUMENTED_COLUMNS + EXTRA_COLUMNS
#: ``results/pruned.csv``: one row per trial the scheduler stopped, with the rung (epoch) it reached.
PRUNED_COLUMNS: list[str] = [
    "dataset", "arch", "strategy", "optimizer", "scheduler", "augment", "batch_size", "lr", "weight_decay",
    "epochs_planned", "rung", "val_acc_at_rung", "best_val_acc", "train_s", "seed", "fold", "phase", "sweep",
    "date", "options",
    # the leaderboard's provenance columns: a pruned trial names its code and machine as a ranked row does
    "device", "world_size", "torch", "ray", "git_sha", "hardware",
    "config_id",
]
#: The phases whose rows a leaderboard ranks; ``search`` rows (phase one of a two-phase sweep) only chose.
RANKED_PHASES = ("rerun", "single", "run", "")  # "": a row written before phases existed

# Keys already shown in their own column (or not results-relevant), left out of ``options``.
_IN_COLUMNS = {"model.arch", "data.dataset", "data.subset", "data.img_size", "data.grayscale", "strategy.name",
               "optim.name", "sched.name", "data.augment", "train.epochs", "train.batch_size", "optim.lr",
               "optim.weight_decay", "data.folds", "name", "out", "data.data_dir", "dist.storage",
               "dist.workers", *NOT_IDENTITY}


def dataset_label(cfg: RunConfig) -> str:
    """The dataset as the tables group it: subsets, resizes and grayscale are different benchmarks."""
    d = cfg.data
    label = d.dataset
    if d.subset:
        label += f"[{d.subset}/class]"
    if d.img_size:
        label += f"[{d.img_size}px]"
    if d.grayscale:
        label += "[gray]"
    return label


def options_label(cfg: RunConfig) -> str:
    """The settings that differ from the defaults and have no column of their own (``k=v`` pairs).

    The defaults are resolved for the device the run used, without a probe, so ``precision: auto`` that
    became fp32 on a CPU is not shown as a choice (a layout the probe chose is, since it ran).
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    from harness.run.resolve import device_defaults

    base = RunConfig()
    device_defaults(base, "cuda" if cfg.dist.use_gpu else "cpu", probe=False)
    have, default = flat_config(cfg), flat_config(base)
    parts = []
    for k in sorted(have):
        if k in _IN_COLUMNS or have[k] == default.get(k):
            continue
        v = have[k]
        parts.append(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Leaderboard rows: one per configuration


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(vals) / len(vals) if vals else None


def _std(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return statistics.stdev(vals) if len(vals) >= 2 else None


def _best_val(rec: RunRecord) -> float | None:
    """The run's selected validation accuracy; a run stopped before its summary has its best epoch's."""
    if rec.summary is not None and rec.summary.val_acc is not None:
        return float(rec.summary.val_acc)
    vals = [r["val_acc"] for r in rec.reports if r.get("val_acc") is not None]
    return max(vals) if vals else None


def _train_s(rec: RunRecord) -> float | None:
    """The run's training time; a run stopped before its summary has the sum of its epochs'."""
    if rec.summary is not None and rec.summary.train_s is not None:
        return float(rec.summary.train_s)
    secs = [r.get("epoch_s") for r in rec.reports if r.get("epoch_s") is not None]
    return sum(secs) if secs else None


def _epochs_run(rec: RunRecord) -> int:
    return int(rec.summary.epochs_run or 0) if rec.summary is not None else len(rec.reports)


def _model_cost(arch: str) -> tuple[float | None, float | None]:
    """Params and MFLOPs from the model registry, for runs stopped before their summary."""
    try:
        # torch is heavy: loaded when this runs, so importing this module stays light
        from architectures import model_info

        info = model_info(arch)
        return info.params, info.mflops
    except Exception:  # noqa: BLE001 - an unknown or unbuildable arch leaves the columns empty
        return None, None


def _config_columns(cfg: RunConfig) -> dict[str, Any]:
    """The columns that say what ran: they are the same for every run of a configuration."""
    return {
        "dataset": dataset_label(cfg), "arch": cfg.model.arch, "strategy": cfg.strategy.name,
        "optimizer": cfg.optim.name, "scheduler": cfg.sched.name, "augment": cfg.data.augment,
        "epochs_planned": cfg.train.epochs, "batch_size": cfg.train.batch_size, "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay, "folds": cfg.data.folds or "", "options": options_label(cfg),
    }


def _model_columns(cfg: RunConfig, s0: RunSummary | None) -> dict[str, Any]:
    """Params and MFLOPs: from a summary, else from the model registry."""
    params = s0.params if s0 is not None else None
    mflops = s0.mflops_per_img if s0 is not None else None
    if params is None or mflops is None:
        p2, m2 = _model_cost(cfg.model.arch)
        params = params if params is not None else p2
        mflops = mflops if mflops is not None else m2
    return {"params_m": params / 1e6 if params is not None else None, "mflops": mflops}


def _result_columns(recs: Sequence[RunRecord], summaries: Sequence[RunSummary]) -> dict[str, Any]:
    """What the runs of one configuration scored and cost: means (and the test accuracy's std) over them."""
    tests = [s.test_acc for s in summaries if s.test_acc is not None]
    return {
        "epochs_run": max(_epochs_run(r) for r in recs), "n_seeds": len(recs),
        "test_acc_mean": _mean(tests), "test_acc_std": _std(tests),
        "val_acc_mean": _mean([_best_val(r) for r in recs]), "val_acc_std": _std([_best_val(r) for r in recs]),
        "test_loss": _mean([s.test_loss for s in summaries]),
        "time_to_target_s": _mean([s.time_to_target_s for s in summaries]),
        "train_s": _mean([_train_s(r) for r in recs]),
        # Wall and CPU time of a whole run (data, validation and test included): what a budget row got.
        "total_s": _mean([s.total_s for s in summaries]), "cpu_s": _mean([s.cpu_s for s in summaries]),
        "stop_reason": "+".join(sorted({r.stop_reason for r in recs})),
        "error": next((r.error for r in recs if r.error), ""),
        "seeds": " ".join(map(str, sorted({r.config.train.seed for r in recs}))),
        # per run, in seed order: "0 0" says the plateau schedule never fired in either run
        "lr_reductions": " ".join(str(s.lr_reductions) for s in sorted(summaries, key=lambda s: s.seed or 0)
                                  if s.lr_reductions is not None),
        "phase": recs[0].phase,
    }


def _provenance_columns(recs: Sequence[RunRecord], s0: RunSummary | None, cfg: RunConfig) -> dict[str, Any]:
    """Where and with what the runs ran (the first run's summary over its trial's record), which sweeps, when."""
    summary_prov = s0.provenance() if s0 is not None else {}
    prov = {**recs[0].provenance, **{k: v for k, v in summary_prov.items() if v not in (None, "")}}
    return {
        "device": prov.get("device", ""), "world_size": prov.get("world_size") or (cfg.dist.workers or 1),
        "torch": prov.get("torch", ""), "ray": prov.get("ray", ""), "git_sha": prov.get("git_sha", ""),
        "hardware": prov.get("hardware", ""), "sweep": ",".join(sorted({r.sweep for r in recs if r.sweep})),
        "date": max((r.date for r in recs if r.date), default=""),
    }


def reference_label(recs: Sequence[RunRecord]) -> str:
    """The report rows a configuration reproduces, as ``report row: metric figure`` joined by ``; ``."""
    seen: dict[str, None] = {}
    for r in recs:
        for ref in r.references:
            fig = "n/a" if ref.get("figure") is None else f"{float(ref['figure']):.4g}"
            seen[f"{ref.get('report', '')} {ref['row']}: {ref['metric']} {fig}".strip()] = None
    return "; ".join(seen)


def _row(cid: str, recs: Sequence[RunRecord]) -> dict[str, Any]:
    """The leaderboard row of one configuration's runs, in column order."""
    cfg = recs[0].config
    summaries = [r.summary for r in recs if r.summary is not None]
    s0 = summaries[0] if summaries else None
    row = {**_config_columns(cfg), **_model_columns(cfg, s0), **_result_columns(recs, summaries),
           **_provenance_columns(recs, s0, cfg), "reference": reference_label(recs), "config_id": cid}
    return {c: row[c] for c in LEADERBOARD_COLUMNS}


def aggregate(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One leaderboard row per configuration and phase (seeds and folds aggregated).

    Interrupted runs, combinations the matrix excludes and trials the scheduler stopped (those are
    :func:`pruned_rows`) are left out.
    """
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        if r.finished and r.stop_reason != "excluded" and not r.pruned:
            groups.setdefault((config_id(r.config), r.phase), []).append(r)
    return [_row(cid, recs) for (cid, _phase), recs in groups.items()]


def ranked(row: dict[str, Any]) -> bool:
    """Whether a leaderboard row is ranked: a full-budget run outside a two-phase sweep's search phase.

    Rows written before pruned trials had their own table may still say ``stopped_by_scheduler``.
    """
    return str(row.get("phase") or "") in RANKED_PHASES and "stopped_by_scheduler" not in str(
        row.get("stop_reason") or "")


def pruned_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per trial the scheduler stopped: what it was, the rung (epoch) it reached and its val accuracy."""
    out = []
    for r in records:
        if not r.pruned:
            continue
        cfg = r.config
        vals = [x["val_acc"] for x in r.reports if x.get("val_acc") is not None]
        at_rung = next((x["val_acc"] for x in r.reports if x.get("epoch") == r.epochs_reached), None)
        row = {**_config_columns(cfg), "rung": r.epochs_reached, "val_acc_at_rung": at_rung,
               "best_val_acc": max(vals) if vals else None, "train_s": _train_s(r), "seed": cfg.train.seed,
               "fold": cfg.data.fold if cfg.data.folds else "", "phase": r.phase,
               **_provenance_columns([r], r.summary, cfg), "sweep": r.sweep, "date": r.date,
               "config_id": config_id(cfg)}
        out.append({c: row.get(c) for c in PRUNED_COLUMNS})
    return out


# ---------------------------------------------------------------------------------------------
# Throughput rows: one per (arch, loader, dataset, device, ...) key


def _throughput_row(r: RunRecord, s: RunSummary) -> dict[str, Any]:
    """One run's throughput row; what its summary leaves empty comes from its config."""
    cfg = r.config
    return {
        "kind": "sweep" if r.sweep else "run", "arch": s.arch or cfg.model.arch, "backend": s.loader,
        "preset": cfg.data.augment, "dataset": dataset_label(cfg),
        "batch_size": s.batch_size or cfg.train.batch_size, "device": s.device,
        "precision": s.precision or cfg.train.precision, "world_size": s.world_size or 1,
        "hardware": s.hardware, "torch": s.torch, "ray": s.ray, "git_sha": s.git_sha, "date": r.date,
        "img_per_s": s.train_img_per_s, "infer_img_per_s": s.infer_img_per_s, "peak_mem_mb": s.peak_mem_mb,
        "note": f"sweep {r.sweep}" if r.sweep else "harness run", "seeds": cfg.train.seed,
    }


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one key as one: the last row's labels, the medians of its measurements."""
    row = dict(rows[-1])
    for k in ("img_per_s", "infer_img_per_s", "peak_mem_mb"):
        vals = [float(x[k]) for x in rows if x.get(k) not in (None, "")]
        row[k] = statistics.median(vals) if vals else None
    if row["img_per_s"]:
        row["ms_per_step"] = 1000 * float(row["batch_size"]) / row["img_per_s"]
    row["note"] = f"{row['note']}; median of {len(rows)} run(s)"
    row["runs"] = len(rows)
    row["seeds"] = " ".join(sorted({str(x["seeds"]) for x in rows if x.get("seeds") not in (None, "")}, key=int))
    return row


def throughput_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Training and inference images/s and peak memory, median over the runs of one key.

    Only runs with a summary that measured training throughput have a row.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.summary is None or not r.summary.train_img_per_s:
            continue
        row = _throughput_row(r, r.summary)
        groups.setdefault(throughput_key(row), []).append(row)
    return [_median_row(rows) for rows in groups.values()]


def throughput_key(row: dict[str, Any]) -> tuple:
    """Rows of ``throughput.csv`` written by sweeps are keyed by these columns; the sha among them, so that a
    figure is a median over runs of one code version only and names it."""
    return tuple(str(row.get(k, "")) for k in ("kind", "arch", "backend", "dataset", "device", "hardware",
                                               "precision", "batch_size", "world_size", "git_sha"))


def _lb_key(row: dict[str, Any]) -> tuple:
    return (str(row.get("config_id", "")), str(row.get("phase") or ""))


def _pruned_key(row: dict[str, Any]) -> tuple:
    return tuple("" if row.get(k) is None else str(row.get(k)) for k in ("config_id", "phase", "seed", "fold"))


def write_results(records: Sequence[RunRecord], out_dir: Path | None = None) -> tuple[int, int]:
    """Merge the records into ``leaderboard.csv``, ``pruned.csv`` and ``throughput.csv`` under ``out_dir``.

    Args:
        records: the runs to merge (:func:`harness.report.records.collect`).
        out_dir: the CSV folder; default ``$HARNESS_RESULTS_DIR`` or ``./results``.

    Returns:
        (leaderboard rows written, throughput rows written).
    """
    out_dir = Path(out_dir) if out_dir is not None else results_dir()
    rows = aggregate(records)
    if rows:
        merge_rows(out_dir / LEADERBOARD_CSV, rows, LEADERBOARD_COLUMNS, _lb_key)
    pruned = pruned_rows(records)
    if pruned:
        merge_rows(out_dir / PRUNED_CSV, pruned, PRUNED_COLUMNS, _pruned_key)
    tp = throughput_rows(records)
    if tp:
        # Rows other benchmarks append (kind loader, overhead, ...) are never merged, even if two are equal;
        # nor are `harness bench sweep`'s (kind sweep with `trials`): its N = 100 and N = 1,000 rows of one
        # commit share every key column, and a later sweep's merge kept only the last of them.
        others = itertools.count()

        def tp_key(row: dict) -> tuple:
            merged = row.get("kind") in ("sweep", "run") and row.get("trials") in (None, "")
            return throughput_key(row) if merged else ("other", next(others))

        merge_rows(out_dir / THROUGHPUT_CSV, tp, THROUGHPUT_COLUMNS, tp_key)
    return len(rows), len(tp)
