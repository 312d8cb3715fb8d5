"""``harness reproduce --all --run --budget 150m``: the missing report rows, run within a CPU budget.

The campaign plans every report row that has no result yet (:func:`plan`) and runs the ones this CPU
can afford, in order: reports with no row run first, then the cheapest row first. A row's cost is
*measured* (:mod:`harness.report.costs`: a few timed steps of its exact configuration), not guessed.

Each row runs as its own sweep, ``campaign-REPORT-LABEL``, in a child process (``harness reproduce
REPORT --run --only row=LABEL``), with ``n = 2`` seeds in parallel (one CPU each) where a run costs
under an hour, else one seed with every CPU. When the budget runs out, the child gets SIGINT and
stops cleanly; its finished epochs stay in ``last.pt``, and the next call resumes the same sweep,
whose trials continue from there (a killed campaign resumes the same way). Each landed row
regenerates its report's page and the index, and adds a line to ``results/campaign.csv`` (estimate
beside actual).

Rows the CPU does not run say why on their page: ``gpu`` (the matrix queues it for
``scripts/gpu-reproduce.sh``), ``weights`` (ImageNet weights, which cannot be fetched here) or
``cost`` (a measured run longer than :data:`CPU_LIMIT_S`).
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.provenance import cpu_model, git_sha, hardware, now
from harness.report.costs import Cost, duration, measure_run, read_rates, run_cost
from harness.report.rows import join, leaderboard_rows
from harness.results_csv import append_rows
from harness.run.config import RunConfig, apply_overrides, parse_override, save_config
from harness.sweep.driver import default_storage
from harness.sweep.matrix import load_matrix

#: The longest single run the campaign starts on a CPU; longer ones are left with reason ``cost``.
CPU_LIMIT_S = 12 * 3600.0
#: Under this per-run cost a row gets two seeds (run side by side, one CPU each); above it, one.
TWO_SEEDS_UNDER_S = 3600.0
#: How long a child sweep may take to stop after SIGINT (its last checkpoint, Ray's shutdown) before SIGKILL.
STOP_GRACE_S = 180.0
CAMPAIGN_CSV = "campaign.csv"
CAMPAIGN_COLUMNS = ["job", "report", "rows", "seeds", "threads", "estimate_s", "wall_s", "outcome", "hardware",
                    "git_sha", "date"]
REASONS = {"gpu": "GPU queue (scripts/gpu-reproduce.sh)", "weights": "needs ImageNet weights (--weights FILE)",
           "cost": "too long for this CPU"}


@dataclass
class Job:
    """One configuration of a report matrix that no leaderboard row answers yet."""

    report: str
    label: str  # its row label in the matrix (the --only glob)
    rows: list[str]  # the report rows it answers
    overrides: dict[str, Any]
    reason: str | None = None  # None: the CPU runs it; else a key of REASONS
    cost: Cost | None = None  # one run at `threads`
    threads: int = 1
    seeds: int = 2
    search: str | None = None  # a search preset that answers it (O2: optuna-search)
    has_runs: bool = False  # its report has rows run already (those reports come later)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The sweep this job runs as."""
        return "campaign-" + re.sub(r"[^A-Za-z0-9_.=+-]+", "_", f"{self.report}-{self.label}")

    @property
    def wall_s(self) -> float | None:
        """Its estimated wall time here: the seeds run side by side, so one run's time."""
        s = self.cost.seconds if self.cost else None
        return None if s is None else s * (1 if self.search is None else self.extra.get("trials", 1))


def missing_jobs(report: str, results: Path) -> list[Job]:
    """The configurations of ``report`` without a full-budget leaderboard row, with their reason if not CPU."""
    m = load_matrix(report)
    joined = join(m, leaderboard_rows(results))
    done = {r.ref["row"] for r in joined if r.ours is not None}
    jobs = []
    for c in m.configurations():
        refs = c["references"]
        if not refs or all(r["row"] in done for r in refs):
            continue
        job = Job(report, str(c["axes"].get("row", "")), [r["row"] for r in refs], dict(c["overrides"]),
                  has_runs=bool(done))
        if any(r.get("queue") == "gpu" for r in refs):
            job.reason = "gpu"
        elif _needs_weights(job.overrides):
            job.reason = "weights"
        via = {r.get("via") for r in refs} - {None}
        if via:
            job.search = sorted(via)[0]
        jobs.append(job)
    return jobs


def _needs_weights(overrides: dict[str, Any]) -> bool:
    w = overrides.get("strategy.weights")
    return bool(w) and not Path(str(w)).is_file()


