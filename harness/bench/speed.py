"""``harness bench speed``: time to a validation target of shipped recipes, timed the way the speed records are.

Each run is an ordinary ``harness run`` of the recipe (in process, ``train.target_acc`` set to the
target). What is timed is the recipe's own work (``RunSummary.timed_to_target_s``): the whitening init,
the training epochs up to the one whose validation first reached the target, and that validation with
its TTA. Not timed: loading the data and placing it on the device, ``--compile`` warm-up (reported on its
own, ``compile_s``), checkpoints, and the validations of earlier epochs (measurement, not recipe). On a
GPU every span is synchronised; evaluation and whitening use CUDA events. The full run's time
(whitening, training, the test's TTA evaluation: how airbench reports it) is ``timed_s``.

Per recipe: mean and std over ``--runs`` seeds of test accuracy and of time to target (over the runs that
reached it), the fraction that reached it, and the ratio of each recipe's mean time to the first one's.
Rows (kind ``speed``) go to ``results/throughput.csv``. Peer: where the ``airbench`` package imports and
CUDA is present, airbench's own ``airbench94`` runs the same number of times beside the harness runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.files import THROUGHPUT_CSV
from harness.provenance import provenance
from harness.results_csv import THROUGHPUT_COLUMNS, append_rows, results_dir
from harness.run.summary import RunSummary


@dataclass
class RecipeResult:
    """The runs of one recipe (or of the airbench peer)."""

    name: str
    summaries: list[RunSummary] = field(default_factory=list)
    note: str = ""

    def accs(self) -> list[float]:
        return [s.test_acc for s in self.summaries if s.test_acc is not None]

    def times(self) -> list[float]:
        """Timed seconds to the target, of the runs that reached it."""
        return [s.timed_to_target_s for s in self.summaries if s.timed_to_target_s is not None]

    @property
    def reached(self) -> float:
        return len(self.times()) / max(len(self.summaries), 1)

    @property
    def mean_time(self) -> float | None:
        t = self.times()
        return statistics.fmean(t) if t else None


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def recipe_config(name: str, target: float, seed: int, sets: list[str], data_dir: str | None, out: str,
                  stop_at_target: bool):
    """The resolved config of one timed run of recipe ``name``.

    Raises:
        HarnessError: an unknown recipe or a bad ``--set`` (one line).
    """
    from harness.run.config import apply_overrides, load_config
    from harness.run.recipes import recipe_path
    from harness.run.resolve import resolve

    cfg = load_config(recipe_path(name))
    over: dict[str, object] = {"train.target_acc": target, "train.seed": seed, "out": out,
                               "name": f"speed-{name}", "train.measure_inference": False,
                               "train.checkpoint_every": 0, "train.stop_at_target": stop_at_target}
    if data_dir:
        over["data.data_dir"] = data_dir
    cfg = apply_overrides(cfg, over)
    return resolve(apply_overrides(cfg, sets) if sets else cfg)


def run_recipe(name: str, args: argparse.Namespace) -> RecipeResult:
    """``args.runs`` runs of recipe ``name``, seeds 0..runs-1, in process."""
    from harness.run.trainer import fit

    res = RecipeResult(name)
    out = args.runs_dir or tempfile.mkdtemp(prefix="harness-speed-")
    for seed in range(args.runs):
        cfg = recipe_config(name, args.target, seed, args.set, args.data_dir, out, args.stop_at_target)
        s = fit(cfg)
        res.summaries.append(s)
        t = f"{s.timed_to_target_s:.2f} s" if s.timed_to_target_s is not None else "not reached"
        print(f"speed: {name} seed {seed}: test acc {s.test_acc:.4f} (tta {s.tta}), val {s.val_acc:.4f}, "
              f"time to {args.target:g}: {t}, full run {s.timed_s:.2f} s", flush=True)
    return res


def airbench_peer(runs: int) -> RecipeResult | str:
    """airbench's own airbench94, ``runs`` times, or the line saying why it was skipped."""
    import torch

    if importlib.util.find_spec("airbench") is None:
        return "peer: airbench is not installed (pip install airbench; CUDA only): skipped"
    if not torch.cuda.is_available():
        return "peer: airbench needs CUDA and there is none here: skipped"
    import airbench  # noqa: PLC0415 - optional peer

    train = getattr(airbench, "train94", None)
    if not callable(train):  # the entry point is the PyPI package's as documented; not checked here offline
        return "peer: this airbench has no train94(): skipped"
    res = RecipeResult("airbench94 (peer)", note="airbench package, its own data loading inside its time")
    for _ in range(runs):
        t = time.perf_counter()
        try:
            acc = train()  # the TTA test accuracy
        except Exception as e:  # noqa: BLE001 - a peer's failure must not lose the harness rows
            return f"peer: airbench.train94() failed ({type(e).__name__}: {str(e)[:120]}): skipped"
        res.summaries.append(RunSummary(test_acc=float(acc), timed_to_target_s=time.perf_counter() - t))
    return res


