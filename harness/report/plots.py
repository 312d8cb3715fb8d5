"""The docs page's plots: test accuracy against a cost axis (training time, parameters), and its Pareto front.

The points are numbers already (:class:`Point`): reading them from the CSVs is the docs page's job
(:mod:`harness.report.docs`). Figures are written atomically, so a reader never sees half a PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

_MARKERS = "osD^vP*X"


class Point(NamedTuple):
    """One configuration on a plot: its dataset (one series each), its label, cost and test accuracy (0-1)."""

    dataset: str
    label: str
    x: float
    y: float


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


#: Labels per dataset: the Pareto front and the most accurate points up to this many. Every label is a text
#: whose extent matplotlib measures at layout, so labelling thousands of points took minutes and was unreadable.
MAX_LABELS = 12


def labelled(sub: Sequence[Point], limit: int = MAX_LABELS) -> list[int]:
    """Indices of the points worth a label: the Pareto front first, then the most accurate, ``limit`` at most."""
    idx = pareto_front([(p.x, p.y) for p in sub])[:limit]
    for i in sorted(range(len(sub)), key=lambda i: -sub[i].y):
        if len(idx) >= limit:
            break
        if i not in idx:
            idx.append(i)
    return idx


def _series(ax: Any, sub: list[Point], marker: str, front: bool) -> None:  # ax: Axes, matplotlib is lazy
    """One dataset's points, the best of them labelled, with its Pareto front drawn when ``front``."""
    import numpy as np

    many = len(sub) > 500
    # Arrays, not lists: matplotlib turns a list of floats into a masked array element by element (seconds at 100k).
    ax.scatter(np.fromiter((p.x for p in sub), float, len(sub)), np.fromiter((100 * p.y for p in sub), float, len(sub)), marker=marker, alpha=0.3 if many else 0.8,
               s=6 if many else None, label=f"{sub[0].dataset} ({len(sub)})" if many else sub[0].dataset)
    for i in labelled(sub):
        p = sub[i]
        ax.annotate(p.label, (p.x, 100 * p.y), fontsize=6, alpha=0.75, xytext=(3, 2), textcoords="offset points")
    if front:
        idx = pareto_front([(p.x, p.y) for p in sub])
        xs, ys = [sub[j].x for j in idx], [100 * sub[j].y for j in idx]
        ax.plot(xs, ys, "--", lw=1.2, label=f"Pareto front ({sub[0].dataset})")
        ax.scatter(xs, ys, s=90, facecolors="none", edgecolors="black", lw=1.0)


def plot_accuracy(points: Sequence[Point], x_label: str, path: Path, front: bool) -> None:
    """Write a log-x scatter of test accuracy against ``x`` to ``path`` (PNG), one series per dataset.

    Args:
        points: the configurations to plot; only those with ``x > 0`` can be on a log axis.
        x_label: the x axis label.
        path: the PNG to write (its folder is created).
        front: also mark each dataset's Pareto front (lower x, higher accuracy).
    """
    # matplotlib is heavy: imported only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI machines and cluster nodes
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pts = [p for p in points if p.x > 0]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for i, ds in enumerate(sorted({p.dataset for p in pts})):
        _series(ax, [p for p in pts if p.dataset == ds], _MARKERS[i % len(_MARKERS)], front)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    if pts:  # "best" tests every point against every legend place: minutes at thousands of points
        ax.legend(fontsize=7, loc="best" if len(pts) <= 500 else "lower right")
    else:
        ax.text(0.5, 0.5, "no runs with a test accuracy yet", ha="center", va="center", transform=ax.transAxes)
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:  # fig: a matplotlib Figure (imported lazily)
    """Lay out ``fig``, write it to ``path`` (PNG) atomically, and close it."""
    # matplotlib is heavy: imported only when a plot is drawn
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