def job_config(job: Job, sets: list[str], resolved: bool = True) -> Any:
    """The resolved config one run of ``job`` trains (a search's: its row's own configuration).

    ``resolved=False``: as written, for a row that cannot resolve here (ImageNet weights would be
    fetched): enough to count its FLOPs and steps.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    from harness.run.resolve import resolve

    d = dict(job.overrides)
    for o in sets:
        k, v = parse_override(o)
        d[k] = v
    cfg = apply_overrides(RunConfig(), d)
    return resolve(cfg) if resolved else cfg


def cost_jobs(jobs: list[Job], results: Path, cpus: int, sets: list[str], measure: bool = True) -> None:
    """Give each CPU job its measured cost, seeds and threads; a run over :data:`CPU_LIMIT_S` gets ``cost``."""
    rates, cpu = read_rates(results), cpu_model()
    for job in jobs:
        if job.reason is not None:  # not run here: its stated GPU cost, and what it would cost this CPU
            try:
                cfg = job_config(job, sets, resolved=job.reason != "weights")
                # A queued row's CPU cost is what shows it belongs on a GPU, so it is measured too (a few steps).
                # A weights row cannot build its model here, so it keeps a rate measured before, if any.
                timed = measure and job.reason == "gpu"
                job.cost = measure_run(cfg, cpus, results) if timed else run_cost(cfg, cpus, rates, cpu)
                job.seeds, job.threads = 1, cpus
            except Exception:  # noqa: BLE001 - e.g. weights that resolve only online: no estimate, still listed
                job.cost = None
            continue
        if job.search is not None:
            _search_job(job)
        cfg = job_config(job, sets)
        for seeds in (2, 1):  # two seeds side by side at one CPU each, unless one run is too long for that
            threads = max(1, cpus // seeds)
            job.cost = measure_run(cfg, threads, results) if measure else run_cost(cfg, threads, rates, cpu)
            job.seeds, job.threads = (seeds, threads) if job.search is None else (1, threads)
            if job.cost.seconds is None or job.cost.seconds < TWO_SEEDS_UNDER_S or job.search is not None:
                break
        if job.cost.seconds is not None and job.cost.seconds > CPU_LIMIT_S:
            job.reason = "cost"


def _search_job(job: Job) -> None:
    """A row a search answers: the row's own configuration (a point of the search space) stands for
    each trial's cost, times the search's trials."""
    job.extra["trials"] = load_matrix(job.search).num_samples


def plan(reports: list[str], results: Path, cpus: int, sets: list[str], measure: bool = True,
         only: list[str] | None = None) -> list[Job]:
    """Every missing row of ``reports`` (those matching a glob of ``only``, by label or report row id); the
    CPU's in campaign order: reports with no row run first, then the cheapest."""
    jobs = [j for r in reports for j in missing_jobs(r, results)]
    if only:
        jobs = [j for j in jobs if any(fnmatch.fnmatchcase(n, g) for g in only for n in (j.label, *j.rows))]
    cost_jobs(jobs, results, cpus, sets, measure)
    return sorted(jobs, key=lambda j: (j.reason is not None, j.has_runs, j.wall_s if j.wall_s is not None else 1e18))


def fits(job: Job, left_s: float) -> bool:
    """Whether to start ``job`` with ``left_s`` seconds of budget left.

    Every run checkpoints each epoch and the next call resumes it, so a row starts when its first epoch
    fits; it need not fit whole.
    """
    if job.cost is None or job.cost.seconds is None or job.wall_s is None:
        return False
    steps = sum(s.steps for s in job.cost.stages)
    per_epoch = job.cost.seconds * min(1.0, job.cost.stages[0].steps / max(1, steps)) / max(1.0, _epochs(job))
    return min(job.wall_s, per_epoch) <= left_s


def _epochs(job: Job) -> float:
    return float(job.overrides.get("train.epochs", RunConfig().train.epochs))


def child_command(job: Job, args: Any) -> list[str]:
    """``harness reproduce REPORT --run`` for one job (or ``harness sweep`` for a search's job)."""
    cmd = [sys.executable, "-m", "harness"]
    if job.search is not None:
        cmd += ["sweep", "--matrix", job.search, "--name", job.name]
    else:
        cmd += ["reproduce", job.report, "--run", "--only", f"row={job.label}", "--seeds", str(job.seeds),
                "--sweep-name", job.name]
    cmd += ["--cpus-per-worker", str(job.threads)]
    for flag in ("storage", "data_dir", "results_dir", "docs_dir"):
        v = getattr(args, flag, None)
        if v:
            cmd += [f"--{flag.replace('_', '-')}", str(v)]
    cmd += ["--wandb", args.wandb]
    # A budgeted campaign stops rows mid-run and resumes them (see fits): last.pt every epoch, not the default
    # every 5, so no finished epoch is trained twice. The user's --set comes after and wins.
    cmd += ["--set", "train.checkpoint_every=1"]
    for o in args.overrides:
        cmd += ["--set", o]
    return cmd


