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
CUDA is present, airbench's own ``airbench94`` runs the same number of times beside the harness runs, on the
same images (:func:`airbench_peer`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.files import THROUGHPUT_CSV
from harness.provenance import provenance
from harness.report.docs import render_speed_docs
from harness.results_csv import THROUGHPUT_COLUMNS, append_rows, results_dir
from harness.run.config import apply_overrides, load_config
from harness.run.recipes import recipe_path
from harness.run.summary import RunSummary

if TYPE_CHECKING:
    from loaders.types import RawData


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
    # torch is heavy: loaded when this runs, so importing this module stays light
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
    # torch is heavy: loaded when this runs, so importing this module stays light
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


def airbench_files(root: Path, raw: RawData) -> None:
    """airbench's data files, ``<root>/train.pt`` and ``test.pt``, written from the harness's CIFAR-10 so the
    peer trains and tests on the same images (its loader would otherwise download them): each a dict of uint8
    (N, 32, 32, 3) ``images``, int64 ``labels`` and the ``classes``, the layout airbench 0.1.x's
    ``CifarLoader`` saves and reads."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    root.mkdir(parents=True, exist_ok=True)
    for name, x, y in (("train.pt", raw.train_x, raw.train_y), ("test.pt", raw.test_x, raw.test_y)):
        torch.save({"images": x.permute(0, 2, 3, 1).contiguous(), "labels": y, "classes": list(raw.classes)},
                   root / name)


PEER_API = ("train94", "warmup94", "evaluate", "CifarLoader", "lib_airbench94")


def airbench_peer(runs: int, data_dir: str | None) -> RecipeResult | str:
    """airbench's own airbench94, ``runs`` times on the same CIFAR-10, or the line saying why it was skipped.

    airbench 0.1.x reads ``./cifar10/{train,test}.pt`` and ``train94()`` returns the trained model, so the
    runs happen in a temp folder holding :func:`airbench_files`. Timed per run, as airbench times it:
    ``train94`` (no per-epoch evaluation) and the TTA evaluation of the test set; not timed: placing the
    data on the GPU and one warm-up run (``warmup94``). It trains on all 50,000 images (no val split).
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    if importlib.util.find_spec("airbench") is None:
        return "peer: airbench is not installed (pip install airbench; CUDA only): skipped"
    if not torch.cuda.is_available():
        return "peer: airbench needs CUDA and there is none here: skipped"
    import airbench  # noqa: PLC0415 - optional peer

    if missing := [n for n in PEER_API if getattr(airbench, n, None) is None]:
        return f"peer: this airbench lacks {', '.join(missing)} (the API of airbench 0.1.x): skipped"
    from loaders.reader import read_raw
    from loaders.types import DataOptions

    work = Path(tempfile.mkdtemp(prefix="harness-airbench-"))
    cwd = os.getcwd()
    res = RecipeResult("airbench94 (peer)", note="airbench's train94 on the same 50k/10k images, no val split; "
                       "timed: its training and TTA test evaluation (its full run, not time to a val target)")
    try:
        airbench_files(work / "cifar10", read_raw(DataOptions("cifar10", data_dir=data_dir)))
        os.chdir(work)
        hyp = airbench.lib_airbench94.hyp
        train = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"],
                                     altflip=True)
        test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        airbench.warmup94(train_loader=train)
        for _ in range(runs):
            torch.cuda.synchronize()
            t = time.perf_counter()
            model = airbench.train94(train_loader=train, verbose=False)
            acc = airbench.evaluate(model, test, tta_level=hyp["net"]["tta_level"])  # .item(): synchronised
            res.summaries.append(RunSummary(test_acc=float(acc), timed_to_target_s=time.perf_counter() - t))
    except Exception as e:  # noqa: BLE001 - a peer's failure must not lose the harness rows
        return f"peer: airbench94 failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}): skipped"
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
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
                    "seeds": " ".join(str(s.seed) for s in r.summaries),
                    "note": note, **prov})
    return out


def main(args: argparse.Namespace) -> int:
    """Run every recipe ``--runs`` times (and the airbench peer where it can run), print, append rows."""
    results = [run_recipe(name, args) for name in args.recipe]
    if args.peer:
        peer = airbench_peer(args.runs, args.data_dir)
        if isinstance(peer, str):
            print(peer)
        else:
            results.append(peer)
    table = rows(results, args)
    out = Path(args.out) if args.out else results_dir() / THROUGHPUT_CSV
    append_rows(out, table, THROUGHPUT_COLUMNS)
    print(f"rows appended to {out}")
    if not args.out:  # the page reads the results folder's CSV, not a one-off --out file

        print(f"docs: {render_speed_docs()}")
    return 0
