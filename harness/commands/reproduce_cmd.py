"""``harness reproduce NAME``: a report's rows beside ours, as ``docs/reports/NAME.md``; with ``--all --run
--budget``, the campaign that runs the missing rows of every report within a CPU budget."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.commands import checks
from harness.commands.sweep_cmd import add_setting_flag
from harness.errors import ConfigError, HarnessError
from harness.raycluster import available_cpus
from harness.registry import unknown_name_message
from harness.report.campaign import describe, plan, run_campaign, write_queue
from harness.report.reproduce import report_names, write_page
from harness.results_csv import results_dir
from harness.run.config import parse_duration
from harness.run.knobs import problem
from harness.sweep.driver import default_storage, run_sweep
from harness.sweep.matrix import load_matrix
from harness.sweep.settings import SweepSettings, setting_field


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness reproduce``."""
    p = sub.add_parser(
        "reproduce", help="rerun a report's matrix (or read the runs done) and write docs/reports/NAME.md",
        description="Put a report's table rows beside ours. NAME is a report matrix (harness list presets: "
        "the ones with a report section), or --all for every one. Without --run the page is built from "
        "results/leaderboard.csv; with --run the rows are first run as the sweep reproduce-NAME (resumed if it "
        "exists). With --run --budget, the campaign: the rows with no result yet, reports with no row run first, "
        "then the cheapest first, by costs measured on this machine (results/costs.csv); a row the budget cuts "
        "short continues from its last epoch on the next call. Rows without a run are listed as not run, with "
        "their measured cost or the reason (GPU queue, ImageNet weights, cost), never a number.")
    p.add_argument("name", nargs="?", help="report matrix, e.g. strategies, kfold, allcnn, optuna, attention")
    p.add_argument("--all", action="store_true", help="every report matrix")
    p.add_argument("--run", action="store_true", help="run the (selected) rows first, as a sweep")
    p.add_argument("--budget", default=None, metavar="DURATION",
                   help="with --run: the campaign, within this wall time (e.g. 150m, 2h): the missing rows in "
                        "order, each started only where its first epoch fits what is left")
    p.add_argument("--estimate", action="store_true",
                   help="time a few training steps of each missing row's configuration here (cached in "
                        "results/costs.csv by CPU model), print the plan and write the pages")
    p.add_argument("--gpu-queue", default=None, metavar="DIR",
                   help="write the rows queued for a GPU as run configs, cheapest first (DIR/NN-REPORT-ROW.yaml "
                        "and DIR/queue.tsv), for scripts/gpu-reproduce.sh; trains nothing")
    p.add_argument("--max-rows", type=int, default=None, metavar="N",
                   help="with --budget: start at most N rows (a row an earlier call started comes first)")
    p.add_argument("--sweep-name", default=None, help="with --run: the sweep's name (default reproduce-NAME)")
    # the sweep's settings that a reproduction passes on, with this command's words and defaults
    for name, default, text in (
            ("only", None, "with --run: only these rows, e.g. --only row='S3.*,S4.*'"),
            ("seeds", 2, "with --run: seeds per row (default 2)"),
            ("cpus_per_worker", None, "with --run: CPU threads per trial (default: the sweep's, 1 on a CPU-only "
             "machine)"),
            ("storage", None, "where sweeps live (default ./sweeps or $HARNESS_SWEEPS_DIR)"),
            ("data_dir", None, None),
            ("overrides", None, "with --run: config override on every row (changes the configuration, so the "
             "rows no longer count as the report's unless the key is not results-relevant)"),
            ("wandb", "auto", "with --run: auto, online, offline or off (default auto)"),
            ("results_dir", None, "CSV folder (default: $HARNESS_RESULTS_DIR or ./results)"),
            ("docs_dir", None, "docs folder; the page goes to DOCS/reports (default ./docs)")):
        add_setting_flag(p, setting_field(name), text, default)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> list[str]:
    """The report names asked for, after every option is checked (one line and exit 2 on bad input)."""
    names = report_names()
    if args.all == bool(args.name):
        raise HarnessError("give one report NAME or --all (valid names: " + ", ".join(names) + ")")
    if args.name and args.name not in names:
        raise HarnessError(unknown_name_message("report", args.name, names))
    if not args.run and (args.only or args.overrides or args.sweep_name or args.budget or args.cpus_per_worker):
        raise HarnessError("--only, --set, --sweep-name, --budget and --cpus-per-worker choose what --run runs: "
                           "add --run, or drop them")
    if args.gpu_queue and (args.run or args.estimate):
        raise HarnessError("--gpu-queue only writes the queue's configs: drop --run and --estimate")
    if args.all and args.run and not args.budget:
        raise HarnessError("--all --run runs every missing row: give it a --budget (e.g. --budget 150m)")
    if args.budget and args.sweep_name:
        raise HarnessError("--budget names each row's sweep itself (campaign-REPORT-ROW): drop --sweep-name")
    if args.budget and any(not o.startswith("row=") for o in args.only):
        raise HarnessError("with --budget, --only takes row=GLOB[,GLOB] (row labels or report row ids)")
    if args.budget:
        try:
            if parse_duration(args.budget) <= 0:
                raise ConfigError("must be positive")
        except ConfigError as e:
            raise HarnessError(f"--budget '{args.budget}': {e} (e.g. 90s, 30m, 2h)") from None
    if args.max_rows is not None and (args.max_rows < 1 or not args.budget):
        raise HarnessError(f"--max-rows N (N >= 1, got {args.max_rows}) goes with --run --budget")
    for name in ("seeds", "cpus_per_worker"):  # the sweep's settings: their ranges are declared there
        f = setting_field(name)
        wrong = problem(f, getattr(args, name))
        if wrong:
            raise HarnessError(f"{f.flag} {wrong}")
    for flag in ("--results-dir", "--docs-dir", "--storage", "--data-dir"):
        checks.folder(flag, getattr(args, flag[2:].replace("-", "_")))
    return names if args.all else [args.name]


