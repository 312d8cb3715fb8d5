"""``auto`` on a CPU is what the probe measured (issue 23): cached timings decide, margins apply, bf16 is
never tried where the CPU has no native bf16, and a real probe times, caches and prints its table once."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness.cli import main
from harness.results_csv import append_rows, read_rows
from harness.run import probe
from harness.run.config import RunConfig, apply_overrides
from harness.run.probe import PROBE_COLUMNS, Candidate, Timing, candidates, choose, shape
from harness.run.resolve import resolve

TINY = {"model.arch": "tiny_cnn", "data.dataset": "synthetic", "data.synthetic_size": 600, "train.batch_size": 32}


@pytest.fixture
def probing(tmp_path, monkeypatch):
    """The probe on (the suite turns it off), with a cache folder of this test's own."""
    monkeypatch.setenv("HARNESS_PROBE", "on")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / probe.PROBE_CSV


def _cfg(**over) -> RunConfig:
    return apply_overrides(RunConfig(), {**TINY, **over})


def _seed_cache(path: Path, cfg: RunConfig, rates: dict[Candidate, float]) -> None:
    """A probe.csv holding ``rates`` for ``cfg``'s shape, as a probe on this machine would have written it."""
    import torch

    key = shape(cfg, torch.get_num_threads())
    rows = [{**key, "precision": c.precision, "channels_last": c.channels_last, "compile": False, "img_per_s": r,
             "loader_share": 0.01, "rounds": 1, "load": 0.0, "chosen": False, "date": "2026-12-06"}
            for c, r in rates.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    append_rows(path, rows, PROBE_COLUMNS)


def _all_rates(cfg: RunConfig, fp32_nchw: float, fp32_cl: float, bf16: float = 1.0) -> dict[Candidate, float]:
    """A rate for every candidate of ``cfg`` on this CPU (bf16 ones only where it is native)."""
    return {c: (bf16 if c.precision == "bf16" else fp32_cl if c.channels_last else fp32_nchw) for c in candidates(cfg)}


@pytest.mark.parametrize("nchw,cl,expect_cl", [(100.0, 130.0, True), (130.0, 100.0, False), (100.0, 103.0, False)],
                         ids=["channels-last-faster", "nchw-faster", "within-noise-keeps-nchw"])
def test_auto_resolves_to_what_the_cached_probe_measured(probing, nchw, cl, expect_cl):
    cfg = _cfg()
    _seed_cache(probing, cfg, _all_rates(cfg, nchw, cl, bf16=1.0))
    before = probing.read_text()
    out = resolve(cfg)
    assert out.train.channels_last is expect_cl and out.train.precision == "fp32"
    assert probing.read_text() == before, "a cached probe is read, not measured again"


def test_margins_and_bf16_rule():
    t = lambda rates: {c: Timing(c, r, 0.0, 1) for c, r in rates.items()}  # noqa: E731
    nchw, cl = Candidate("fp32", False), Candidate("fp32", True)
    b_nchw, b_cl = Candidate("bf16", False), Candidate("bf16", True)
    assert choose(t({nchw: 100, cl: 106})) == cl
    assert choose(t({nchw: 100, cl: 104})) == nchw, "under 1.05x is noise"
    assert choose(t({nchw: 100, cl: 130, b_nchw: 150, b_cl: 150})) == cl, "bf16 must be >= 1.2x the best fp32"
    assert choose(t({nchw: 100, cl: 130, b_nchw: 140, b_cl: 170})) == b_cl
    assert choose({}) == probe.DEFAULT


def test_bf16_is_a_candidate_only_where_the_cpu_has_it_natively():
    cfg = _cfg()
    assert {c.precision for c in candidates(cfg, native_bf16=False)} == {"fp32"}
    assert {c.precision for c in candidates(cfg, native_bf16=True)} == {"fp32", "bf16"}
    pinned = _cfg(**{"train.precision": "fp32", "train.channels_last": False})
    assert candidates(pinned, native_bf16=True) == [Candidate("fp32", False)], "what the user pinned is not probed"
    flags = probe.cpu_flags()
    assert probe.native_bf16_cpu() == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_report_matrices_pin_fp32():
    from harness.report.reproduce import report_names
    from harness.sweep.matrix import load_matrix

    for name in report_names():
        assert load_matrix(name).base.get("train.precision") == "fp32", name


def test_a_real_probe_times_caches_and_prints_once(probing, capsys):
    cfg = _cfg()
    first = resolve(cfg)
    err = capsys.readouterr().err
    assert "probe: timing" in err and "<- auto" in err
    rows = read_rows(probing)
    assert {(r["precision"], r["channels_last"]) for r in rows} == {(c.precision, str(c.channels_last))
                                                                   for c in candidates(cfg)}
    assert all(float(r["img_per_s"]) > 0 for r in rows)
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert len(chosen) == 1 and chosen[0]["channels_last"] == str(first.train.channels_last)
    assert chosen[0]["precision"] == first.train.precision
    again = resolve(cfg)
    assert capsys.readouterr().err == "" and len(read_rows(probing)) == len(rows), "measured once per shape"
    assert (again.train.channels_last, again.train.precision) == (first.train.channels_last, first.train.precision)
    with open(probing) as fh:
        assert next(csv.reader(fh)) == PROBE_COLUMNS


def test_probe_off_is_the_plain_default(probing, monkeypatch):
    monkeypatch.setenv("HARNESS_PROBE", "off")
    out = resolve(_cfg())
    assert (out.train.precision, out.train.channels_last) == ("fp32", False)
    assert not probing.exists()


def test_bench_probe_and_roofline_write_rows(probing, tmp_path, capsys):
    out = tmp_path / "throughput.csv"
    common = ["--arch", "tiny_cnn", "--recipe", "", "--dataset", "synthetic", "--batch-size", "32", "--rounds", "1",
              "--out", str(out)]
    assert main(["bench", "probe", *common]) == 0
    printed = capsys.readouterr().out
    assert "auto ->" in printed and "vs fp32 NCHW" in printed
    rows = [r for r in read_rows(out) if r["kind"] == "probe"]
    assert len(rows) == len(candidates(_cfg())) and sum("auto's choice" in r["note"] for r in rows) == 1
    assert [float(r["ratio"]) for r in rows if "fp32 NCHW" in r["note"]] == [1.0]
    assert read_rows(probing), "bench probe refreshes the cache auto reads"
    # One thread: the matmul peak and the training rate are timed moments apart, and under `make test`'s two
    # workers a two-thread timing gets whatever core the other worker leaves. At two threads a peak timed
    # while the other worker was busy (120 GFLOP/s, AMD EPYC with AVX-512) put training at 110 % of it.
    assert main(["bench", "roofline", *common, "--threads", "1"]) == 0
    roof = [r for r in read_rows(out) if r["kind"] == "roofline"]
    peak = [r for r in roof if r["arch"] == "matmul" and r["precision"] == "fp32"]
    assert len(peak) == 1 and "GFLOP/s" in peak[0]["note"]
    fractions = [float(r["ratio"]) for r in roof if r["arch"] == "tiny_cnn"]
    assert len(fractions) == 2 and all(0 < f < 1 for f in fractions), "training reaches a fraction of the matmul peak"
    assert all(r["hardware"] and r["git_sha"] for r in roof)


def test_speed_page_shows_the_probe_and_roofline_tables_of_committed_code(probing, tmp_path):
    from harness.report.docs import _speed_page

    out = tmp_path / "throughput.csv"
    common = ["--arch", "lenet_cnn", "--recipe", "", "--dataset", "synthetic", "--batch-size", "16", "--rounds", "1",
              "--out", str(out)]
    assert main(["bench", "probe", *common]) == 0
    rows = read_rows(out)
    committed = [{**r, "git_sha": "0123456789"} for r in rows]
    page = _speed_page([], committed)
    assert "## CPU choices" in page and "### probe," in page and "x fp32 NCHW" in page
    assert page.count("| arch:lenet_cnn |") == len(rows)
    dirty = [{**r, "git_sha": "0123456789+dirty"} for r in rows]
    assert "## CPU choices" not in _speed_page([], dirty), "rows of uncommitted code are not published"
