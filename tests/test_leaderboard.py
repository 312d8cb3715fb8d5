"""Leaderboards: rows per configuration, merges that replace reruns, concurrent writers, the docs page."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.docs import render_docs
from harness.report.leaderboard import (
    DOCUMENTED_COLUMNS,
    LEADERBOARD_COLUMNS,
    PRUNED_COLUMNS,
    aggregate,
    pruned_rows,
    ranked,
    write_results,
)
from harness.report.plots import pareto_front
from harness.report.records import STOPPED, RunRecord, collect, read_trial
from harness.results_csv import read_rows
from harness.run.config import RunConfig, apply_overrides, config_id
from harness.run.summary import RunSummary

ISSUE_COLUMNS = ("dataset, arch, strategy, optimizer, scheduler, augment, epochs_planned, epochs_run, batch_size, "
                 "lr, params_m, mflops, n_seeds, test_acc_mean, test_acc_std, val_acc_mean, test_loss, "
                 "time_to_target_s, train_s, stop_reason, device, world_size, torch, ray, git_sha, sweep, date, "
                 "error").split(", ")


def _cfg(arch: str = "tiny_cnn", lr: float = 0.05, seed: int = 0, **kw) -> RunConfig:
    return apply_overrides(RunConfig(), {"model.arch": arch, "optim.lr": lr, "train.seed": seed,
                                         "data.dataset": "synthetic", **kw})


def _done(cfg: RunConfig, test: float, val: float, sweep: str = "s", phase: str = "single") -> RunRecord:
    summary = RunSummary(arch=cfg.model.arch, test_acc=test, val_acc=val, test_loss=1.0 - test, train_s=10.0,
                         epochs_run=4, stop_reason="completed", status="ok", params=26_000,
                         mflops_per_img=3.3, device="cpu", world_size=1, torch="2.x", ray="2.y",
                         git_sha="abc", hardware="2x CPU", train_img_per_s=1000.0, infer_img_per_s=5000.0,
                         peak_mem_mb=500.0, loader="tensor", precision="fp32", batch_size=64)
    return RunRecord(config=cfg, sweep=sweep, reports=[{"epoch": 1, "val_acc": val}], summary=summary,
                     outcome="completed", date="2026-01-01T00:00:00+00:00", phase=phase)


def test_columns_are_the_documented_order():
    assert DOCUMENTED_COLUMNS == ISSUE_COLUMNS
    assert LEADERBOARD_COLUMNS[: len(ISSUE_COLUMNS)] == ISSUE_COLUMNS and LEADERBOARD_COLUMNS[-1] == "config_id"


def test_seeds_aggregate_to_mean_and_std_and_stopped_runs_are_pruned_rows_with_their_rung():
    a0, a1, a2 = (_cfg(seed=s) for s in range(3))
    stopped = RunRecord(config=_cfg("lenet_cnn"), sweep="s", reports=[{"epoch": 1, "val_acc": 0.2, "epoch_s": 3.0}],
                        outcome=STOPPED)
    failed = RunRecord(config=_cfg("lenet_cnn", lr=9.0), sweep="s", error="RuntimeError: boom", outcome="error")
    rows = {r["config_id"]: r for r in aggregate([_done(a0, 0.5, 0.6), _done(a1, 0.7, 0.8), _done(a2, 0.6, 0.7),
                                                   stopped, failed])}
    assert len(rows) == 2, "a trial the scheduler stopped is never a leaderboard row"
    r = rows[config_id(a0)]
    assert r["n_seeds"] == 3 and r["seeds"] == "0 1 2"
    assert r["test_acc_mean"] == pytest.approx(0.6) and r["test_acc_std"] == pytest.approx(0.1)
    assert r["val_acc_mean"] == pytest.approx(0.7) and r["stop_reason"] == "completed"
    (p,) = pruned_rows([_done(a0, 0.5, 0.6), stopped, failed])
    assert list(p) == PRUNED_COLUMNS and p["config_id"] == config_id(stopped.config)
    assert p["rung"] == 1 and p["val_acc_at_rung"] == 0.2 and p["train_s"] == 3.0 and p["arch"] == "lenet_cnn"
    f = rows[config_id(failed.config)]
    assert f["stop_reason"] == "error" and f["error"] == "RuntimeError: boom"


def test_merge_keeps_other_rows_and_replaces_reruns(tmp_path):
    a, b, c = _cfg("tiny_cnn"), _cfg("lenet_cnn"), _cfg("mlp")
    write_results([_done(a, 0.5, 0.5), _done(b, 0.4, 0.4)], tmp_path)
    write_results([_done(a, 0.9, 0.9, sweep="rerun"), _done(c, 0.3, 0.3)], tmp_path)
    rows = read_rows(tmp_path / "leaderboard.csv")
    assert list(rows[0]) == LEADERBOARD_COLUMNS
    by = {r["arch"]: r for r in rows}
    assert len(rows) == 3 and set(by) == {"tiny_cnn", "lenet_cnn", "mlp"}
    assert float(by["tiny_cnn"]["test_acc_mean"]) == 0.9 and by["tiny_cnn"]["sweep"] == "rerun"
    assert float(by["lenet_cnn"]["test_acc_mean"]) == 0.4
    tp = read_rows(tmp_path / "throughput.csv")
    assert len(tp) == 3 and {r["kind"] for r in tp} == {"sweep"}
    assert float(tp[0]["img_per_s"]) == 1000.0 and float(tp[0]["infer_img_per_s"]) == 5000.0


def test_throughput_keeps_other_benchmarks_rows(tmp_path):
    from harness.results_csv import THROUGHPUT_COLUMNS, append_rows

    other = {"kind": "loader", "arch": "", "backend": "tensor", "img_per_s": 10.0}
    append_rows(tmp_path / "throughput.csv", [other, other], THROUGHPUT_COLUMNS)
    write_results([_done(_cfg(), 0.5, 0.5)], tmp_path)
    write_results([_done(_cfg(), 0.6, 0.6)], tmp_path)
    kinds = [r["kind"] for r in read_rows(tmp_path / "throughput.csv")]
    assert kinds == ["loader", "loader", "sweep"]


def test_a_sweep_merge_keeps_every_bench_sweep_row(tmp_path):
    """``harness bench sweep``'s rows of one commit (N = 100 and 1,000) share every key column of a sweep's
    throughput row; a later sweep's merge kept only the last of them (make bench dropped 3 of 5)."""
    from harness.results_csv import THROUGHPUT_COLUMNS, append_rows

    bench = [{"kind": "sweep", "arch": "mlp", "dataset": "synthetic", "world_size": 1, "trials": n, "runs": n,
              "git_sha": "abc"} for n in (100, 1000)]
    append_rows(tmp_path / "throughput.csv", bench, THROUGHPUT_COLUMNS)
    write_results([_done(_cfg(), 0.5, 0.5)], tmp_path)
    rows = read_rows(tmp_path / "throughput.csv")
    assert [r["trials"] for r in rows if r["trials"]] == ["100", "1000"], rows


