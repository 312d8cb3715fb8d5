"""Leaderboards: sweep trials and runs -> ``results/leaderboard.csv``, ``throughput.csv`` and the docs page.

Shape (after ffcv-imagenet's ``agg.csv`` and timm's results CSVs): one flat row per configuration,
in a fixed documented column order, with provenance columns and an ``error`` column instead of a
missing row. A configuration is everything that changes results except the seed and the fold
(:func:`config_id`); its seeds and folds are aggregated into one row (mean and sample standard
deviation). Rows are merged by ``config_id``: a rerun replaces its own row and keeps the others, and
every write is atomic and locked (:func:`harness.results_csv.merge_rows`), so concurrent sweeps lose
nothing.

Model selection is on validation accuracy only: the best configuration per architecture is the one
with the highest ``val_acc_mean``. Test accuracy is measured once, at the end of a run, on the
weights of its best validation epoch; runs that ASHA stopped early have none
(``stop_reason=stopped_by_scheduler``) and keep their validation accuracy.

``docs/leaderboard.md`` and its two plots in ``docs/img/`` are generated from the CSVs alone.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import os
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.run.config import NOT_IDENTITY, RunConfig, config_from_dict, config_id, config_to_dict
from harness.errors import HarnessError
from harness.results_csv import THROUGHPUT_COLUMNS, merge_rows, read_rows, results_dir

#: The documented column order of ``results/leaderboard.csv`` (see docs/leaderboard.md).
DOCUMENTED_COLUMNS: list[str] = [
    "dataset", "arch", "strategy", "optimizer", "scheduler", "augment", "epochs_planned", "epochs_run",
    "batch_size", "lr", "params_m", "mflops", "n_seeds", "test_acc_mean", "test_acc_std", "val_acc_mean",
    "test_loss", "time_to_target_s", "train_s", "stop_reason", "device", "world_size", "torch", "ray",
    "git_sha", "sweep", "date", "error",
]
#: Appended after the documented columns: what else tells configurations apart, and the row key.
EXTRA_COLUMNS: list[str] = ["weight_decay", "seeds", "folds", "hardware", "options", "config_id"]
LEADERBOARD_COLUMNS: list[str] = DOCUMENTED_COLUMNS + EXTRA_COLUMNS

STOPPED = "stopped_by_scheduler"

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


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def options_label(cfg: RunConfig) -> str:
    """The settings that differ from the defaults and have no column of their own (``k=v`` pairs)."""
    have = _flat(config_to_dict(cfg))
    default = _flat(config_to_dict(RunConfig()))
    parts = []
    for k in sorted(have):
        if k in _IN_COLUMNS or have[k] == default.get(k):
            continue
        v = have[k]
        parts.append(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Records: one per run (a sweep trial or a `harness run` directory)


@dataclass
class RunRecord:
    """What one run left behind, read from its files."""

    config: RunConfig
    sweep: str = ""
    reports: list[dict] = field(default_factory=list)  # per-epoch metrics, in order
    summary: dict | None = None  # the final summary; None when the run stopped early or failed
    error: str = ""
    outcome: str = ""  # completed | stopped_by_scheduler | error | "" (still running or interrupted)
    provenance: dict = field(default_factory=dict)
    date: str = ""
    source: str = ""

    @property
    def stop_reason(self) -> str:
        if self.outcome == "excluded":
            return "excluded"
        if self.outcome == "error" or (self.error and self.summary is None):
            return "error"
        if self.summary is not None:
            return str(self.summary.get("stop_reason") or "completed")
        return STOPPED if self.outcome == STOPPED else (self.outcome or "incomplete")

    @property
    def finished(self) -> bool:
        """Whether the run is over (completed, stopped, failed), as opposed to interrupted."""
        return self.stop_reason != "incomplete"


def _segments_last(rows: list[dict]) -> list[dict]:
    """The reports of the last attempt: a restarted trial appends a new run starting at epoch 1 again."""
    start = 0
    prev = None
    for i, r in enumerate(rows):
        ep = r.get("epoch")
        if ep is not None:
            if prev is not None and ep <= prev:
                start = i
            prev = ep
    return rows[start:]


def _read_json_lines(path: Path) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a killed driver
    return rows


def _with_pretraining(summary: dict, run_dir: Path) -> dict:
    """``train_s`` of a transfer run counts its pretraining stage too (``<run>/pretrain/summary.json``):
    a cost axis that left it out would make transfer look free."""
    pre = run_dir / "pretrain" / "summary.json"
    if summary.get("train_s") is None or "pretrain_train_s" in summary or not pre.is_file():
        return summary
    try:
        pre_s = float(json.loads(pre.read_text()).get("train_s") or 0.0)
    except (ValueError, json.JSONDecodeError):
        return summary
    return {**summary, "train_s": float(summary["train_s"]) + pre_s, "pretrain_train_s": pre_s}


def read_trial(trial_dir: Path) -> RunRecord | None:
    """One sweep trial directory (``trial.json`` written by the trial, Tune's ``result.json``).

    Returns None for a trial that never started.
    """
    meta_path = trial_dir / "trial.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    rows = _read_json_lines(trial_dir / "result.json")
    summary = None
    for r in rows:
        if "stop_reason" in r or r.get("status") == "failed":
            summary = r
    # After the summary, a restarted (resumed) trial may report again; keep the last attempt only.
    epochs = _segments_last([r for r in rows if "epoch" in r and "stop_reason" not in r])
    if summary is not None and epochs and rows.index(summary) < rows.index(epochs[-1]):
        summary = None
    outcome = "excluded" if any(r.get("status") == "excluded" for r in rows) else ""
    op = trial_dir / "outcome.json"
    if op.is_file():
        outcome = json.loads(op.read_text()).get("outcome", "")
    error = ""
    if summary is not None and summary.get("status") == "failed":
        error = str(summary.get("error") or "failed")
    elif (trial_dir / "error.txt").is_file():
        lines = [ln for ln in (trial_dir / "error.txt").read_text().splitlines() if ln.strip()]
        error = lines[-1].strip() if lines else "error"
        outcome = "error"
    if summary is not None and summary.get("status") == "diverged":
        error = str(summary.get("error") or "diverged: the loss stopped being finite")
    if summary is not None:
        summary = _with_pretraining(summary, trial_dir / "run")
    last = (summary or (epochs[-1] if epochs else {}))
    date = str(last.get("run_date") or "")
    if not date and last.get("timestamp"):
        date = _dt.datetime.fromtimestamp(float(last["timestamp"]), _dt.timezone.utc).replace(
            microsecond=0).isoformat()
    return RunRecord(
        config=config_from_dict(meta["config"]), sweep=meta.get("sweep", ""), reports=epochs,
        summary=summary if summary is not None and summary.get("status") != "failed" else None,
        error=error, outcome=outcome, provenance=meta.get("provenance", {}),
        date=date or str(meta.get("started", "")), source=str(trial_dir),
    )


def read_run_dir(run_dir: Path) -> RunRecord | None:
    """A ``harness run`` directory (``config.yaml`` + ``summary.json``); None without a summary."""
    sp, cp = run_dir / "summary.json", run_dir / "config.yaml"
    if not (sp.is_file() and cp.is_file()):
        return None
    summary = _with_pretraining(json.loads(sp.read_text()), run_dir)
    cfg = config_from_dict(yaml.safe_load(cp.read_text()) or {})
    rows = []
    mp = run_dir / "metrics.csv"
    if mp.is_file():
        rows = [{k: _num(v) for k, v in r.items()} for r in read_rows(mp)]
    error = str(summary.get("error") or "")
    if summary.get("status") == "diverged" and not error:
        error = "diverged: the loss stopped being finite"
    return RunRecord(config=cfg, sweep="", reports=rows, summary=summary, error=error, outcome="completed",
                     provenance={k: summary.get(k) for k in ("device", "hardware", "torch", "ray", "git_sha")},
                     date=str(summary.get("date", "")), source=str(run_dir))


def collect(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every run under ``paths``: sweep directories (trial dirs with ``trial.json``) and run directories.

    Raises:
        HarnessError: a path does not exist or holds no runs.
    """
    out: list[RunRecord] = []
    for p in paths:
        p = Path(p).expanduser()
        if not p.exists():
            raise HarnessError(f"--from {p}: no such sweep or runs directory")
        found = 0
        for meta in sorted(p.rglob("trial.json")):
            rec = read_trial(meta.parent)
            if rec is not None:
                out.append(rec)
                found += 1
        for sp in sorted(p.rglob("summary.json")):
            d = sp.parent
            if (d / "trial.json").is_file() or d.name == "pretrain" or any(
                    (a / "trial.json").is_file() for a in d.parents):
                continue  # a sweep trial's own run dir, or transfer's stage one: counted above
            rec = read_run_dir(d)
            if rec is not None:
                out.append(rec)
                found += 1
        if not found:
            raise HarnessError(f"--from {p}: no sweep trials (trial.json) or runs (summary.json) found")
    return out


# ---------------------------------------------------------------------------------------------
# Rows


def _num(v: Any) -> Any:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    return v


def _mean(xs: Sequence[float]) -> float | None:
    xs = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) >= 2 else None