def run(args: argparse.Namespace) -> int:
    """Check the options; run the rows or the campaign if asked; write the pages and print the verdicts."""
    names = _check(args)
    results = Path(args.results_dir) if args.results_dir else results_dir()
    docs = Path(args.docs_dir) if args.docs_dir else Path(os.environ.get("HARNESS_DOCS_DIR", "docs"))
    args.reports_dir = docs / "reports"
    if args.gpu_queue:
        return _gpu_queue(names, results, Path(args.gpu_queue))
    if args.estimate or args.budget:
        rc = _campaign(args, names, results)
        if rc:
            return rc
    elif args.run:
        rc = _run_rows(args)
        if rc:
            return rc
    for name in names:
        _write(name, results, args.reports_dir)
    return 0


def _campaign(args: argparse.Namespace, names: list[str], results) -> int:
    """Measure and print the plan (``--estimate``), and run it within ``--budget`` (``--run``)."""
    cpus = int(available_cpus())
    jobs = plan(names, results, cpus, list(args.overrides), measure=True, only=_globs(args.only))
    print(f"campaign plan: {sum(j.reason is None for j in jobs)} row(s) for this CPU ({cpus} CPUs), "
          f"{sum(j.reason is not None for j in jobs)} left to the GPU queue, weights or cost:", flush=True)
    for j in jobs:
        print("  " + describe(j), flush=True)
    if not args.budget:
        return 0
    return run_campaign(jobs, args, parse_duration(args.budget), results,
                        lambda report: write_page(load_matrix(report), results, args.reports_dir)[0])


def _gpu_queue(names: list[str], results, out) -> int:
    paths = write_queue(plan(names, results, 1, [], measure=False), out)
    print(f"GPU queue: {len(paths)} row config(s) in {out} (queue.tsv: cheapest first by stated GPU time)")
    return 0


def _globs(only: list[str]) -> list[str]:
    """The row globs of ``--only row=A1,K2*`` options."""
    return [g.strip() for o in only for g in o.split("=", 1)[1].split(",") if g.strip()]


def _write(name: str, results, reports_dir) -> None:
    m = load_matrix(name)
    page, rows = write_page(m, results, reports_dir)
    for r in rows:
        ours = "not run" if r.ours is None else f"{100 * r.ours:.1f}" + (
            f" ± {100 * r.std:.1f}" if r.std is not None else "") + f" (n={r.n})"
        fig = r.ref.get("figure")
        rep = "-" if fig is None else f"{100 * float(fig):.1f}"
        print(f"  {r.ref['row']:<7} {r.ref['metric']:<4} reported {rep:>5}  ours {ours:<22} {r.verdict}")
    print(f"wrote {page} ({len(rows)} rows) and {page.parent / 'img' / (m.name + '.png')}")


def _run_rows(args: argparse.Namespace) -> int:
    """The selected rows as the sweep reproduce-NAME (resumed when it already exists)."""
    name = args.sweep_name or f"reproduce-{args.name}"
    storage = Path(args.storage).expanduser().resolve() if args.storage else default_storage()
    s = SweepSettings(matrix=args.name, name=name, seeds=args.seeds, only=list(args.only),
                      overrides=list(args.overrides), storage=str(storage), data_dir=args.data_dir,
                      results_dir=args.results_dir, docs_dir=args.docs_dir, wandb=args.wandb,
                      cpus_per_worker=args.cpus_per_worker)
    return run_sweep(s, resume=(storage / name).is_dir())
