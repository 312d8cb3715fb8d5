"""``harness reproduce --run --budget``: the campaign plans the missing rows by measured cost, and a row
whose process is killed continues from ``last.pt`` on the next call without training a finished epoch
again. A real local Ray cluster and real subprocesses; the rows train on synthetic images (the CIFAR-10
reader accepts only the official arrays, by checksum)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import child_env

from harness.report import costs
from harness.report.campaign import plan, run_child
from harness.report.costs import COST_COLUMNS, COSTS_CSV, measure_run, rate_key, read_rates
from harness.results_csv import append_rows, read_rows
from harness.run.config import RunConfig, apply_overrides
from harness.run.resolve import resolve
from harness.run.timing import BUSY_CPUS, OthersMeter


def test_plan_names_why_each_row_is_not_for_this_cpu(tmp_path):
    jobs = {j.label: j for j in plan(["optuna"], tmp_path, 2, [], measure=False)}
    assert jobs["O3"].reason == "gpu" and jobs["O5"].reason == "weights", "queued and weights rows say why"
    assert jobs["O2"].search == "optuna-search" and jobs["O2"].extra["trials"] == 5, "O2 is answered by its search"
    assert jobs["O1"].reason is None and jobs["O1"].cost.seconds is None, "not measured yet: no time, never a guess"
    assert jobs["O3"].cost.gpu_seconds > jobs["O1"].cost.gpu_seconds > 0, "a stated GPU cost for every row"


def test_a_search_rows_cell_gives_its_campaign_jobs_estimate_beside_its_wall_time(tmp_path):
    """O2's winning trial is a point no rate was measured for: the page shows its job's time over every call."""
    from harness.report.campaign import CAMPAIGN_COLUMNS, CAMPAIGN_CSV
    from harness.report.cost_cells import _campaign_job_times

    line = {"job": "campaign-optuna-O2", "report": "optuna", "rows": "O2", "seeds": 1, "threads": 1,
            "estimate_s": 5400.0, "hardware": "2x CPU Test", "git_sha": "x", "date": "d"}
    append_rows(tmp_path / CAMPAIGN_CSV, [{**line, "wall_s": 600.0, "outcome": "stopped"}], CAMPAIGN_COLUMNS)
    assert _campaign_job_times(tmp_path) == {}, "a job not finished has no actual time yet"
    append_rows(tmp_path / CAMPAIGN_CSV, [{**line, "wall_s": 5400.0, "outcome": "done"},
                                          {**line, "job": "campaign-x-Y", "rows": "Y", "wall_s": 9.0,
                                           "outcome": "failed"}], CAMPAIGN_COLUMNS)
    assert _campaign_job_times(tmp_path) == {
        "O2": "; the campaign's job ran 1.7 h in all (estimated 1.5 h on 2x CPU Test)"}


def test_estimate_measures_each_configuration_once_and_orders_cheapest_first(tmp_path):
    sets = ["data.subset=20"]
    jobs = [j for j in plan(["kfold"], tmp_path, 2, sets, measure=True) if j.reason is None]
    rates = read_rates(tmp_path)
    assert rates and all(r.train_img_per_s > 0 and r.eval_img_per_s > 0 for r in rates.values())
    walls = [j.wall_s for j in jobs]
    assert all(w is not None for w in walls) and walls == sorted(walls), "cheapest first, every one measured"
    tiny = next(j for j in jobs if j.overrides.get("model.arch") == "tiny_cnn")
    deep = next(j for j in jobs if j.overrides.get("model.arch") == "deep_cnn")
    assert deep.cost.rate.train_img_per_s < tiny.cost.rate.train_img_per_s / 3, "each row's own model is timed"
    n = len(read_rows(tmp_path / COSTS_CSV))
    plan(["kfold"], tmp_path, 2, sets, measure=True)
    assert len(read_rows(tmp_path / COSTS_CSV)) == n, "a rate measured once is read back, not measured again"


def test_others_meter_counts_other_processes_cpu_not_this_ones():
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    with OthersMeter() as busy:
        subprocess.run([sys.executable, "-c", spin], check=True)
    assert busy.cpus is not None and busy.cpus > BUSY_CPUS, "a process spinning beside the timing is counted"
    with OthersMeter() as own:
        t = time.perf_counter()
        while time.perf_counter() - t < 1.0:
            pass
    assert own.cpus is not None and own.cpus < busy.cpus, "the measuring process's own CPU is not"


def test_a_rate_timed_beside_other_work_is_timed_again_on_an_idle_cpu(tmp_path, monkeypatch):
    cfg = resolve(apply_overrides(RunConfig(), {"model.arch": "tiny_cnn", "data.dataset": "synthetic"}))
    slow = {"key": rate_key(cfg, 1), "cpu": costs.cpu_model(), "threads": 1, "arch": "tiny_cnn",
            "train_img_per_s": 1.0, "eval_img_per_s": 1.0, "load": 2.3}  # no others_cpus: from before it
    append_rows(tmp_path / COSTS_CSV, [slow], COST_COLUMNS)
    monkeypatch.setattr(costs, "others_busy_now", lambda: 1.5)  # the CPU is busy now: keep what there is
    assert measure_run(cfg, 1, tmp_path).rate.train_img_per_s == 1.0
    assert len(read_rows(tmp_path / COSTS_CSV)) == 1, "not timed beside other work again"
    monkeypatch.setattr(costs, "others_busy_now", lambda: 0.0)  # idle now: time it again
    rate = measure_run(cfg, 1, tmp_path).rate
    rows = read_rows(tmp_path / COSTS_CSV)
    assert rate.train_img_per_s > 100 and len(rows) == 2 and rows[-1]["others_cpus"] != "", rows[-1]
    if not rate.beside_others:  # timed alone (another test may share the CPU): read back, even when idle
        measure_run(cfg, 1, tmp_path)
        assert len(read_rows(tmp_path / COSTS_CSV)) == 2, "a rate timed alone is read back, not timed again"


@pytest.mark.parametrize("rc,outcome", [(0, "done"), (130, "stopped"), (143, "stopped"), (1, "failed")])
def test_a_row_whose_sweep_was_signalled_is_stopped_not_failed(rc, outcome):
    # A sweep stopped by Ctrl-C or SIGTERM exits 130 or 143 and resumes on the next call, like a budget stop.
    cmd = [sys.executable, "-c", f"raise SystemExit({rc})"]
    assert run_child(cmd, time.monotonic() + 60, resume=False) == outcome


def _metrics(run_dirs: list[Path]) -> dict[Path, list[dict]]:
    out = {}
    for d in run_dirs:
        with open(d / "metrics.csv") as fh:
            out[d] = list(csv.DictReader(fh))
    return out


@pytest.mark.slow
def test_killed_campaign_row_continues_from_its_last_epoch(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = child_env(RAY_TMPDIR=ray_tmp, HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    sweeps = tmp_path / "sweeps"
    cmd = [sys.executable, "-m", "harness", "reproduce", "kfold", "--run", "--budget", "10m", "--max-rows", "1",
           "--results-dir", str(tmp_path / "results"), "--docs-dir", str(tmp_path / "docs"), "--storage",
           str(sweeps), "--wandb", "off", "--set", "train.measure_inference=false", "--set", "data.dataset=synthetic",
           "--set", "data.synthetic_size=5000"]
    log = open(tmp_path / "first.log", "w")
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not list(sweeps.glob("campaign-*/*/run/last.pt")):
            assert p.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)  # the campaign, its sweep and the trials: a session that ends
        p.wait(30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()
    first = (tmp_path / "first.log").read_text()
    planned = [ln.strip() for ln in first.splitlines() if ln.startswith("  kfold ")]
    started = [ln for ln in first.splitlines() if ln.startswith("campaign: start")]
    assert started and planned[0] in started[0], f"the cheapest missing row starts first:\n{first[-2000:]}"
    label = planned[0].split()[1]
    before = _metrics([p.parent for p in sweeps.glob("campaign-*/*/run/last.pt")])
    assert before and all(0 < len(rows) < 10 for rows in before.values()), "killed mid-run, after an epoch"

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    after = _metrics(list(before))
    for d, rows in before.items():
        assert [int(x["epoch"]) for x in after[d]] == list(range(1, 11)), "every epoch once"
        assert after[d][: len(rows)] == rows, "the epochs finished before the kill were not trained again"
    row_id = label.split("-")[0]
    lb = [x for x in read_rows(tmp_path / "results" / "leaderboard.csv") if f"kfold {row_id}:" in x["reference"]]
    assert len(lb) == 1 and lb[0]["n_seeds"] == "2" and float(lb[0]["cpu_s"]) > 0, lb  # (one K2 of two labels)
    assert "campaign" in (tmp_path / "docs" / "reports" / "kfold.md").read_text()


def test_pages_show_measured_costs_and_why_each_row_is_not_run(tmp_path):
    from harness.report.reproduce import write_page
    from harness.sweep.matrix import load_matrix

    plan(["kfold"], tmp_path, 2, [], measure=True, only=["K2-elu"])
    page, _ = write_page(load_matrix("kfold"), tmp_path, tmp_path / "reports")
    k2 = [ln for ln in page.read_text().splitlines() if ln.startswith("| K2 |")]
    assert any("campaign: n = 2, ≈" in ln and "measured" in ln and "img/s" in ln for ln in k2), k2
    assert any("not measured on a CPU yet (`harness reproduce kfold --estimate`)" in ln for ln in k2), \
        "the other K2 row was not timed: it says so, and how"
    att = write_page(load_matrix("attention"), tmp_path, tmp_path / "reports")[0].read_text()
    rows = [ln for ln in att.splitlines() if ln.startswith("| T")]
    assert rows and all("GPU queue: ≈" in ln for ln in rows) and "## GPU queue" in att


def test_a_queued_row_shows_its_measured_cpu_cost_beside_its_gpu_one(tmp_path):
    """What a GPU-queue row would cost this CPU is what shows it belongs on a GPU: --estimate times it too."""
    from harness.report.reproduce import write_page
    from harness.sweep.matrix import load_matrix

    (job,) = plan(["attention"], tmp_path, 2, [], measure=True, only=["T3.step"])
    assert job.reason == "gpu" and job.cost.seconds > job.cost.gpu_seconds > 0, "measured here, stated for a GPU"
    att = write_page(load_matrix("attention"), tmp_path, tmp_path / "reports")[0].read_text()
    rows = {ln.split("|")[1].strip(): ln for ln in att.splitlines() if ln.startswith("| T")}
    assert all("on one GPU (stated); ≈" in rows[r] and "img/s" in rows[r] for r in ("T3.step", "T3.cyclic")), \
        "T3's schedulers share one model: one measurement prices them all"
    assert "not measured on a CPU yet (`harness reproduce attention --estimate`)" in rows["T1"], rows["T1"]
    strat = write_page(load_matrix("strategies"), tmp_path, tmp_path / "reports")[0].read_text()
    s6 = [ln for ln in strat.splitlines() if ln.startswith("| S6.")]
    assert s6 and all("needs ImageNet weights" in ln and "strategy.weights=FILE.pth" in ln for ln in s6)


def test_two_configurations_of_one_report_row_each_get_their_own_run(tmp_path):
    from harness.report.rows import join
    from harness.sweep.matrix import load_matrix

    def lb(act: str, val: float) -> dict:
        return {"reference": "kfold K2: val n/a", "options": f'model.kwargs={{"activation": "{act}"}}',
                "val_acc_mean": str(val), "n_seeds": "2", "phase": "single", "test_acc_mean": str(val),
                "git_sha": "0123456789"}  # committed code: a page publishes only such rows

    rows = join(load_matrix("kfold"), [lb("leaky_relu", 0.69), lb("elu", 0.66)])
    k2 = {r.overrides["model.kwargs"]["activation"]: r.ours for r in rows if r.ref["row"] == "K2"}
    assert k2 == {"leaky_relu": 0.69, "elu": 0.66}, "before, both K2 rows showed the better one's figure"
