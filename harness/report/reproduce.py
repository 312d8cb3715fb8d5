"""Report reproductions: a report's matrix and the leaderboard rows that ran it -> ``docs/reports/NAME.md``.

A report matrix (``harness/sweep/matrices/NAME.yaml`` with a ``report`` section) lists every table row
of a report as a configuration with a ``reference``: what the report got, on which metric. The trials
of a sweep over it carry those references into ``trial.json``, and the leaderboard row of their
configuration names them in its ``reference`` column. This module joins the two: for each reference,
our mean ± std over seeds beside the report's figure, the difference and a verdict.

The verdict allows for noise: a row *holds* when ours is within ``max(3 pp, 2 x std)`` of the reported
figure, is *better* above that and *worse* below. A row with no run is *not run*, with an estimated
cost and never a number; a reference without a figure (the report only describes the result) gets
ours and the report's words.
"""

from __future__ import annotations

from pathlib import Path

from harness.files import LEADERBOARD_CSV, write_text_atomic
from harness.raycluster import available_cpus
from harness.report.campaign import plan
from harness.report.cost_cells import COST_NOTE, cost_cells
from harness.report.costs import duration
from harness.report.plots import save_figure
from harness.report.rows import (
    GPU_FLOPS,
    MIN_TOLERANCE,
    Row,
    cpu_rate,
    join,
    leaderboard_rows,
    model_mflops,
    training_flops,
)
from harness.sweep.matrix import Matrix, list_presets, load_matrix

# ---------------------------------------------------------------------------------------------
# The page


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def _duration(seconds: float) -> str:
    return "< 1 s" if seconds < 1 else duration(seconds)


def _cost(r: Row, rate: float | None) -> str:
    """A row not run: its estimated training compute and time here and on one GPU."""
    arch = str(r.overrides.get("model.arch", ""))
    work = training_flops(arch, r.overrides)
    if work is None:
        return "not run"
    parts = [f"not run: ~{work / 1e15:.2g} PFLOP ({r.overrides.get('train.epochs', 10)} epochs x "
             f"{model_mflops(arch, r.overrides) or 0:.4g} MFLOPs/img)"]
    if rate:
        parts.append(f"~{_duration(work / rate)} on this CPU")
    gpu = work / GPU_FLOPS
    parts.append("under a minute of compute on one GPU" if gpu < 60 else f"~{_duration(gpu)} of compute on one GPU")
    return ", ".join(parts)


def _ours(r: Row, rate: float | None) -> str:
    if r.ours is None and r.ref.get("via"):
        return f"not run: answered by `harness sweep --matrix {r.ref['via']}` (its best trial by validation)"
    if r.ours is None:
        return _cost(r, rate)
    std = f" ± {100 * r.std:.1f}" if r.std is not None else ""
    text = f"{100 * r.ours:.1f}{std} % (n={r.n})"
    if r.ref.get("metric") == "val":
        # The report's own figure is its best epoch's validation accuracy, so ours is too; both are chosen
        # on the split they are measured on. The held-out figure of the same weights sits beside it.
        text += " (best epoch's val: optimistic)"
        text += f"; held-out test {_pct(r.test)}" if r.test is not None else "; held-out test –"
    cuts = str((r.source or {}).get("lr_reductions") or "").split()
    if cuts:  # a plateau row: say whether the schedule did anything
        text += (f"; plateau cut the lr {'/'.join(cuts)} time(s) per run" if any(c != "0" for c in cuts)
                 else "; plateau never cut the lr (trained as constant lr)")
    return text


def _reported(r: Row) -> str:
    fig = r.ref.get("figure")
    words = r.ref.get("note") or ""
    if fig is None:
        return f"{r.ref['metric']}: {words}" if words else "(no figure)"
    return f"{r.ref['metric']} {_pct(float(fig))}" + (f" ({words})" if words else "")