def _writer(out: str, k: int) -> None:
    recs = [_done(_cfg("tiny_cnn", lr=round(0.001 * (k * 100 + i + 1), 6)), 0.5, 0.5, sweep=f"w{k}")
            for i in range(10)]
    for r in recs:  # one merge per row: many interleaved read-modify-write cycles
        write_results([r], Path(out))


def test_four_concurrent_writers_lose_no_rows(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    rows = read_rows(tmp_path / "leaderboard.csv")
    assert len(rows) == 40 and len({r["config_id"] for r in rows}) == 40
    assert {r["sweep"] for r in rows} == {"w0", "w1", "w2", "w3"}


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.7), (0.5, 0.2), (4.0, 0.7)]
    assert pareto_front(pts) == [3, 0, 2]


def test_docs_page_has_tables_best_per_arch_and_two_plots(tmp_path):
    recs = [_done(_cfg("tiny_cnn"), 0.5, 0.6), _done(_cfg("tiny_cnn", lr=0.1), 0.55, 0.5),
            _done(_cfg("lenet_cnn", **{"data.subset": 10}), 0.4, 0.45),
            RunRecord(config=_cfg("mlp"), sweep="s", reports=[{"epoch": 1, "val_acc": 0.1}], outcome=STOPPED)]
    write_results(recs, tmp_path / "results")
    out = render_docs(tmp_path / "results", tmp_path / "docs")
    md = out.read_text()
    assert "## Best configuration per architecture" in md
    assert "## synthetic" in md and "## synthetic[10/class]" in md, "one table per dataset"
    best = md.split("## Best configuration per architecture")[1].split("\n## ")[0]
    assert "| synthetic | tiny_cnn | scratch | sgd | 0.05 |" in best, "best is chosen on validation accuracy"
    ranked_part = md.split("## Pruned trials")[0]
    assert "| mlp |" not in ranked_part, "a pruned trial is never ranked beside finished runs"
    pruned = md.split("## Pruned trials (not ranked)")[1].split("\n## ")[0]
    assert "| synthetic | mlp | scratch | sgd | 0.05 | 128 | 1/10 | 10.00 |" in pruned, "with the rung it reached"
    assert len(read_rows(tmp_path / "results" / "pruned.csv")) == 1
    for png in ("acc_vs_time.png", "acc_vs_params.png"):
        p = tmp_path / "docs" / "img" / png
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG" and f"img/{png}" in md