def _best_val(rec: RunRecord) -> float | None:
    if rec.summary is not None and rec.summary.get("val_acc") is not None:
        return float(rec.summary["val_acc"])
    vals = [r["val_acc"] for r in rec.reports if r.get("val_acc") is not None]
    return max(vals) if vals else None


def _train_s(rec: RunRecord) -> float | None:
    if rec.summary is not None and rec.summary.get("train_s") is not None:
        return float(rec.summary["train_s"])
    secs = [r.get("epoch_s") for r in rec.reports if r.get("epoch_s") is not None]
    return sum(secs) if secs else None


def _model_cost(arch: str) -> tuple[float | None, float | None]:
    """Params and MFLOPs from the model registry, for runs stopped before their summary."""
    try:
        from architectures import model_info

        info = model_info(arch)
        return info.params, info.mflops
    except Exception:  # noqa: BLE001 - an unknown or unbuildable arch leaves the columns empty
        return None, None


def aggregate(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One leaderboard row per configuration (seeds and folds aggregated). Interrupted runs are left out."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.finished and r.stop_reason != "excluded":
            groups.setdefault(config_id(r.config), []).append(r)
    rows = []
    for cid, recs in groups.items():
        cfg = recs[0].config
        summaries = [r.summary for r in recs if r.summary is not None]
        s0 = summaries[0] if summaries else {}
        prov = {**recs[0].provenance, **{k: v for k, v in s0.items() if v not in (None, "")}}
        tests = [s["test_acc"] for s in summaries if s.get("test_acc") is not None]
        params = s0.get("params")
        mflops = s0.get("mflops_per_img")
        if params is None or mflops is None:
            p2, m2 = _model_cost(cfg.model.arch)
            params = params if params is not None else p2
            mflops = mflops if mflops is not None else m2
        reasons = sorted({r.stop_reason for r in recs})
        epochs_run = max((int(r.summary.get("epochs_run") or 0) if r.summary else len(r.reports)) for r in recs)
        seeds = sorted({r.config.train.seed for r in recs})
        rows.append({
            "dataset": dataset_label(cfg), "arch": cfg.model.arch, "strategy": cfg.strategy.name,
            "optimizer": cfg.optim.name, "scheduler": cfg.sched.name, "augment": cfg.data.augment,
            "epochs_planned": cfg.train.epochs, "epochs_run": epochs_run, "batch_size": cfg.train.batch_size,
            "lr": cfg.optim.lr, "params_m": params / 1e6 if params is not None else None, "mflops": mflops,
            "n_seeds": len(recs), "test_acc_mean": _mean(tests), "test_acc_std": _std(tests),
            "val_acc_mean": _mean([_best_val(r) for r in recs]),
            "test_loss": _mean([s.get("test_loss") for s in summaries]),
            "time_to_target_s": _mean([s.get("time_to_target_s") for s in summaries]),
            "train_s": _mean([_train_s(r) for r in recs]),
            "stop_reason": "+".join(reasons), "device": prov.get("device", ""),
            "world_size": prov.get("world_size") or (cfg.dist.workers or 1),
            "torch": prov.get("torch", ""), "ray": prov.get("ray", ""), "git_sha": prov.get("git_sha", ""),
            "sweep": ",".join(sorted({r.sweep for r in recs if r.sweep})),
            "date": max((r.date for r in recs if r.date), default=""),
            "error": next((r.error for r in recs if r.error), ""),
            "weight_decay": cfg.optim.weight_decay, "seeds": " ".join(map(str, seeds)),
            "folds": cfg.data.folds or "", "hardware": prov.get("hardware", ""),
            "options": options_label(cfg), "config_id": cid,
        })
    return rows


def throughput_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Training and inference images/s and peak memory, median over the runs of one key."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        s = r.summary
        if not s or not s.get("train_img_per_s"):
            continue
        row = {
            "kind": "sweep" if r.sweep else "run", "arch": s.get("arch", r.config.model.arch),
            "backend": s.get("loader", ""), "preset": r.config.data.augment, "dataset": dataset_label(r.config),
            "batch_size": s.get("batch_size", r.config.train.batch_size), "device": s.get("device", ""),
            "precision": s.get("precision", r.config.train.precision), "world_size": s.get("world_size", 1),
            "hardware": s.get("hardware", ""), "torch": s.get("torch", ""), "ray": s.get("ray", ""),
            "git_sha": s.get("git_sha", ""), "date": r.date,
            "img_per_s": s.get("train_img_per_s"), "infer_img_per_s": s.get("infer_img_per_s"),
            "peak_mem_mb": s.get("peak_mem_mb"),
            "note": f"sweep {r.sweep}" if r.sweep else "harness run",
        }
        groups.setdefault(throughput_key(row), []).append(row)
    out = []
    for rows in groups.values():
        row = dict(rows[-1])
        for k in ("img_per_s", "infer_img_per_s", "peak_mem_mb"):
            vals = [float(x[k]) for x in rows if x.get(k) not in (None, "")]
            row[k] = statistics.median(vals) if vals else None
        if row["img_per_s"]:
            row["ms_per_step"] = 1000 * float(row["batch_size"]) / row["img_per_s"]
        row["note"] = f"{row['note']}; median of {len(rows)} run(s)"
        out.append(row)
    return out


def throughput_key(row: dict) -> tuple:
    """Rows of ``throughput.csv`` written by sweeps are keyed by these columns."""
    return tuple(str(row.get(k, "")) for k in ("kind", "arch", "backend", "dataset", "device", "hardware",
                                               "precision", "batch_size", "world_size"))


def _lb_key(row: dict) -> tuple:
    return (str(row.get("config_id", "")),)


def write_results(records: Sequence[RunRecord], out_dir: Path | None = None) -> tuple[int, int]:
    """Merge the records into ``leaderboard.csv`` and ``throughput.csv`` under ``out_dir``.

    Returns:
        (leaderboard rows written, throughput rows written).
    """
    out_dir = Path(out_dir) if out_dir is not None else results_dir()
    rows = aggregate(records)
    if rows:
        merge_rows(out_dir / "leaderboard.csv", rows, LEADERBOARD_COLUMNS, _lb_key)
    tp = throughput_rows(records)
    if tp:
        # Rows other benchmarks append (kind loader, overhead, ...) are never merged, even if two are equal.
        others = itertools.count()

        def tp_key(row: dict) -> tuple:
            return throughput_key(row) if row.get("kind") in ("sweep", "run") else ("other", next(others))

        merge_rows(out_dir / "throughput.csv", tp, THROUGHPUT_COLUMNS, tp_key)
    return len(rows), len(tp)


# ---------------------------------------------------------------------------------------------
# The docs page


def _f(v: Any) -> float | None:
    if v in (None, ""):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _pct(v: Any, std: Any = None) -> str:
    x = _f(v)
    if x is None:
        return "–"
    s = f"{100 * x:.2f}"
    sd = _f(std)
    return f"{s} ± {100 * sd:.2f}" if sd is not None else s


def _num_s(v: Any, fmt: str = "{:.0f}") -> str:
    x = _f(v)
    return "–" if x is None else fmt.format(x)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _plot(rows: list[dict], x_key: str, x_label: str, path: Path, front: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pts = [(r, _f(r.get(x_key)), _f(r.get("test_acc_mean"))) for r in rows]
    pts = [(r, x, y) for r, x, y in pts if x is not None and y is not None and x > 0]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    datasets = sorted({r["dataset"] for r, _, _ in pts})
    markers = "osD^vP*X"
    for i, ds in enumerate(datasets):
        sub = [(r, x, y) for r, x, y in pts if r["dataset"] == ds]
        ax.scatter([x for _, x, _ in sub], [100 * y for _, _, y in sub], marker=markers[i % len(markers)],
                   alpha=0.8, label=ds)
        for r, x, y in sub:
            ax.annotate(f"{r['arch']}/{r['strategy']}", (x, 100 * y), fontsize=6, alpha=0.75,
                        xytext=(3, 2), textcoords="offset points")
        if front and sub:
            idx = pareto_front([(x, y) for _, x, y in sub])
            ax.plot([sub[j][1] for j in idx], [100 * sub[j][2] for j in idx], "--", lw=1.2,
                    label=f"Pareto front ({ds})")
            ax.scatter([sub[j][1] for j in idx], [100 * sub[j][2] for j in idx], s=90, facecolors="none",
                       edgecolors="black", lw=1.0)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no runs with a test accuracy yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _rank(r: dict) -> tuple:
    """Order within a table: by test accuracy, then (runs without one) by validation accuracy."""
    t, v = _f(r.get("test_acc_mean")), _f(r.get("val_acc_mean"))
    return (t is None, -(t or 0.0), -(v or 0.0))


def render_docs(results: Path | None = None, docs: Path | None = None) -> Path:
    """Write ``<docs>/leaderboard.md`` and ``<docs>/img/acc_vs_time.png``, ``acc_vs_params.png`` from the CSVs.

    Raises:
        HarnessError: there is no leaderboard CSV yet.
    """
    results = Path(results) if results is not None else results_dir()
    docs = Path(docs) if docs is not None else Path(os.environ.get("HARNESS_DOCS_DIR", "docs"))
    lb_path = results / "leaderboard.csv"
    if not lb_path.is_file():
        raise HarnessError(f"no {lb_path} yet: run `harness sweep` or `harness leaderboard --from DIR` first")
    rows = read_rows(lb_path)
    tp = [r for r in read_rows(results / "throughput.csv") if r.get("kind") in ("sweep", "run")]
    img = docs / "img"
    _plot(rows, "train_s", "training time per run (s, log scale)", img / "acc_vs_time.png", front=True)
    _plot(rows, "params_m", "parameters (millions, log scale)", img / "acc_vs_params.png", front=False)

    from harness.provenance import now

    lines = [
        "# Leaderboard",
        "",
        f"Generated by `harness leaderboard` from `{lb_path.name}` ({len(rows)} configurations) and "
        f"`throughput.csv` on {now()}. Do not edit by hand: rerun `harness leaderboard` (or `make bench`).",
        "",
        "How to read it: configurations are selected on **validation** accuracy; test accuracy is "
        "measured once per run, at the end, on the weights of its best validation epoch. `n` counts "
        "the runs (seeds x folds) behind a row; accuracies are their mean ± sample standard deviation; "
        "`train s` is training time per run, a transfer run's pretraining stage included. "
        "Runs that ASHA stopped early (`stopped_by_scheduler`) have no test accuracy.",
        "",
        "![test accuracy against training time, Pareto front marked](img/acc_vs_time.png)",
        "",
        "![test accuracy against parameters](img/acc_vs_params.png)",
        "",
        "## Best configuration per architecture",
        "",
        "Per dataset and architecture, the row with the highest validation accuracy.",
        "",
    ]
    best: dict[tuple, dict] = {}
    for r in rows:
        k = (r["dataset"], r["arch"])
        v = _f(r.get("val_acc_mean"))
        if v is not None and (k not in best or v > (_f(best[k].get("val_acc_mean")) or -1)):
            best[k] = r
    lines.append(_table(
        ["dataset", "arch", "strategy", "optimizer", "lr", "epochs", "test acc %", "val acc %", "train s",
         "params M", "n"],
        [[r["dataset"], r["arch"], r["strategy"], r["optimizer"], r["lr"], r["epochs_run"],
          _pct(r["test_acc_mean"], r.get("test_acc_std")), _pct(r["val_acc_mean"]), _num_s(r["train_s"]),
          _num_s(r["params_m"], "{:.3f}"), r["n_seeds"]]
         for r in sorted(best.values(), key=lambda r: (r["dataset"], *_rank(r)))]))
    for ds in sorted({r["dataset"] for r in rows}):
        sub = sorted((r for r in rows if r["dataset"] == ds), key=_rank)
        lines += ["", f"## {ds}", "", _table(
            ["arch", "strategy", "optimizer", "scheduler", "augment", "epochs", "batch", "lr", "wd", "params M",
             "MFLOPs", "n", "test acc %", "val acc %", "train s", "stop", "options", "error"],
            [[r["arch"], r["strategy"], r["optimizer"], r["scheduler"], r["augment"],
              f"{r['epochs_run']}/{r['epochs_planned']}", r["batch_size"], r["lr"], r.get("weight_decay", ""),
              _num_s(r["params_m"], "{:.3f}"), _num_s(r["mflops"], "{:.1f}"), r["n_seeds"],
              _pct(r["test_acc_mean"], r.get("test_acc_std")), _pct(r["val_acc_mean"]), _num_s(r["train_s"]),
              r["stop_reason"], r.get("options", ""), (r.get("error") or "")[:80]] for r in sub])]
    if tp:
        lines += ["", "## Throughput", "", "Training images/s (median over epochs, then over runs), inference "
                  "images/s at batch 256, and peak memory, from the same runs.", "", _table(
                      ["arch", "dataset", "loader", "device", "precision", "batch", "world", "train img/s",
                       "infer img/s", "peak MB", "hardware"],
                      [[r["arch"], r["dataset"], r["backend"], r["device"], r["precision"], r["batch_size"],
                        r["world_size"], _num_s(r["img_per_s"]), _num_s(r["infer_img_per_s"]),
                        _num_s(r["peak_mem_mb"]), r["hardware"]]
                       for r in sorted(tp, key=lambda r: (r["arch"], r["dataset"]))])]
    prov = sorted({(r.get("hardware", ""), r["device"], r["torch"], r["ray"], r["git_sha"]) for r in rows})
    lines += ["", "## Provenance", "", _table(["hardware", "device", "torch", "ray", "git sha"],
                                              [list(p) for p in prov]),
              "", "Sweeps: " + (", ".join(sorted({s for r in rows for s in r["sweep"].split(",") if s})) or "–"),
              "", "Columns of `leaderboard.csv`, in order: " + ", ".join(f"`{c}`" for c in LEADERBOARD_COLUMNS)
              + ". The row key is `config_id` (the config hash without seed and fold): a rerun of a "
              "configuration replaces its row.", ""]
    out = docs / "leaderboard.md"
    docs.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=docs, prefix=".leaderboard.", suffix=".md")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, out)
    return out
