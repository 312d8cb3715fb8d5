"""``harness bench roofline``: how close training comes to this CPU's physical limit.

The limit is what the CPU's matmul reaches: a large square ``torch.mm`` in fp32 (and bf16 where the CPU
computes it natively), in GFLOP/s at the run's thread count. Beside it, each model's achieved training
GFLOP/s: images/s x 3 x its forward FLOPs (backward costs about twice the forward; FLOPs counted by
torch's FlopCounterMode, a multiply-add being 2), under fp32 NCHW (the CPU default before the probe) and
under what ``auto`` chooses (:mod:`harness.run.probe`), both timed in this one run. Convolutions of
CIFAR-sized models reach a fraction of the matmul peak: the fraction is the figure to beat.
Rows (kind ``roofline``) go to ``results/throughput.csv``; ``ratio`` holds the fraction of peak.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from harness.bench.probe import target_config, write_rows
from harness.provenance import provenance
from harness.report.rows import forward_mflops
from harness.run.probe import DEFAULT, candidates, choose, measured, native_bf16_cpu

#: The side of the square matmul that sets the peak (large enough to be compute bound on a CPU core).
MATMUL_N = 2048


def matmul_gflops(dtype_name: str, threads: int, n: int = MATMUL_N, seconds: float = 1.0, blocks: int = 3) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype_name`` (fp32 or bf16): the best of ``blocks`` timed blocks."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        out = torch.empty(n, n, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up
        rates = []
        for _ in range(blocks):
            t0, k = time.perf_counter(), 0
            while k == 0 or time.perf_counter() - t0 < seconds / blocks:
                torch.mm(a, b, out=out)
                k += 1
            rates.append(2 * n**3 * k / (time.perf_counter() - t0) / 1e9)
    finally:
        torch.set_num_threads(before)
    # The best block, not the median: a peak is what the core did at least once. A block slowed by other work
    # on the machine (make test's second worker) understates it, and training then read as over 100 % of it.
    return max(rates)


def main(args: argparse.Namespace) -> int:
    """Measure the peaks and each target's achieved fraction; print the table; append rows."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    threads = args.threads or torch.get_num_threads()
    peaks = {"fp32": matmul_gflops("fp32", threads)}
    if native_bf16_cpu():
        peaks["bf16"] = matmul_gflops("bf16", threads)
    prov = provenance("cpu")
    keep = {k: prov[k] for k in ("hardware", "torch", "ray", "git_sha", "date")}
    print(f"roofline: {prov['hardware']}, {threads} thread(s)")
    rows: list[dict[str, Any]] = []
    for p, g in peaks.items():
        print(f"  matmul {MATMUL_N}x{MATMUL_N} {p}: {g:.1f} GFLOP/s (the peak)")
        rows.append({"kind": "roofline", "arch": "matmul", "device": "cpu", "precision": p, "world_size": 1,
                     "note": f"peak: {MATMUL_N}x{MATMUL_N} torch.mm, {g:.1f} GFLOP/s at {threads} thread(s)",
                     "ratio": 1.0, **keep})
    print(f"  {'target':<18} {'settings':<22} {'img/s':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for target in args.targets:
        cfg = target_config(target, args)
        mflops = forward_mflops(cfg)
        timings = measured(cfg, threads, rounds=args.rounds, remeasure=True, cands=candidates(cfg))
        pick = choose(timings)
        for label, c in (("default", DEFAULT), ("auto", pick)):
            t = timings[c]
            gflops = t.img_per_s * 3 * mflops / 1e3 if mflops else None
            frac = gflops / peaks.get(c.precision, peaks["fp32"]) if gflops else None
            print(f"  {target:<18} {label + ': ' + c.label:<22} {t.img_per_s:>8.1f} "
                  f"{gflops or 0:>8.1f} {(frac or 0):>8.1%}")
            rows.append({"kind": "roofline", "arch": cfg.model.arch, "preset": target, "dataset": cfg.data.dataset,
                         "batch_size": cfg.train.batch_size, "device": "cpu", "precision": c.precision,
                         "world_size": 1, "img_per_s": round(t.img_per_s, 1), "runs": t.rounds,
                         "ratio": round(frac, 4) if frac else None,
                         "note": f"{label} ({c.label}): {gflops or 0:.1f} training GFLOP/s "
                                 f"(3 x {mflops or 0:.1f} forward MFLOPs an image) of {peaks.get(c.precision, peaks['fp32']):.1f} peak",
                         **keep})
    write_rows(rows, args.out)
    return 0
