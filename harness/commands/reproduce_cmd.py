"""``harness reproduce NAME``: a report's rows beside ours, as ``docs/reports/NAME.md``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness reproduce``."""
    p = sub.add_parser(
        "reproduce", help="rerun a report's matrix (or read the runs done) and write docs/reports/NAME.md",
        description="Put a report's table rows beside ours. NAME is a report matrix (harness list presets: "
        "the ones with a report section). Without --run the page is built from results/leaderboard.csv; with "
        "--run the matrix's rows are first run as the sweep reproduce-NAME (resumed if it exists). Rows "
        "without a run are listed as not run, with their estimated cost, never a number.")
    p.add_argument("name", help="report matrix, e.g. strategies, kfold, allcnn, optuna, attention")
    p.add_argument("--run", action="store_true", help="run the (selected) rows first, as a sweep")
    p.add_argument("--only", action="append", default=[], metavar="AXIS=GLOB",
                   help="with --run: only these rows, e.g. --only row='S3.*,S4.*'")
    p.add_argument("--seeds", type=int, default=2, help="with --run: seeds per row (default 2)")
    p.add_argument("--sweep-name", default=None, help="with --run: the sweep's name (default reproduce-NAME)")
    p.add_argument("--storage", default=None, help="where sweeps live (default ./sweeps or $HARNESS_SWEEPS_DIR)")
    p.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA_DIR or ./data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --run: config override on every row (changes the configuration, so the rows "
                        "no longer count as the report's unless the key is not results-relevant)")
    p.add_argument("--wandb", default="auto", help="with --run: auto, online, offline or off (default auto)")
    p.add_argument("--results-dir", default=None, help="CSV folder (default: $HARNESS_RESULTS_DIR or ./results)")
    p.add_argument("--docs-dir", default=None, help="docs folder; the page goes to DOCS/reports (default ./docs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the name, run the rows if asked, then write the page and print its verdicts."""
    import os
    from pathlib import Path

    from harness.commands import checks
    from harness.errors import HarnessError
    from harness.registry import unknown_name_message
    from harness.report.reproduce import report_names, write_page
    from harness.results_csv import results_dir
    from harness.sweep.matrix import load_matrix

    names = report_names()
    if args.name not in names:
        raise HarnessError(unknown_name_message("report", args.name, names))
    if not args.run and (args.only or args.overrides or args.sweep_name):
        raise HarnessError("--only, --set and --sweep-name choose what --run runs: add --run, or drop them")
    if args.seeds < 1:
        raise HarnessError(f"--seeds must be >= 1, got {args.seeds}")
    for flag in ("--results-dir", "--docs-dir", "--storage", "--data-dir"):
        checks.folder(flag, getattr(args, flag[2:].replace("-", "_")))
    m = load_matrix(args.name)
    results = Path(args.results_dir) if args.results_dir else results_dir()
    if args.run:
        rc = _run_rows(args)
        if rc:
            return rc
    docs = Path(args.docs_dir) if args.docs_dir else Path(os.environ.get("HARNESS_DOCS_DIR", "docs"))
    page, rows = write_page(m, results, docs / "reports")
    for r in rows:
        ours = "not run" if r.ours is None else f"{100 * r.ours:.1f}" + (
            f" ± {100 * r.std:.1f}" if r.std is not None else "") + f" (n={r.n})"
        fig = r.ref.get("figure")
        rep = "-" if fig is None else f"{100 * float(fig):.1f}"
        print(f"  {r.ref['row']:<7} {r.ref['metric']:<4} reported {rep:>5}  ours {ours:<22} {r.verdict}")
    print(f"wrote {page} ({len(rows)} rows) and {page.parent / 'img' / (m.name + '.png')}")
    return 0


def _run_rows(args: argparse.Namespace) -> int:
    """The selected rows as the sweep reproduce-NAME (resumed when it already exists)."""
    from pathlib import Path

    from harness.sweep.driver import default_storage, run_sweep
    from harness.sweep.settings import SweepSettings

    name = args.sweep_name or f"reproduce-{args.name}"
    storage = Path(args.storage).expanduser().resolve() if args.storage else default_storage()
    s = SweepSettings(matrix=args.name, name=name, seeds=args.seeds, only=list(args.only),
                      overrides=list(args.overrides), storage=str(storage), data_dir=args.data_dir,
                      results_dir=args.results_dir, docs_dir=args.docs_dir, wandb=args.wandb)
    return run_sweep(s, resume=(storage / name).is_dir())
