"""What ``auto`` means on a CPU, measured: the memory layout and precision that train fastest here.

Why measure: the fastest layout (NCHW or channels_last) and precision (fp32, or bf16 autocast) of a CPU
convnet depend on the machine and on the model. channels_last was measured 1.35x faster for airbench94
and 1.08x for ResNet-20 on one CPU, and slower for models that are mostly matmuls; bf16 runs several
times faster on CPUs with AMX, but a bf16 matmul on an AVX2 CPU (which emulates it) ran at 0.3 GFLOP/s
against 97 in fp32. So on a CPU ``train.precision: auto`` and an unset ``train.channels_last`` are
settled by timing a few training steps of the run's own shape (arch, image size, channels, batch,
threads) in each candidate. The result is cached once per CPU model, torch version and shape, in
``probe.csv`` beside the decoded-data cache (:func:`loaders.cache.cache_root`).

The rules:

- the default, fp32 NCHW, stays unless a candidate beats it by more than noise: channels_last by
  :data:`LAYOUT_MARGIN`, bf16 by :data:`BF16_MARGIN` (bf16 changes the numerics, so it must clearly pay);
- bf16 is a candidate only where the CPU computes it natively (``amx_bf16`` or ``avx512_bf16`` among its
  flags); elsewhere it is never tried;
- a key the user set (``train.precision: fp32``, ``train.channels_last: false``) is not probed.

``HARNESS_PROBE=off`` turns the probe off: ``auto`` is then fp32 NCHW on a CPU. The test suite uses it,
where a probe's seconds cost more than the speed they buy.
"""

from __future__ import annotations

import datetime as _dt
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.provenance import cpu_model, versions
from harness.results_csv import append_rows, locked, read_rows
from harness.run.timing import NATIVE_SIZE, probe_config

PROBE_CSV = "probe.csv"
PROBE_COLUMNS = ["cpu", "torch", "threads", "arch", "img_size", "in_chans", "batch_size", "precision",
                 "channels_last", "compile", "img_per_s", "loader_share", "rounds", "load", "chosen", "date"]
#: How much faster than fp32 NCHW channels_last must be to be chosen (timing noise on an idle CPU is ~2 %).
LAYOUT_MARGIN = 1.05
#: How much faster than the best fp32 candidate bf16 must be to be chosen (it changes the numerics).
BF16_MARGIN = 1.2
#: Per candidate and round: warm-up steps, then steps until MIN_S have passed (at least MIN_STEPS).
WARMUP_STEPS, MIN_STEPS, MAX_STEPS, MIN_S = 2, 3, 40, 1.0
#: The CPU flags that mean bf16 is computed natively (AMX tiles, or AVX-512 BF16 dot products).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Candidate:
    """One way to run the same training step."""

    precision: str  # fp32 or bf16
    channels_last: bool
    compile: bool = False  # torch.compile (inductor); `harness bench probe --compile` only, never auto

    @property
    def label(self) -> str:
        return f"{self.precision} {'channels_last' if self.channels_last else 'NCHW'}{' compiled' if self.compile else ''}"


DEFAULT = Candidate("fp32", False)


@dataclass
class Timing:
    """One candidate's measured speed: the median over rounds, and the loader's share of a step."""

    candidate: Candidate
    img_per_s: float
    loader_share: float  # seconds spent getting batches / seconds of the timed steps
    rounds: int
    compile_s: float | None = None  # a compiled candidate: the compile warm-up's seconds


def cpu_flags() -> set[str]:
    """The CPU's feature flags, from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (see :data:`NATIVE_BF16_FLAGS`)."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def enabled() -> bool:
    """Whether ``auto`` may probe (``HARNESS_PROBE=off`` says no)."""
    return os.environ.get("HARNESS_PROBE", "on").strip().lower() not in ("off", "0", "false", "no")


def candidates(cfg: Any, native_bf16: bool | None = None) -> list[Candidate]:
    """The candidates ``cfg`` leaves open: its ``auto`` precision and unset layout, or the one it pins."""
    bf16 = native_bf16_cpu() if native_bf16 is None else native_bf16
    precisions = (["fp32", "bf16"] if bf16 else ["fp32"]) if cfg.train.precision == "auto" else [cfg.train.precision]
    layouts = [False, True] if cfg.train.channels_last is None else [bool(cfg.train.channels_last)]
    return [Candidate(p, cl) for p in precisions for cl in layouts]


def shape(cfg: Any, threads: int) -> dict[str, Any]:
    """What a probe's result depends on, besides the candidate: the machine and the run's shape."""
    return {"cpu": cpu_model(), "torch": versions()["torch"], "threads": threads, "arch": cfg.model.arch,
            "img_size": cfg.data.img_size or NATIVE_SIZE.get(cfg.data.dataset, 32),
            "in_chans": 1 if cfg.data.grayscale or cfg.data.dataset == "mnist" else 3,
            "batch_size": cfg.train.batch_size}


def probe_file(cfg: Any) -> Path:
    """``probe.csv`` in the cache folder of ``cfg``'s data root."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    from loaders.cache import cache_root
    from loaders.reader import resolve_data_dir

    return cache_root(resolve_data_dir(cfg.data.data_dir)) / PROBE_CSV


