"""``harness bench probe``: time every layout x precision (and, asked, compile) of a model's training step here.

The same measurement ``auto`` makes on a CPU the first time it meets a model's shape
(:mod:`harness.run.probe`), made afresh over several rounds and printed: each candidate's images/s, its
ratio to fp32 NCHW (the harness's CPU default before the probe), the loader's share of a step, and the
candidate ``auto`` takes. The timings replace the cached ones, so later runs of that shape use them.
Rows (kind ``probe``) go to ``results/throughput.csv``.

``--compile`` adds the chosen candidate under ``torch.compile`` (inductor): its compile seconds, its
speed-up per step and the epochs of the target's training split after which the compile has paid for itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.files import THROUGHPUT_CSV
from harness.provenance import provenance
from harness.report.costs import split_images
from harness.report.docs import render_speed_docs
from harness.results_csv import THROUGHPUT_COLUMNS, append_rows, results_dir
from harness.run.config import RunConfig, apply_overrides, load_config
from harness.run.probe import DEFAULT, Candidate, Timing, candidates, choose, measured, table, time_candidates
from harness.run.recipes import recipe_path


def target_config(target: str, args: argparse.Namespace) -> Any:
    """The resolved config of one ``--arch`` or ``--recipe`` target, with every speed option left open.

    Raises:
        HarnessError: an unknown model or recipe, or a bad ``--set`` (one line).
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    from harness.run.resolve import resolve

    kind, name = target.split(":", 1)
    cfg = load_config(recipe_path(name)) if kind == "recipe" else apply_overrides(RunConfig(), {"model.arch": name})
    over: dict[str, Any] = {"data.dataset": args.dataset} if kind == "arch" else {}
    if args.batch_size:
        over["train.batch_size"] = args.batch_size
    if args.data_dir:
        over["data.data_dir"] = args.data_dir
    cfg = apply_overrides(apply_overrides(cfg, over), args.set) if args.set else apply_overrides(cfg, over)
    out = resolve(cfg, probe=False)
    out.train.precision, out.train.channels_last, out.train.compile = "auto", None, False  # every candidate
    return out


def probe_target(target: str, args: argparse.Namespace) -> tuple[Any, dict[Candidate, Timing], Candidate, int]:
    """Time one target's candidates afresh (and its compiled choice with ``--compile``); print the table."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    cfg = target_config(target, args)
    threads = args.threads or torch.get_num_threads()
    print(f"probe: {target} (batch {cfg.train.batch_size}, {threads} thread(s), {args.rounds} round(s)) ...",
          flush=True)
    timings = measured(cfg, threads, rounds=args.rounds, remeasure=True, cands=candidates(cfg))
    pick = choose(timings)
    if args.compile:
        c = Candidate(pick.precision, pick.channels_last, compile=True)
        timings[c] = time_candidates(cfg, [c], threads, args.rounds)[c]
    for line in table(timings, pick):
        print(f"  {line}")
    print(f"  auto -> {pick.label}")
    if args.compile:
        print(f"  {payback(timings[pick], timings[Candidate(pick.precision, pick.channels_last, True)], cfg)}")
    return cfg, timings, pick, threads


def payback(eager: Timing, compiled: Timing, cfg: Any) -> str:
    """One line on whether ``--compile`` pays: its seconds, speed-up and the epochs of ``cfg``'s training split
    it takes to pay back."""
    images = split_images(cfg)[0]
    speedup = compiled.img_per_s / eager.img_per_s
    saved = images / eager.img_per_s - images / compiled.img_per_s  # seconds per epoch
    back = (f"pays back after {(compiled.compile_s or 0) / saved:.1f} epochs of {images:,} images" if saved > 0
            else "never pays back")
    return f"compile: {compiled.compile_s or 0:.1f} s, {speedup:.2f}x per step, {back}"


def rows(target: str, cfg: Any, timings: dict[Candidate, Timing], pick: Candidate,
         threads: int) -> list[dict[str, Any]]:
    """``throughput.csv`` rows (kind ``probe``): one per candidate, its ratio to fp32 NCHW in ``ratio``."""
    prov = provenance("cpu")
    base = timings.get(DEFAULT)
    out = []
    for c, t in timings.items():
        note = f"{c.label}; {threads} thread(s); loader {t.loader_share:.1%} of a step"
        if c == pick:
            note += "; auto's choice"
        if c.compile and t.compile_s is not None:
            eager = timings.get(Candidate(c.precision, c.channels_last))
            note += f"; {payback(eager, t, cfg)}" if eager else f"; compile {t.compile_s:.1f} s"
        out.append({"kind": "probe", "arch": cfg.model.arch, "backend": cfg.data.loader,
                    "preset": target, "dataset": cfg.data.dataset, "batch_size": cfg.train.batch_size,
                    "device": "cpu", "precision": c.precision, "world_size": 1, "workers": 0,
                    "img_per_s": round(t.img_per_s, 1), "ms_per_step": round(1000 * cfg.train.batch_size / t.img_per_s, 2),
                    "ratio": round(t.img_per_s / base.img_per_s, 3) if base else None, "runs": t.rounds,
                    "note": note, **{k: prov[k] for k in ("hardware", "torch", "ray", "git_sha", "date")}})
    return out


def main(args: argparse.Namespace) -> int:
    """Probe every target, print the tables, append the rows to ``results/throughput.csv``."""
    out_rows: list[dict[str, Any]] = []
    for target in args.targets:
        cfg, timings, pick, threads = probe_target(target, args)
        out_rows += rows(target, cfg, timings, pick, threads)
    write_rows(out_rows, args.out)
    return 0


def write_rows(out_rows: list[dict[str, Any]], out: str | None) -> None:
    """Append ``out_rows`` to ``out`` (default ``results/throughput.csv``); for the repo's results, regenerate
    ``docs/speed.md``, which shows them (``bench probe`` and ``bench roofline`` both end here)."""
    path = Path(out) if out else results_dir() / THROUGHPUT_CSV
    append_rows(path, out_rows, THROUGHPUT_COLUMNS)
    print(f"rows appended to {path}")
    if not out:
        print(f"page: {render_speed_docs()}")


def targets(arch: str | None, recipe: str | None) -> list[str]:
    """``arch:NAME`` and ``recipe:NAME`` targets from the comma lists of ``--arch`` and ``--recipe``."""
    out = [f"arch:{a.strip()}" for a in (arch or "").split(",") if a.strip()]
    return out + [f"recipe:{r.strip()}" for r in (recipe or "").split(",") if r.strip()]
