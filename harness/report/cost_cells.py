"""The cost column of a report page: measured estimates, actual times beside them, and why a row is not run.

Read from ``results/costs.csv`` (rates measured by ``harness reproduce NAME --estimate`` or by the
campaign) and the leaderboard; nothing is timed while a page is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.provenance import cpu_model
from harness.raycluster import available_cpus
from harness.report.campaign import CAMPAIGN_CSV, Job, job_config, plan
from harness.report.costs import GPU_FLOPS, GPU_STEP_S, SETUP_S, Cost, duration, read_rates, run_cost
from harness.results_csv import read_rows

COST_NOTE = (f"- **Costs are measured here**, not extrapolated: a few training steps of each row's own configuration "
             "(model, strategy and frozen stages, batch, image size, precision, layout, threads), timed after a "
             "warm-up on the named CPU and kept in `results/costs.csv`, plus a validation pass per epoch, the test "
             f"and {SETUP_S:.0f} s of setup. Early stopping can only shorten a run. A GPU figure is stated, not "
             f"measured: per stage, max(FLOPs / {GPU_FLOPS / 1e12:.0f} TFLOP/s, steps x {1e3 * GPU_STEP_S:.0f} ms) "
             "plus setup, since thousands of small steps are bound by kernel launches. A row run shows its "
             "actual wall time (and CPU time) per run beside the estimate.")


def cost_cells(m: Any, rows: list[Any], results: Path) -> tuple[dict[int, str], list[str]]:
    """``({id(row): cost cell}, GPU queue lines)`` for the page of matrix ``m``."""
    jobs = plan([m.name], results, int(available_cpus()), [], measure=False)
    by_row: dict[str, list[Job]] = {}
    for j in jobs:
        for rid in j.rows:
            by_row.setdefault(rid, []).append(j)
    rates = read_rates(results)
    job_times = _campaign_job_times(results)
    cells = {}
    for r in rows:
        rid = r.ref["row"]
        if r.ours is None and rid in by_row:
            # A row id two configurations answer (K2: LeakyReLU and ELU): the job of this one.
            job = next((j for j in by_row[rid] if j.overrides == r.overrides), by_row[rid][0])
            cells[id(r)] = not_run_cell(job)
        elif r.ours is not None:
            cells[id(r)] = run_cell(r, rates, m.name, job_times.get(rid, ""))
    queue, seen = [], set()
    for j in sorted((j for j in jobs if j.reason == "gpu"), key=lambda j: _gpu_s(j) or 1e18):
        if j.label not in seen:
            seen.add(j.label)
            queue.append(queue_line(j))
    return cells, queue


def _campaign_job_times(results: Path) -> dict[str, str]:
    """``{row id: "; the campaign's job ran 1.6 h in all (estimated ...)"}`` for each row of a finished
    campaign job (``results/campaign.csv``): its wall time summed over the calls that ran it."""
    lines = read_rows(results / CAMPAIGN_CSV)
    out = {}
    for done in (ln for ln in lines if ln.get("outcome") == "done"):
        est = _num(done.get("estimate_s"))
        wall = sum(_num(ln.get("wall_s")) or 0.0 for ln in lines if ln.get("job") == done["job"])
        if est is None or not wall:
            continue
        for rid in str(done.get("rows", "")).split():
            out[rid] = (f"; the campaign's job ran {duration(wall)} in all (estimated {duration(est)} on "
                        f"{done.get('hardware', 'this machine')})")
    return out


def _gpu_s(job: Job) -> float | None:
    return job.cost.gpu_seconds if job.cost else None


def _here(cost: Cost | None, report: str) -> str:
    """``≈ 3.1 h on <CPU> (measured 104 img/s)``, or how to measure it."""
    rate = cost.rate if cost else None
    if cost is None or cost.seconds is None or rate is None:
        return f"not measured on a CPU yet (`harness reproduce {report} --estimate`)"
    bound = {"budget": ", its wall-clock budget", "steps": ", its step count"}.get(cost.bound, "")
    busy = " beside other work" if rate.others_cpus is not None and rate.beside_others else ""
    return (f"≈ {duration(cost.seconds)} a run on {rate.cpu} at {rate.threads} thread(s) "
            f"(measured {rate.train_img_per_s:.0f} img/s{busy}{bound})")


def not_run_cell(job: Job) -> str:
    """Why a row has no result, and what it would cost."""
    gpu = _gpu_s(job)
    gpu_text = f"≈ {duration(gpu)} on one GPU (stated)" if gpu else "GPU cost unknown"
    if job.reason == "gpu":
        return f"GPU queue: {gpu_text}; {_here(job.cost, job.report)}"
    if job.reason == "weights":
        return (f"needs ImageNet weights, which cannot be fetched here: run `harness reproduce {job.report} --run "
                f"--only row='{job.label}' --set strategy.weights=FILE.pth` with a local torchvision state dict; "
                f"{gpu_text}")
    if job.reason == "cost":
        return f"too long for this CPU: {_here(job.cost, job.report)}; {gpu_text}"
    what = f"{job.extra.get('trials', 1)} trials of `{job.search}`, " if job.search else f"n = {job.seeds}, "
    return f"campaign: {what}{_here(job.cost, job.report)}; {gpu_text}"


def run_cell(r: Any, rates: dict, report: str, job_time: str = "") -> str:
    """A row of ``report`` run: its actual time per run beside the estimate for its configuration.

    Without a rate for that configuration (a search row's winning trial is a point nobody timed), the
    estimate is its campaign job's: ``job_time``, appended to the actual time."""
    src = r.source or {}
    wall, cpu_s = _num(src.get("total_s")), _num(src.get("cpu_s"))
    train = _num(src.get("train_s"))
    if wall is not None:
        actual = f"ran {duration(wall)} a run" + (f" ({duration(cpu_s)} CPU)" if cpu_s else "")
    elif train is not None:
        actual = f"trained {duration(train)} a run"
    else:
        return ""
    threads = 1 if (r.n or 1) >= 2 else 2
    try:
        job = Job("", "", [], dict(r.overrides))
        cost = run_cost(job_config(job, []), threads, rates, cpu_model())
    except Exception:  # noqa: BLE001 - a row that no longer resolves here still shows its actual time
        return actual + job_time
    if cost.seconds is None:
        return actual + job_time
    return f"{actual}; estimated {_here(cost, report)}"


def queue_line(job: Job) -> str:
    """One GPU-queue row: its stated cost and the exact command that runs it alone."""
    gpu = _gpu_s(job)
    cost = f"≈ {duration(gpu)} on one GPU (stated)" if gpu else "GPU cost unknown"
    return (f"- {', '.join(job.rows)}: {cost}: `harness reproduce {job.report} --run --only row='{job.label}' "
            f"--seeds 1 --set train.precision=bf16 --set train.channels_last=true`")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f