def test_read_trial_keeps_the_last_attempt_and_a_replayed_summary(tmp_path):
    cfg = _cfg()
    (tmp_path / "trial.json").write_text(json.dumps({"sweep": "s", "config": json.loads(json.dumps(
        __import__("harness.run.config", fromlist=["config_to_dict"]).config_to_dict(cfg)))}))
    rows = [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2},  # attempt killed by kill -9
            {"epoch": 1, "val_acc": 0.3}, {"epoch": 2, "val_acc": 0.4},
            {"stop_reason": "completed", "status": "ok", "val_acc": 0.4, "test_acc": 0.35, "epochs_run": 2}]
    (tmp_path / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"epoch\": 3, \"va")
    rec = read_trial(tmp_path)
    assert [r["val_acc"] for r in rec.reports] == [0.3, 0.4]
    assert rec.summary.test_acc == 0.35 and rec.stop_reason == "completed"
    # A trial restarted after its summary and cut short again has no summary of its last attempt.
    (tmp_path / "result.json").write_text("\n".join(json.dumps(r) for r in [*rows, {"epoch": 1, "val_acc": 0.2}]))
    assert read_trial(tmp_path).stop_reason == "incomplete"
    assert collect([tmp_path]) and aggregate(collect([tmp_path])) == []


def test_leaderboard_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["leaderboard", "--results-dir", str(tmp_path / "r"), "--docs-dir", str(tmp_path / "d")]) == 2
    assert "no " in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", "--from", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no sweep trials" in err


