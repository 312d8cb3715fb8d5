"""``harness bench sweep``: what the sweep machinery costs per trial, measured on null trials.

Runs ``harness sweep --matrix null --num-samples N`` (trials that do almost nothing: see the matrix) as
a subprocess, locally or on a loopback multi-node cluster (:mod:`harness.bench.loopback`), and appends
one row per N to ``results/throughput.csv`` (``kind=sweep``):

- ``trials_per_min``: N over the sweep's wall time, from its first line to its exit;
- ``driver_cpu_s_per_trial``: the driver process's CPU seconds (user + system, its threads only) from
  the line that starts Tune to the line that reports the trials ended, over N. The trials run in other
  processes, so all of it is the harness's cost; start-up (imports, Ray's start) is left out so the figure
  compares across N, and is in ``note`` with the total;
- ``driver_peak_rss_mb``: the driver's peak resident memory (``getrusage`` at its exit);
- ``disk_kb_per_trial`` and ``wandb_kb_per_trial``: the sweep folder, and its W&B offline files, over N;
- ``merge_s``: the final leaderboard merge and docs page, timed again here from the sweep's folder.

Wall times are noisy where other work shares the CPUs; the driver's CPU seconds are the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from harness.bench.loopback import LoopbackCluster
from harness.bench.probe import write_rows
from harness.files import OUTCOME_FILE
from harness.provenance import provenance
from harness.report.docs import render_docs
from harness.report.leaderboard import write_results
from harness.report.records import collect

# The driver, run with its own resource usage written at exit (its threads only, not Ray's processes).
_METERED = ("import atexit, json, resource, runpy, sys\n"
            "def _usage(path=sys.argv.pop(1)):\n"
            "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    open(path, 'w').write(json.dumps({'cpu_s': u.ru_utime + u.ru_stime, 'maxrss_kb': u.ru_maxrss}))\n"
            "atexit.register(_usage)\n"
            "runpy.run_module('harness', run_name='__main__', alter_sys=True)\n")


def _du_kb(path: Path, pattern: str = "**/*") -> float:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file() and not p.is_symlink()) / 1024


class _Meter:
    """Reads the driver's output as it comes, and its CPU seconds at the lines that bracket Tune."""

    def __init__(self, proc: subprocess.Popen, name: str) -> None:
        self.proc, self.name = proc, name
        self.ps = psutil.Process(proc.pid)
        self.cpu_start = self.cpu_end = None
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _cpu(self) -> float | None:
        try:
            t = self.ps.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return None

    def _read(self) -> None:
        for line in self.proc.stdout:
            if self.cpu_start is None and line.startswith(f"sweep {self.name}: ") and " trials of matrix " in line:
                self.cpu_start = self._cpu()
            elif self.cpu_end is None and line.startswith(f"sweep {self.name}: ") and " trials ended in " in line:
                self.cpu_end = self._cpu()
            self.lines.append(line)


def run_one(n: int, nodes: int, wandb: str, root: Path, extra: list[str]) -> dict:
    """One null sweep of ``n`` trials; its measurements as a ``throughput.csv`` row (without provenance)."""
    name = f"null-{n}-{nodes}n"
    usage = root / f"{name}.usage.json"
    args = [sys.executable, "-c", _METERED, str(usage), "sweep", "--matrix", "null", "--num-samples", str(n),
            "--name", name, "--storage", str(root / "sweeps"), "--wandb", wandb,
            "--results-dir", str(root / "results"), "--docs-dir", str(root / "docs"), *extra]
    env = dict(os.environ)
    cluster = LoopbackCluster(nodes) if nodes > 1 else None
    t0 = time.monotonic()
    try:
        if cluster is not None:
            cluster.__enter__()
            env.update(cluster.env)
        else:
            env.pop("RAY_ADDRESS", None)
        t0 = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        meter = _Meter(proc, name)
        rc = proc.wait()
        meter.thread.join(timeout=10)
    finally:
        wall = time.monotonic() - t0
        if cluster is not None:
            cluster.stop()
    exp = root / "sweeps" / name
    used = json.loads(usage.read_text()) if usage.is_file() else {}
    ended = sum(1 for _ in exp.glob(f"*/{OUTCOME_FILE}"))
    t = time.monotonic()
    n_rows, _ = write_results(collect([exp]), root / "remerge")
    render_docs(root / "remerge", root / "remerge-docs")
    merge_s = time.monotonic() - t
    tune_cpu = (meter.cpu_end - meter.cpu_start) if meter.cpu_start is not None and meter.cpu_end is not None else None
    note = (f"null trials, {nodes} node(s), W&B {wandb}, exit {rc}, {ended}/{n} ended, {n_rows} leaderboard rows; "
            f"driver CPU {used.get('cpu_s', 0):.1f} s in all (start-up and merge included)")
    if rc != 0:
        note += "; last lines: " + " | ".join(x.strip() for x in meter.lines[-3:])
    return {"kind": "sweep", "arch": "mlp", "dataset": "synthetic", "workers": nodes, "world_size": 1,
            "runs": n, "trials": n, "trials_per_min": round(n / wall * 60, 2),
            "driver_cpu_s_per_trial": round(tune_cpu / n, 4) if tune_cpu is not None else None,
            "driver_peak_rss_mb": round(used["maxrss_kb"] / 1024, 1) if "maxrss_kb" in used else None,
            "disk_kb_per_trial": round(_du_kb(exp) / n, 1),
            "wandb_kb_per_trial": round(_du_kb(exp, "**/wandb/**/*") / n, 1),
            "merge_s": round(merge_s, 2), "note": note}


def main(args: argparse.Namespace) -> int:
    """Run the null sweeps of ``args.trials`` (a comma list of N) on ``args.nodes`` nodes; append their rows."""
    prov = provenance("cpu")
    keep = {k: prov[k] for k in ("hardware", "torch", "ray", "git_sha", "date")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for n in args.trials:
            row = run_one(n, args.nodes, args.wandb, Path(tmp), [f"--num-cpus={args.num_cpus}"]
                          if args.num_cpus and args.nodes <= 1 else [])
            print(f"  N={n:<5} {args.nodes} node(s): {row['trials_per_min']} trials/min, driver CPU "
                  f"{row['driver_cpu_s_per_trial']} s/trial, peak RSS {row['driver_peak_rss_mb']} MB, "
                  f"{row['disk_kb_per_trial']} KB/trial on disk ({row['wandb_kb_per_trial']} of W&B), "
                  f"merge + docs {row['merge_s']} s; {row['note']}", flush=True)
            rows.append({**row, **keep})
    write_rows(rows, args.out)
    return 0 if all("exit 0," in r["note"] for r in rows) else 1