def read_cached(path: Path, key: dict[str, Any]) -> dict[Candidate, Timing]:
    """The timings cached in ``path`` for ``key`` (the latest of each candidate)."""
    out: dict[Candidate, Timing] = {}
    for r in read_rows(path):
        if all(str(r.get(k)) == str(v) for k, v in key.items()):
            c = Candidate(r["precision"], r["channels_last"] == "True", r.get("compile") == "True")
            out[c] = Timing(c, float(r["img_per_s"]), float(r["loader_share"] or 0), int(r["rounds"] or 1))
    return out


def choose(timings: dict[Candidate, Timing]) -> Candidate:
    """The candidate ``auto`` takes once the margins are applied (see the module docstring)."""
    if not timings:
        return DEFAULT

    def rate(c: Candidate) -> float:
        return timings[c].img_per_s

    # The layouts of fp32 (or of the one precision the config pins) against NCHW, then bf16 against those.
    timings = {c: t for c, t in timings.items() if not c.compile} or timings
    plain = [c for c in timings if c.precision == "fp32"] or list(timings)
    best = next((c for c in plain if not c.channels_last), plain[0])
    if rate(max(plain, key=rate)) > rate(best) * LAYOUT_MARGIN:
        best = max(plain, key=rate)
    bf16 = [c for c in timings if c.precision == "bf16" and c not in plain]
    if bf16 and rate(max(bf16, key=rate)) > rate(best) * BF16_MARGIN:
        best = max(bf16, key=rate)
    return best


def time_candidates(cfg: Any, cands: list[Candidate], threads: int, rounds: int = 1) -> dict[Candidate, Timing]:
    """Time ``cfg``'s training step in each candidate, here, at ``threads`` intra-op threads.

    Each candidate gets its own model and data of the run's shape (synthetic images, the harness's own
    setup and optimizer step), then the candidates are timed in turn, ``rounds`` times, so a change in
    the machine's load affects them alike; the median round counts.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    from harness.run.loop import local_context, setup
    from harness.run.strategies import set_train_mode

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rates: dict[Candidate, list[tuple[float, float]]] = {c: [] for c in cands}
    compile_s: dict[Candidate, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="harness-probe-") as d:
            runs = {}
            for i, c in enumerate(cands):
                p = probe_config(cfg)
                # The model's shape from scratch: the layout that suits it does not depend on where its
                # weights came from, and a scratch start needs no pretrained weights or earlier stage.
                p.strategy = type(p.strategy)()
                p.train.precision, p.train.channels_last, p.train.compile = c.precision, c.channels_last, c.compile
                runs[c] = setup(p, Path(d) / str(i), local_context("cpu"))
                if c.compile:  # setup compiled it on one batch (compile_warmup) and timed that
                    compile_s[c] = runs[c].compile_s or 0.0
                set_train_mode(runs[c].model)
            batches = {c: _cycle(run.train_loader) for c, run in runs.items()}
            for c, run in runs.items():
                for _ in range(WARMUP_STEPS):
                    run.step(*next(batches[c]))
            for _ in range(rounds):
                for c, run in runs.items():
                    rates[c].append(time_steps(run.step, batches[c]))
    finally:
        torch.set_num_threads(before)
    return {c: Timing(c, statistics.median(r for r, _ in v), statistics.median(s for _, s in v), len(v),
                      compile_s.get(c)) for c, v in rates.items()}


def _cycle(loader: Any):
    """Batches of ``loader``, epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_steps(step: Any, batches: Any, min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS,
               min_s: float = MIN_S) -> tuple[float, float]:
    """Images/s of training steps until ``min_s`` have passed, and the share of that spent getting batches.

    The loader's share is what the tensor loader adds to a step on the same thread (it does not overlap
    the step on a CPU): the issue's bar is under 3 %.
    """
    t0, n, steps, fetch = time.perf_counter(), 0, 0, 0.0
    while steps < max_steps and (steps < min_steps or time.perf_counter() - t0 < min_s):
        f0 = time.perf_counter()
        x, y = next(batches)
        fetch += time.perf_counter() - f0
        loss, _ = step(x, y)
        float(loss.detach())  # the step is done when its loss is
        n, steps = n + y.size(0), steps + 1
    total = time.perf_counter() - t0
    return n / total, fetch / total