def test_phases_are_separate_rows_and_only_full_budget_reruns_are_ranked(tmp_path):
    """A two-phase sweep: its search rows are kept (marked) but not ranked; its reruns are."""
    a, b = _cfg("tiny_cnn"), _cfg("lenet_cnn")
    recs = [_done(a, 0.9, 0.9, phase="search"), _done(b, 0.3, 0.3, phase="search"),
            _done(_cfg("tiny_cnn", seed=1), 0.5, 0.6, phase="rerun"), _done(_cfg("tiny_cnn", seed=2), 0.7, 0.8,
                                                                              phase="rerun")]
    rows = aggregate(recs)
    by = {(r["arch"], r["phase"]): r for r in rows}
    assert set(by) == {("tiny_cnn", "search"), ("lenet_cnn", "search"), ("tiny_cnn", "rerun")}
    assert by[("tiny_cnn", "rerun")]["n_seeds"] == 2 and by[("tiny_cnn", "rerun")]["seeds"] == "1 2"
    assert [r["arch"] for r in rows if ranked(r)] == ["tiny_cnn"] and all(
        r["phase"] == "rerun" for r in rows if ranked(r))
    write_results(recs, tmp_path / "results")
    csv_rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert len(csv_rows) == 3 and {r["phase"] for r in csv_rows} == {"search", "rerun"}
    md = render_docs(tmp_path / "results", tmp_path / "docs").read_text()
    table = md.split("## synthetic")[1].split("\n## ")[0]
    assert "| 1 | tiny_cnn |" in table and "lenet_cnn" not in table and "90.00" not in table, table
    assert "60.00 ± 14.14" in table, "the reruns' mean ± std"
    search = md.split("## Search phase (not ranked)")[1].split("\n## ")[0]
    assert "lenet_cnn" in search and "90.00" in search