def run_child(cmd: list[str], deadline: float, resume: bool) -> str:
    """Run one job until it ends or the deadline passes (then SIGINT, and SIGKILL after a grace period).

    Returns:
        ``done``, ``stopped`` (the budget ran out, or the sweep itself was stopped by a signal: the next
        call resumes it) or ``failed``.
    """
    if resume and "--resume" not in cmd and cmd[3] == "sweep":
        cmd = [*cmd, "--resume"]
    # Its own process group: the stop reaches the sweep and every process it started, and nothing else.
    child = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = child.wait(timeout=max(1.0, deadline - time.monotonic()))
        # 130 and 143: the sweep was stopped by Ctrl-C or SIGTERM (a session that ends), kept its finished
        # trials and says how to resume, which the next call does: not a failed row.
        return "done" if rc == 0 else "stopped" if rc in (130, 143) else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGINT)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        return "stopped"
    except BaseException:
        os.killpg(child.pid, signal.SIGINT)  # Ctrl-C of the campaign: the row stops as it would on its own
        child.wait(timeout=STOP_GRACE_S)
        raise


def describe(job: Job) -> str:
    """One line: the job, its rows and its cost (or why the CPU does not run it)."""
    rows = ",".join(job.rows)
    if job.reason is not None:
        cost = f", ~{duration(job.cost.seconds)} a run here" if job.cost and job.cost.seconds else ""
        return f"{job.report} {job.label} ({rows}): not on this CPU: {REASONS[job.reason]}{cost}"
    what = (f"{job.extra.get('trials', 1)} trials of {job.search}" if job.search
            else f"{job.seeds} seed(s) x {job.threads} CPU")
    est = duration(job.wall_s) if job.wall_s is not None else "not measured"
    rate = job.cost.rate if job.cost else None
    measured = f", measured {rate.train_img_per_s:.0f} img/s" if rate else ""
    return f"{job.report} {job.label} ({rows}): ≈ {est} ({what}{measured})"


def run_campaign(jobs: list[Job], args: Any, budget_s: float, results: Path,
                 write_page: Callable[[str], Path]) -> int:
    """Run the CPU's jobs in order within ``budget_s``; ``write_page(report)`` regenerates a report's page as
    each of its jobs lands (and returns the page's path).

    Returns:
        0 when every job it started ended, 130 when the budget or Ctrl-C stopped one (the next call
        resumes it).
    """
    storage = Path(args.storage).expanduser().resolve() if args.storage else default_storage()
    start = time.monotonic()
    deadline, rc, started = start + budget_s, 0, 0
    # A row an earlier call started (its sweep exists) finishes first: its epochs are already paid for.
    todo = sorted((j for j in jobs if j.reason is None), key=lambda j: not (storage / j.name).is_dir())
    for job in todo:
        if args.max_rows is not None and started >= args.max_rows:
            break
        left = deadline - time.monotonic()
        if not fits(job, left):
            print(f"campaign: skip {describe(job)}: does not fit the {duration(max(0.0, left))} left", flush=True)
            continue
        print(f"campaign: start {describe(job)}; {duration(left)} of budget left", flush=True)
        t0, started = time.monotonic(), started + 1
        resume = (storage / job.name).is_dir()
        outcome = run_child(child_command(job, args), deadline, resume)
        wall = time.monotonic() - t0
        append_rows(results / CAMPAIGN_CSV, [{
            "job": job.name, "report": job.report, "rows": " ".join(job.rows), "seeds": job.seeds,
            "threads": job.threads, "estimate_s": job.wall_s, "wall_s": wall, "outcome": outcome,
            "hardware": hardware("cpu"), "git_sha": git_sha(), "date": now()}], CAMPAIGN_COLUMNS)
        print(f"campaign: {outcome} {job.report} {job.label} in {duration(wall)} (estimated {duration(job.wall_s or 0)})",
              flush=True)
        if outcome == "stopped":
            why = "the budget ran out" if time.monotonic() >= deadline else "its sweep was stopped"
            print(f"campaign: {why}; `harness reproduce --all --run` continues {job.label} from its last epoch",
                  flush=True)
            return 130
        page = write_page(job.report)
        print(f"campaign: wrote {page}", flush=True)
        rc = rc or (0 if outcome == "done" else 1)
    return rc


def write_queue(jobs: list[Job], out: Path) -> list[Path]:
    """The GPU queue as run configs, cheapest first by stated GPU cost: ``out/NN-REPORT-LABEL.yaml``.

    Each file is the row's configuration as the matrix gives it (``harness run --config FILE`` trains it
    without Ray, which the lent GPU machine lacks); ``queue.tsv`` lists file, rows and stated seconds.
    """
    queued = sorted((j for j in jobs if j.reason == "gpu"), key=lambda j: (j.cost.gpu_seconds if j.cost else None)
                    or 1e18)
    out.mkdir(parents=True, exist_ok=True)
    paths, lines = [], ["file\treport\trows\tgpu_s"]
    for i, j in enumerate(queued):
        path = out / f"{i:02d}-{j.name.removeprefix('campaign-')}.yaml"
        save_config(apply_overrides(RunConfig(), {**j.overrides, "name": j.name}), path)
        gpu = j.cost.gpu_seconds if j.cost else None
        lines.append(f"{path.name}\t{j.report}\t{' '.join(j.rows)}\t{'' if gpu is None else round(gpu)}")
        paths.append(path)
    (out / "queue.tsv").write_text("\n".join(lines) + "\n")
    return paths
