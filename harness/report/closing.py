"""The closing table a sweep prints last: its ranked full-budget runs, one line per configuration.

It answers "what did this bench find?" without opening the docs page: rank, architecture, recipe
(the trial's axis labels other than the architecture), mean validation accuracy (the order), test
accuracy mean ± std over the seeds (shown beside, never ranked on), n,
training time per run, and the report's figure where the configuration reproduces a report row. The
runs ranked are the sweep's reruns (a two-phase sweep) or its finished trials (a one-phase sweep);
pruned and search-phase trials are never in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.report.leaderboard import aggregate
from harness.report.records import RunRecord
from harness.run.config import config_id

_HEADER = ["rank", "arch", "recipe", "val acc %", "test acc %", "n", "train s", "reported"]


def _recipe(rec: RunRecord) -> str:
    """The axis labels that tell the configuration apart within its architecture, and its epochs."""
    arch = rec.config.model.arch
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.axes.items()
             if str(v) != arch]
    return ", ".join([*parts, f"{rec.config.train.epochs} ep"])


def _reported(rec: RunRecord) -> str:
    """The report's figures this configuration reproduces (``S1.1 57.0 test``), or ``–``."""
    refs = [r for r in rec.references if r.get("figure") is not None]
    return "; ".join(f"{r.get('row', '')} {100 * float(r['figure']):.1f} {r.get('metric', '')}" for r in refs) or "–"


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * mean:.2f}"


def closing_rows(records: Sequence[RunRecord], phase: str) -> list[list[str]]:
    """The table's rows: the ``phase`` runs aggregated per configuration, best mean validation accuracy first
    (test accuracy is shown, never ranked on: that would select on the test set)."""
    mine = [r for r in records if r.phase == phase]
    first: dict[str, RunRecord] = {}
    for r in mine:
        first.setdefault(config_id(r.config), r)
    rows = sorted(aggregate(mine), key=lambda row: (row["val_acc_mean"] is None, -(row["val_acc_mean"] or 0.0),
                                                    -(row["test_acc_mean"] or 0.0)))
    out = []
    for i, row in enumerate(rows, start=1):
        rec = first[row["config_id"]]
        train = "–" if row["train_s"] is None else f"{row['train_s']:.0f}"
        test = _pct(row["test_acc_mean"], row["test_acc_std"]) if not row["error"] else f"error: {row['error'][:40]}"
        val = _pct(row["val_acc_mean"], None)
        out.append([str(i), row["arch"], _recipe(rec), val, test, str(row["n_seeds"]), train, _reported(rec)])
    return out


def closing_table(records: Sequence[RunRecord], phase: str, docs_page: Path | None) -> str:
    """The text the sweep prints last: a title, the aligned table, and where the docs page is.

    Args:
        records: the sweep's runs (:func:`harness.report.records.collect`).
        phase: the phase ranked: ``rerun`` for a two-phase sweep, ``single`` for a one-phase one.
        docs_page: ``docs/leaderboard.md`` as written, or None where the sweep wrote no page.
    """
    rows = closing_rows(records, phase)
    title = ("ranked: the full-budget reruns, mean ± std over seeds" if phase == "rerun"
             else "ranked: the trials that ran their full budget (pruned trials are listed apart)")
    lines = [title]
    if rows:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADER)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*_HEADER), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r) for r in rows]
    else:
        lines.append("  (no full-budget run finished)")
    lines.append(f"leaderboard page: {docs_page}" if docs_page is not None else "leaderboard page: not written")
    return "\n".join(lines)