def rows(results: list[RecipeResult], args: argparse.Namespace) -> list[dict]:
    """Print the table; return its ``throughput.csv`` rows (ratios against the first recipe's mean time)."""
    base = results[0].mean_time if results else None
    first = next((s for r in results for s in r.summaries if s.device), RunSummary())
    prov = provenance(first.device or "cpu")
    out = []
    print(f"\n{'recipe':<22} {'test acc':>16} {'time to target':>18} {'reached':>8} {'ratio':>6}")
    for r in results:
        am, asd = _mean_std(r.accs())
        tm, tsd = _mean_std(r.times())
        ratio = tm / base if tm and base else None
        s0 = r.summaries[0] if r.summaries else RunSummary()
        acc_txt = f"{am:.4f} ± {asd:.4f}" if am is not None else "-"
        t_txt = f"{tm:.2f} ± {tsd:.2f} s" if tm is not None else "-"
        print(f"{r.name:<22} {acc_txt:>16} {t_txt:>18} {r.reached:>8.0%} {ratio or 0:>6.3f}")
        compile_s = [s.compile_s for s in r.summaries if s.compile_s is not None]
        note = (f"target val {args.target:g}; timed: whitening + training + the reaching (TTA) validation; "
                f"ema {s0.ema}"
                + (f"; compile {statistics.fmean(compile_s):.1f} s (not timed)" if compile_s else "")
                + (f"; {r.note}" if r.note else ""))
        out.append({"kind": "speed", "arch": s0.arch or r.name, "backend": s0.loader, "preset": r.name,
                    "dataset": s0.dataset, "batch_size": s0.batch_size, "device": s0.device or "cpu",
                    "precision": s0.precision, "world_size": s0.world_size, "workers": 0,
                    "img_per_s": s0.train_img_per_s, "ratio": ratio, "acc": am, "acc_std": asd, "time_s": tm,
                    "time_s_std": tsd, "reached": r.reached, "runs": len(r.summaries), "tta": s0.tta,
                    "note": note, **prov})
    return out


def main(args: argparse.Namespace) -> int:
    """Run every recipe ``--runs`` times (and the airbench peer where it can run), print, append rows."""
    results = [run_recipe(name, args) for name in args.recipe]
    if args.peer:
        peer = airbench_peer(args.runs)
        if isinstance(peer, str):
            print(peer)
        else:
            results.append(peer)
    table = rows(results, args)
    out = Path(args.out) if args.out else results_dir() / THROUGHPUT_CSV
    append_rows(out, table, THROUGHPUT_COLUMNS)
    print(f"rows appended to {out}")
    if not args.out:  # the page reads the results folder's CSV, not a one-off --out file
        from harness.report.docs import render_speed_docs

        print(f"docs: {render_speed_docs()}")
    return 0
