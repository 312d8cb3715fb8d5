"""``harness leaderboard``: merge sweeps or runs into the leaderboard CSVs and regenerate docs/leaderboard.md."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.commands import checks
from harness.errors import HarnessError
from harness.files import LEADERBOARD_CSV, THROUGHPUT_CSV
from harness.report.docs import render_docs
from harness.report.leaderboard import write_results
from harness.report.records import collect
from harness.results_csv import results_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness leaderboard``."""
    p = sub.add_parser(
        "leaderboard", help="merge sweeps/runs into results/*.csv and regenerate docs/leaderboard.md",
        description="With --from, merge the trials of sweep directories (or `harness run` directories) into "
        "results/leaderboard.csv (one row per configuration; a rerun replaces its row) and "
        "results/throughput.csv. Then regenerate docs/leaderboard.md and its plots from the CSVs.")
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="DIR",
                   help="a sweep directory (sweeps/NAME), a sweep name under ./sweeps, or a runs directory; repeatable")
    p.add_argument("--results-dir", default=None, help="CSV folder (default: $HARNESS_RESULTS_DIR or ./results)")
    p.add_argument("--docs-dir", default=None, help="docs folder (default: $HARNESS_DOCS_DIR or ./docs)")
    p.add_argument("--no-docs", action="store_true", help="only merge the CSVs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Merge, then render."""
    if args.no_docs and not args.sources:
        raise HarnessError("--no-docs with no --from has nothing to do: give --from DIR to merge, or drop --no-docs")
    if args.no_docs and args.docs_dir:
        raise HarnessError("--no-docs and --docs-dir contradict each other: drop one")
    checks.folder("--results-dir", args.results_dir)
    checks.folder("--docs-dir", args.docs_dir)
    results = Path(args.results_dir) if args.results_dir else results_dir()
    if args.sources:
        sweeps = Path(os.environ.get("HARNESS_SWEEPS_DIR", "sweeps"))
        paths = [p if Path(p).exists() or not (sweeps / p).exists() else str(sweeps / p) for p in args.sources]
        records = collect(paths)
        n, t = write_results(records, results)
        skipped = sum(1 for r in records if not r.finished)
        print(f"merged {len(records) - skipped} runs into {n} configurations in {results / LEADERBOARD_CSV} "
              f"and {t} rows in {results / THROUGHPUT_CSV}"
              + (f"; {skipped} unfinished runs left out" if skipped else ""))
    if not args.no_docs:
        out = render_docs(results, Path(args.docs_dir) if args.docs_dir else None)
        print(f"wrote {out} and {out.parent / 'img'}/acc_vs_time.png, acc_vs_params.png")
    return 0