def table_lines(rows: list[Row], rate: float | None, costs: dict[int, str] | None = None) -> list[str]:
    """The markdown table of one report table's rows; ``costs``: each row's cost cell, by ``id(row)``."""
    costs = costs or {}
    lines = ["| row | setting | reported | ours (mean ± std, n) | difference | verdict | cost |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "" if r.diff is None else f"{100 * r.diff:+.1f} pp"
        ours = _ours(r, rate) if r.ours is not None or id(r) not in costs else "not run"
        lines.append(f"| {r.ref['row']} | {r.ref.get('setting', '')} | {_reported(r)} | {ours} | {diff} | "
                     f"{r.verdict} | {costs.get(id(r), '')} |")
    return lines


def summary_counts(rows: list[Row]) -> dict[str, int]:
    """How many rows got each verdict."""
    out: dict[str, int] = {}
    for r in rows:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out


def page_text(m: Matrix, rows: list[Row], plot_name: str, costs: dict[int, str] | None = None,
              queue: list[str] | None = None) -> str:
    """The markdown of ``docs/reports/NAME.md``; ``costs`` (row id -> cell) and ``queue`` (the GPU queue's
    lines) come from :mod:`harness.report.cost_cells`."""
    rep = m.report
    rate = None if costs else cpu_rate(rows)
    counts = summary_counts(rows)
    hardware = sorted({str(r.source.get("hardware", "")) for r in rows if r.source and r.source.get("hardware")})
    out = [f"# Reproduction: {rep.get('title') or m.name}", "",
           f"Generated by `harness reproduce {m.name}` from `results/{LEADERBOARD_CSV}` and the matrix "
           f"`harness/sweep/matrices/{m.name}.yaml`. Source: {rep.get('source', '')}.", "",
           "**Verdicts:** " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())) + f" of {len(rows)} rows. "
           f"A row *holds* when ours is within max({100 * MIN_TOLERANCE:.0f} pp, 2 x std) of the reported figure.", ""]
    if hardware:
        out += [f"Runs on: {', '.join(hardware)}.", ""]
    out += ["## How the protocols differ", "", rep.get("protocol", ""), "",
            "The harness selects on validation only: each run keeps the weights of its best validation epoch and "
            "measures test accuracy once, at the end, and each row is n seeds (mean and sample standard "
            "deviation). The report made single runs, some of them chosen by looking at test accuracy, so its "
            "figures carry that selection; ours can be lower and still be the more honest estimate.", ""]
    on_val = list(dict.fromkeys(r.ref["row"] for r in rows if r.ref.get("metric") == "val"))  # K2 has two refs
    if on_val:
        out += [f"Rows compared on validation ({', '.join(on_val)}) use what the report published: the validation "
                "accuracy of the best epoch, chosen on that same validation split. That figure is optimistic (the "
                "choice was made on it), for the report and for us alike; each such row also shows the held-out "
                "figure of the same weights, the test split's accuracy measured once at the end.", ""]
    if rep.get("chosen"):
        out += ["## Settings the report leaves out (chosen here)", ""] + [f"- {c}" for c in rep["chosen"]] + [""]
    if rep.get("findings"):
        out += ["## Where ours and the report's disagree: what was found", ""] + [f"- {c}" for c in rep["findings"]] + [""]
    out += ["## Results", "", f"![ours against reported](img/{plot_name})", ""]
    tables: dict[str, list[Row]] = {}
    for r in rows:
        tables.setdefault(r.ref.get("table") or "rows", []).append(r)
    for name, sub in tables.items():
        out += [f"### {name}", "", *table_lines(sub, rate, costs), ""]
    if queue:
        out += ["## GPU queue", "", "These rows are too large for this CPU. `scripts/gpu-reproduce.sh` runs as many as "
                "fit one call on a lent GPU, cheapest first (n = 1, bf16, channels_last); each one alone:", "",
                *queue, ""]
    notes = [] if costs else [f"- Rows not run are estimated at ~{rate / 1e9:.1f} GFLOP/s of training on this CPU (the median of "
             f"the rows run here) and {GPU_FLOPS / 1e12:.0f} TFLOP/s on one GPU (an assumption). Estimates are costs, "
             "never results." if rate else
             f"- Rows not run are estimated at {GPU_FLOPS / 1e12:.0f} TFLOP/s on one GPU (an assumption); no row has "
             "run here yet to measure this CPU. Estimates are costs, never results."]
    if costs:
        notes.append(COST_NOTE)
    notes.append(f"- Run the missing rows with `harness reproduce {m.name} --run --only row='GLOB'`.")
    return "\n".join(out + ["## Notes", "", *notes, ""])