def test_changed_results_and_docs_do_not_make_the_code_dirty(tmp_path):
    import subprocess

    from harness.provenance import code_changed

    def git(*a: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    for f in ("results/leaderboard.csv", "docs/leaderboard.md", "harness.py"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    (tmp_path / "results/leaderboard.csv").write_text("a\nb\n")
    (tmp_path / "docs/leaderboard.md").write_text("b\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert not code_changed(tmp_path)
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "new_module.py").write_text("x = 1\n")  # untracked, in a package: code that can run
    assert code_changed(tmp_path)
    (tmp_path / "harness" / "new_module.py").unlink()
    assert not code_changed(tmp_path)
    (tmp_path / "harness.py").write_text("b\n")
    assert code_changed(tmp_path)


def test_a_sha_from_the_environment_is_shown_as_such_and_dirty_shas_are_not_publishable(monkeypatch):
    from harness.provenance import ENV_MARK, git_sha, publishable

    git_sha.cache_clear()
    monkeypatch.setenv("HARNESS_GIT_SHA", "0123456789")
    try:
        assert git_sha() == "0123456789" + ENV_MARK == "0123456789 (HARNESS_GIT_SHA)"
    finally:
        git_sha.cache_clear()
    assert publishable("0123456789") and publishable("0123456789" + ENV_MARK)
    assert not any(publishable(s) for s in ("cf12163377+dirty", "unknown", "", "abc+dirty" + ENV_MARK))


def test_page_and_closing_table_rank_on_validation_not_test(tmp_path):
    """Three configurations whose validation and test orders disagree: every ranked table follows validation."""
    from harness.report.closing import closing_rows

    # (lr, test, val): by test the order would be 0.03, 0.02, 0.01; by validation it is 0.01, 0.02, 0.03.
    recs = [_done(_cfg(lr=lr), test, val) for lr, test, val in [(0.03, 0.9, 0.5), (0.01, 0.4, 0.8), (0.02, 0.6, 0.7)]]
    write_results(recs, tmp_path / "results")
    md = render_docs(tmp_path / "results", tmp_path / "docs").read_text()
    table = md.split("## synthetic\n")[1].split("\n## ")[0]
    lines = [line for line in table.splitlines() if line.startswith("| ") and "tiny_cnn" in line]
    header = [c.strip() for c in next(x for x in table.splitlines() if x.startswith("| rank")).strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [(c[0], c[header.index("lr")]) for c in cells] == [("1", "0.01"), ("2", "0.02"), ("3", "0.03")]
    assert [c[header.index("val acc %")] for c in cells] == ["80.00", "70.00", "50.00"]
    assert [c[header.index("test acc %")] for c in cells] == ["40.00", "60.00", "90.00"], "test shown beside"
    assert "ranked on validation" in md
    closing = closing_rows(recs, "single")
    assert [(r[0], r[3], r[4]) for r in closing] == [("1", "80.00", "40.00"), ("2", "70.00", "60.00"),
                                                      ("3", "50.00", "90.00")]


def test_page_publishes_only_committed_code_and_throughput_of_the_same_runs(tmp_path):
    """A row made by uncommitted code is kept in the CSV but left out of every table; the throughput table holds
    only rows of the ranked runs (same arch, dataset, hardware and sha), never another machine's or sha's."""
    import dataclasses

    from harness.results_csv import THROUGHPUT_COLUMNS, append_rows

    clean = _done(_cfg(lr=0.01), 0.5, 0.6)
    dirty = _done(_cfg(lr=0.02), 0.9, 0.9)
    dirty.summary = dataclasses.replace(dirty.summary, git_sha="abc+dirty")
    write_results([clean, dirty], tmp_path / "results")
    assert {r["git_sha"] for r in read_rows(tmp_path / "results" / "leaderboard.csv")} == {"abc", "abc+dirty"}
    tp = read_rows(tmp_path / "results" / "throughput.csv")
    assert [(r["git_sha"], r["runs"], r["seeds"]) for r in tp] == [("abc", "1", "0"), ("abc+dirty", "1", "0")]
    other = {**tp[0], "hardware": "8x CPU elsewhere", "img_per_s": "12345"}
    append_rows(tmp_path / "results" / "throughput.csv", [other], THROUGHPUT_COLUMNS)
    md = render_docs(tmp_path / "results", tmp_path / "docs").read_text()
    published = md.split("## Not published")[0]
    assert "| 0.01 |" in published and "| 0.02 |" not in published and "abc+dirty" not in published
    assert "1 row(s)" in md.split("## Not published")[1] and "abc+dirty" in md.split("## Not published")[1]
    throughput = md.split("## Throughput")[1].split("\n## ")[0]
    rows = [line for line in throughput.splitlines() if line.startswith("| tiny_cnn")]
    assert len(rows) == 1 and "12345" not in throughput and "| abc |" in rows[0], throughput
    pruned_cols = read_rows(tmp_path / "results" / "pruned.csv")
    assert pruned_cols == [] and {"git_sha", "hardware", "torch", "ray", "device"} <= set(PRUNED_COLUMNS)


def test_a_page_of_thousands_of_configurations_shows_the_top_k_and_links_the_csv(tmp_path):
    """Issue 25 item 4: the page stays readable at sweep scale (the CSV keeps every row), and the plots label
    only the front and the best points (every label is text matplotlib lays out: minutes at thousands)."""
    from harness.report.docs import TOP_K
    from harness.report.plots import MAX_LABELS, Point, labelled

    n = TOP_K + 150
    recs = [_done(_cfg(lr=0.001 * (i + 1)), test=0.3 + 0.5 * i / n, val=0.3 + 0.5 * i / n) for i in range(n)]
    write_results(recs, tmp_path / "results")
    assert len(read_rows(tmp_path / "results" / "leaderboard.csv")) == n, "the CSV keeps every configuration"
    md = render_docs(tmp_path / "results", tmp_path / "docs").read_text()
    table = md.split("## synthetic")[1].split("\n## ")[0]
    assert table.count("\n| ") == TOP_K + 1, "header and the top K rows"
    assert f"The top {TOP_K} of {n} are shown" in table and "(../results/leaderboard.csv)" in table
    first = table.split("\n| 1 | ")[1].split("\n")[0]
    assert f" | {0.001 * n:g} | " in first, f"the best validation accuracy ranks first: {first}"
    pts = [Point("synthetic", f"p{i}", x=float(i + 1), y=(i % 97) / 97) for i in range(3000)]
    idx = labelled(pts)
    front = pareto_front([(p.x, p.y) for p in pts])
    assert len(idx) == MAX_LABELS and set(front[:MAX_LABELS]) <= set(idx)
