"""Two-phase sweeps: which configurations phase two reruns, and the phase state saved with the sweep.

The protocol follows the benchmarks this harness takes as anchors (DeepOBS reruns the best learning
rate with ten seeds; AlgoPerf compares fixed budgets over repeated studies): a short-horizon search
picks candidates, and only full-budget reruns with several seeds are ranked. ASHA never resumes a
trial it stopped, and a judgement at an early rung favours whatever starts fast, so a search
result alone is never ranked.

- **Phase one, the search** (``phase: search``): every configuration once (seed 0) under ASHA.
- **Selection** (:func:`select_top`), per architecture (``model.arch``), among its search trials
  that reported at least one epoch and neither failed nor diverged. Trials are compared at the last
  rung *all compared trials reached*: the trials that went furthest (every epoch, or the deepest
  rung ASHA let them reach) are compared with each other by validation accuracy at that epoch and
  take the first places; the trials stopped at the next rung down follow, compared with each other
  at *their* epoch, and so on. A trial therefore never loses a place to one that ASHA stopped
  earlier, and no two trials are compared at different epochs. Ties go to the higher best
  validation accuracy, then to the earlier cell of the matrix. The best ``K`` are picked.
- **Phase two, the rerun** (``phase: rerun``): each pick again at full budget (no scheduler: every
  trial trains all its epochs) with seeds ``1..S``, fresh ones (the search ran seed 0). The
  leaderboard ranks these runs only (:mod:`harness.report.leaderboard`).

The state lives in ``phases.json`` in the sweep's folder: whether the search finished, the picks
and the rerun's cells, so that ``--resume`` goes straight to phase two once phase one is done and
reruns exactly the cells it chose. Phase two's Tune experiment is ``<sweep>/rerun``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.files import PHASES_FILE, write_text_atomic
from harness.report.records import RunRecord
from harness.sweep.settings import RERUN, SEARCH


@dataclass
class Pick:
    """One configuration phase two reruns: why it was picked, and the matrix cell it repeats."""

    arch: str
    rank: int  # 1 = best of its architecture
    epoch: int  # the epoch it was compared at (its rung, or its last epoch)
    val_acc: float  # its validation accuracy at that epoch
    label: str  # its axis labels, for the printed selection
    cell: dict[str, Any]  # axes, overrides, references (trial.json's ``cell``)


def _val_at(rec: RunRecord, epoch: int) -> float | None:
    for r in rec.reports:
        if r.get("epoch") == epoch and r.get("val_acc") is not None:
            return float(r["val_acc"])
    return None


def _comparable(rec: RunRecord) -> bool:
    """A search trial that can be picked: it reported an epoch's validation accuracy, and did not fail."""
    return (rec.phase == SEARCH and rec.stop_reason not in ("error", "diverged", "excluded", "incomplete")
            and bool(rec.cell) and _val_at(rec, rec.epochs_reached) is not None)


def _rank_key(rec: RunRecord) -> tuple:
    """Deeper rungs first; within a rung (all its trials reached that epoch) higher val_acc first."""
    best = max((float(r["val_acc"]) for r in rec.reports if r.get("val_acc") is not None), default=0.0)
    return (-rec.epochs_reached, -(_val_at(rec, rec.epochs_reached) or 0.0), -best,
            int(rec.cell.get("index", 0)))


def select_top(records: Sequence[RunRecord], k: int) -> list[Pick]:
    """The best ``k`` search configurations of each architecture, best first (see the module docstring).

    Args:
        records: the sweep's records; only ``phase: search`` trials are considered.
        k: configurations per architecture (fewer where an architecture has fewer that can be picked).

    Returns:
        The picks, grouped by architecture in order of first appearance, best first within each.
    """
    by_arch: dict[str, list[RunRecord]] = {}
    for rec in records:
        if _comparable(rec):
            by_arch.setdefault(rec.config.model.arch, []).append(rec)
    picks = []
    for arch, recs in by_arch.items():
        for rank, rec in enumerate(sorted(recs, key=_rank_key)[:k], start=1):
            label = " / ".join(f"{a}={v}" for a, v in rec.axes.items() if str(v) != arch) or arch
            picks.append(Pick(arch, rank, rec.epochs_reached, _val_at(rec, rec.epochs_reached) or 0.0, label,
                              rec.cell))
    return picks


def rerun_cells(picks: Sequence[Pick], seeds: int) -> list[dict[str, Any]]:
    """Phase two's trials: every pick x seeds ``1..seeds``, as the Tune grid cells of :mod:`~harness.sweep.trials`."""
    cells = []
    for ci, p in enumerate(picks):
        for seed in range(1, seeds + 1):
            cells.append({"index": len(cells), "config_index": ci, "axes": p.cell.get("axes", {}),
                          "overrides": p.cell.get("overrides", {}), "references": p.cell.get("references", []),
                          "seed": seed, "fold": None, "phase": RERUN})
    return cells


def selection_lines(picks: Sequence[Pick], seeds: int) -> list[str]:
    """What phase two reruns and why, one line per pick (printed when phase two starts)."""
    return [f"  {p.arch} #{p.rank}: {p.label} (val_acc {p.val_acc:.4f} at epoch {p.epoch}) x {seeds} seed(s)"
            for p in picks]


# ---------------------------------------------------------------------------------------------
# The phase state: phases.json


@dataclass
class PhaseState:
    """What ``phases.json`` holds: whether the search finished, and phase two's picks and cells."""

    search_done: bool = False
    picks: list[dict[str, Any]] | None = None  # Pick fields, once phase two is planned
    cells: list[dict[str, Any]] | None = None  # phase two's cells, once planned


def read_state(exp_dir: Path) -> PhaseState:
    """The phase state of the sweep in ``exp_dir`` (an empty one where none was saved)."""
    path = Path(exp_dir) / PHASES_FILE
    if not path.is_file():
        return PhaseState()
    d = json.loads(path.read_text())
    return PhaseState(bool(d.get("search_done")), d.get("picks"), d.get("cells"))


def write_state(exp_dir: Path, state: PhaseState) -> None:
    """Save the phase state atomically: a kill between two writes leaves the previous state whole."""
    write_text_atomic(Path(exp_dir) / PHASES_FILE, json.dumps(asdict(state), indent=2, default=str))


def plan_rerun(exp_dir: Path, records: Sequence[RunRecord], k: int, seeds: int) -> tuple[list[Pick], list[dict]]:
    """Phase two's picks and cells: the saved ones if phase two was planned before, else chosen now and saved.

    A resumed sweep reruns the cells it planned, even if reading the search again would pick others.
    """
    state = read_state(exp_dir)
    if state.cells is not None and state.picks is not None:
        return [Pick(**p) for p in state.picks], state.cells
    picks = select_top(records, k)
    cells = rerun_cells(picks, seeds)
    write_state(exp_dir, PhaseState(search_done=True, picks=[asdict(p) for p in picks], cells=cells))
    return picks, cells