def measured(cfg: Any, threads: int, rounds: int = 1, remeasure: bool = False,
             cands: list[Candidate] | None = None) -> dict[Candidate, Timing]:
    """The timings of ``cfg``'s candidates on this machine: cached, or measured now and cached.

    A per-shape lock makes concurrent sweep trials of one shape measure once; the others wait and read.
    """
    cands = cands if cands is not None else candidates(cfg)
    path, key = probe_file(cfg), shape(cfg, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f"probe-{key['arch']}-{key['img_size']}-{key['in_chans']}-{key['batch_size']}-"
                          f"{threads}.lock")
    with locked(lock):
        have = {} if remeasure else read_cached(path, key)
        if any(c not in have for c in cands):  # all of them again, so their ratios come from one run
            have = time_candidates(cfg, cands, threads, rounds)
            chosen = choose(have)
            append_rows(path, [_row(key, t, chosen) for t in have.values()], PROBE_COLUMNS)
    return {c: have[c] for c in cands}


def _row(key: dict[str, Any], t: Timing, chosen: Candidate) -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return {**key, "precision": t.candidate.precision, "channels_last": t.candidate.channels_last,
            "compile": t.candidate.compile,
            "img_per_s": round(t.img_per_s, 2), "loader_share": round(t.loader_share, 4), "rounds": t.rounds,
            "load": round(load, 2), "chosen": t.candidate == chosen, "date": _dt.date.today().isoformat()}


def table(timings: dict[Candidate, Timing], chosen: Candidate) -> list[str]:
    """The probe's table: candidate, img/s, ratio to fp32 NCHW, loader share, and which one ``auto`` takes."""
    base = timings.get(DEFAULT)
    lines = [f"{'layout x precision':<22} {'img/s':>9} {'vs fp32 NCHW':>13} {'loader':>7}"]
    for c, t in timings.items():
        ratio = f"{t.img_per_s / base.img_per_s:.2f}x" if base else "-"
        mark = "  <- auto" if c == chosen else ""
        lines.append(f"{c.label:<22} {t.img_per_s:>9.1f} {ratio:>13} {t.loader_share:>6.1%}{mark}")
    return lines


def settle_cpu_auto(cfg: Any, probe: bool = True) -> None:
    """Settle ``cfg``'s ``auto`` precision and unset layout for a CPU run in place, from the probe.

    Without the probe (``probe=False``, ``HARNESS_PROBE=off``) or where nothing is left to choose, the
    default (fp32, NCHW) fills what is unset. The first run of a shape on a machine prints the probe's
    table once (on stderr).
    """
    cands = candidates(cfg)
    if len(cands) > 1 and probe and enabled():
        # torch is heavy: loaded when this runs, so importing this module stays light
        import torch

        threads = cfg.dist.cpus_per_worker or torch.get_num_threads()
        fresh = not read_cached(probe_file(cfg), shape(cfg, threads))
        if fresh:
            print(f"probe: timing {len(cands)} layouts x precisions of {cfg.model.arch} (batch "
                  f"{cfg.train.batch_size}, {threads} thread(s)) once on this machine ...", file=sys.stderr, flush=True)
        timings = measured(cfg, threads, cands=cands)
        pick = choose(timings)
        if fresh:
            for line in table(timings, pick):
                print(f"probe: {line}", file=sys.stderr, flush=True)
    else:
        pick = Candidate("fp32" if cfg.train.precision == "auto" else cfg.train.precision,
                         bool(cfg.train.channels_last))
    if cfg.train.precision == "auto":
        cfg.train.precision = pick.precision
    if cfg.train.channels_last is None:
        cfg.train.channels_last = pick.channels_last