def plot_rows(rows: list[Row], path: Path, title: str) -> None:
    """Ours against reported, one point per row run, with 2-std error bars and the y = x line."""
    # matplotlib is heavy: imported only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI machines
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.ours is not None and r.ref.get("figure") is not None]
    colours = {"holds": "tab:blue", "better": "tab:green", "worse": "tab:red"}
    fig, ax = plt.subplots(figsize=(6, 5.4), dpi=110)
    for verdict, colour in colours.items():
        sub = [r for r in pts if r.verdict == verdict]
        if sub:
            ax.errorbar([100 * float(r.ref["figure"]) for r in sub], [100 * r.ours for r in sub],
                        yerr=[200 * (r.std or 0) for r in sub], fmt="o", color=colour, label=verdict, capsize=2)
            for r in sub:
                ax.annotate(r.ref["row"], (100 * float(r.ref["figure"]), 100 * r.ours), fontsize=6,
                            xytext=(3, 2), textcoords="offset points")
    lo = min([100 * min(float(r.ref["figure"]), r.ours) for r in pts], default=0) - 5
    hi = max([100 * max(float(r.ref["figure"]), r.ours) for r in pts], default=100) + 5
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="ours = reported")
    ax.fill_between([lo, hi], [lo - 3, hi - 3], [lo + 3, hi + 3], color="grey", alpha=0.15, label="±3 pp")
    ax.set_xlabel("reported accuracy (%)")
    ax.set_ylabel("ours (%), mean ± 2 std")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no row run yet", ha="center", va="center", transform=ax.transAxes)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path)


def write_page(m: Matrix, results: Path, reports_dir: Path) -> tuple[Path, list[Row]]:
    """Write ``reports_dir/NAME.md`` and its plot from the leaderboard, and refresh the index."""
    rows = join(m, leaderboard_rows(results))
    plot = f"{m.name}.png"
    plot_rows(rows, reports_dir / "img" / plot, m.report.get("title") or m.name)
    page = reports_dir / f"{m.name}.md"
    reports_dir.mkdir(parents=True, exist_ok=True)
    costs, queue = cost_cells(m, rows, results)
    write_text_atomic(page, page_text(m, rows, plot, costs, queue))
    write_index(reports_dir, results)
    return page, rows


def write_index(reports_dir: Path, results: Path) -> Path:
    """``docs/reports/README.md``: every report matrix, its page and its verdict counts."""
    lines = ["# Report reproductions", "",
             "Each report this product replaces is a matrix (`harness list presets`); `harness reproduce NAME` "
             "runs it or reads the runs already done, and writes its page. Verdicts compare our mean over "
             "seeds with the report's single run. A row not run says why, here and row by row on its page: the "
             "GPU queue (`scripts/gpu-reproduce.sh` on a lent GPU), ImageNet weights (the page gives the "
             "`--set strategy.weights=FILE` command), too long for this CPU, or the CPU campaign "
             "(`harness reproduce --all --run`) has not reached it yet.", "",
             "| report | page | rows | verdicts |", "|---|---|---|---|"]
    lb = leaderboard_rows(results)
    for name, _desc in list_presets():
        m = load_matrix(name)
        if not m.report:
            continue
        rows = join(m, lb)
        counts = ", ".join(f"{v} {n}" + (_not_run_why(m.name, rows, results) if v == "not run" else "")
                           for v, n in sorted(summary_counts(rows).items()))
        lines.append(f"| {m.report.get('title') or name} | [{name}.md]({name}.md) | {len(rows)} | {counts} |")
    path = reports_dir / "README.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


#: The index's word for each reason a row is not run (:data:`harness.report.campaign.REASONS`; None: the
#: CPU campaign runs it).
WHY_SHORT = {"gpu": "GPU queue", "weights": "ImageNet weights", "cost": "too long for this CPU", None: "CPU campaign"}


def _not_run_why(report: str, rows: list[Row], results: Path) -> str:
    """`` (GPU queue 7, ImageNet weights 6)``: why the rows of ``report`` without a result have none, as its
    page says row by row."""
    jobs = plan([report], results, int(available_cpus()), [], measure=False)  # costs.csv is read, nothing timed
    reason = {rid: j.reason for j in jobs for rid in j.rows}
    counts: dict[str, int] = {}
    for r in rows:
        if r.ours is None:
            why = WHY_SHORT[reason.get(r.ref["row"])]
            counts[why] = counts.get(why, 0) + 1
    return " (" + ", ".join(f"{why} {n}" for why, n in counts.items()) + ")" if counts else ""


def report_names() -> list[str]:
    """The presets that are report matrices (they have a ``report`` section)."""
    return [n for n, _ in list_presets() if load_matrix(n).report]
