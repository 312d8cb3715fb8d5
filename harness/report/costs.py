"""What a run costs, measured: a few training steps of its exact configuration, timed on this machine.

A report row's cost used to be extrapolated from the median FLOP rate of the rows already run, which
varies 15x between models on one CPU. Here each configuration is timed as it will run: the same model,
strategy (frozen stages included), optimizer, augmentation, batch, image size, precision, layout and
thread count, through the harness's own setup and optimizer step (:mod:`harness.run.loop`), on
synthetic images of the row's shape. After two warm-up steps, a few steps are timed (data and
augmentation included), and a few evaluation batches.

Rates are kept in ``results/costs.csv``, one row per (CPU model, threads, configuration), with the date,
torch version and sha that measured them: a result of this machine like any other, so a page made on
another day (or from another machine's clone) still shows what was measured, and where. Each row also
says how many cores' worth of CPU other processes used while it was timed (``others_cpus``): a rate
timed beside other work is too slow, so it is timed again the next time it is needed on an idle CPU.

A run's cost adds its stages (transfer pretrains first): training steps from its epochs, its
``train.max_steps`` or its wall-clock budget, whichever ends it first, plus a validation pass per epoch
and one test pass. Early stopping can only shorten it: the figure is an upper bound there.

A GPU's cost is not measured here: it is stated as ``max(FLOPs / GPU_FLOPS, steps x GPU_STEP_S)`` per
stage, because thousands of small steps are bound by kernel launches, not by FLOPs.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.provenance import cpu_model, git_sha, versions
from harness.report.rows import forward_mflops
from harness.results_csv import append_rows, read_rows
from harness.run.config import epoch_count, flat_config, parse_duration, planned_epochs
from harness.run.timing import (
    BUSY_CPUS,
    EVAL_BATCHES,
    MAX_TIMED_STEPS,
    NATIVE_SIZE,
    TIMED_S,
    TIMED_STEPS,
    WARMUP_STEPS,
    OthersMeter,
    others_busy_now,
    probe_config,
)

COSTS_CSV = "costs.csv"
COST_COLUMNS = ["key", "cpu", "threads", "arch", "img_size", "in_chans", "batch_size", "precision",
                "channels_last", "strategy", "train_img_per_s", "eval_img_per_s", "steps_timed", "load", "others_cpus",
                "torch", "git_sha", "date"]
#: An assumed effective training rate of one current data-centre GPU (stated on every page): well under an
#: H100's dense bf16 peak, since CIFAR-sized models at small batches are bound by memory and launches.
GPU_FLOPS = 20e12
#: The least time one eager training step takes on a GPU (forward, backward and optimizer kernels launched
#: one by one): an assumption, stated on every page. It is what bounds a batch-32 LeNet, not its FLOPs.
GPU_STEP_S = 3e-3
#: Loading the data and building the model before the first step (per stage): a stated allowance.
SETUP_S = 15.0
#: Training, validation and test images at the default validation fraction (0.1).
SPLIT_IMAGES = {"cifar10": (45_000, 5_000, 10_000), "mnist": (54_000, 6_000, 10_000),
                "imagenette": (8_522, 947, 3_925), "synthetic": (900, 100, 200)}
#: Keys that do not change what a step costs; a rate measured for one value serves them all.
_COST_FREE = ("name", "out", "train.seed", "train.epochs", "train.budget", "train.early_stop_patience",
              "train.min_delta", "train.max_steps", "train.max_steps_per_epoch", "train.target_acc",
              "train.stop_at_target", "train.checkpoint_every", "train.progress", "train.measure_inference", "train.save_best",
              "data.data_dir", "data.download", "data.subset", "data.val_fraction", "data.folds", "data.fold",
              "strategy.init_from", "strategy.weights", "strategy.pretrain_epochs", "dist.use_gpu")


@dataclass
class Rate:
    """One configuration's measured speed on one CPU model at one thread count."""

    train_img_per_s: float
    eval_img_per_s: float
    cpu: str
    threads: int
    date: str = ""
    steps: int = TIMED_STEPS  # training steps timed
    load: float = 0.0  # the machine's 1-minute load average when it was measured (this process's work too)
    others_cpus: float | None = None  # cores' worth of other processes' CPU while timed; None: not recorded

    @property
    def beside_others(self) -> bool:
        """Timed beside other work, or not known to have been (a row from before ``others_cpus``)."""
        return self.others_cpus is None or self.others_cpus >= BUSY_CPUS


@dataclass
class StageCost:
    """One stage of a run: what it trains, and how long that takes here (when measured) and on a GPU."""

    label: str
    steps: int
    images: int  # training images seen
    eval_images: int  # validation every epoch, and the test
    flops: float | None  # training FLOPs (3 x forward) plus evaluation's
    bound: str  # what ends it: epochs, steps (train.max_steps) or budget (train.budget)
    rate: Rate | None = None
    seconds: float | None = None  # on this CPU, None when not measured

    @property
    def gpu_seconds(self) -> float | None:
        if self.flops is None:
            return None
        return max(self.flops / GPU_FLOPS, self.steps * GPU_STEP_S) + SETUP_S


@dataclass
class Cost:
    """A whole run (one seed): its stages, summed."""

    stages: list[StageCost]

    @property
    def seconds(self) -> float | None:
        parts = [s.seconds for s in self.stages]
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[misc]

    @property
    def gpu_seconds(self) -> float | None:
        parts = [s.gpu_seconds for s in self.stages]
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[misc]

    @property
    def rate(self) -> Rate | None:
        """The rate of the stage that costs most (what a page quotes)."""
        timed = [s for s in self.stages if s.rate is not None and s.seconds is not None]
        return max(timed, key=lambda s: s.seconds or 0.0).rate if timed else None

    @property
    def bound(self) -> str:
        return self.stages[-1].bound if self.stages else "epochs"


def rate_key(cfg: Any, threads: int) -> str:
    """The identity of what one step of ``cfg`` costs at ``threads``: the resolved config without the keys
    that do not change it (epochs, seeds, budgets, where data lives, ...)."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    from loaders.cache import cache_key

    flat = {k: v for k, v in flat_config(cfg).items() if k not in _COST_FREE and not k.startswith("sched.")
            and not (k.startswith("optim.") and k != "optim.name")}
    return cache_key({"config": flat, "threads": threads})


def read_rates(results: Path) -> dict[tuple[str, str], Rate]:
    """``results/costs.csv`` as ``{(cpu, key): Rate}``, the newest row of each winning."""
    out = {}
    for r in read_rows(Path(results) / COSTS_CSV):
        try:
            others = r.get("others_cpus")
            out[(r["cpu"], r["key"])] = Rate(float(r["train_img_per_s"]), float(r["eval_img_per_s"]), r["cpu"],
                                             int(r["threads"]), r.get("date", ""), load=float(r.get("load") or 0),
                                             others_cpus=float(others) if others else None)
        except (KeyError, ValueError):
            continue
    return out


def lookup(rates: dict[tuple[str, str], Rate], key: str, cpu: str | None) -> Rate | None:
    """This CPU's rate for ``key``; else the one measured on another CPU (the page names which)."""
    if cpu is not None and (cpu, key) in rates:
        return rates[(cpu, key)]
    others = [r for (c, k), r in rates.items() if k == key]
    return max(others, key=lambda r: r.date) if others else None


def stage_configs(cfg: Any) -> list[tuple[Any, bool, str]]:
    """``(stage config, starts from the previous stage, label)`` for each stage of the resolved ``cfg``."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    from harness.run.strategies import STRATEGIES

    return [(s.cfg, s.init_from_previous, s.label or cfg.strategy.name)
            for s in STRATEGIES.get(cfg.strategy.name).stages(cfg)]


def split_images(cfg: Any) -> tuple[int, int, int]:
    """Training, validation and test images of the stage's dataset (``data.subset`` and folds applied)."""
    d = cfg.data
    if d.dataset == "synthetic":
        n = d.synthetic_size or 50_000
        train, val, test = round(n * (1 - d.val_fraction)), round(n * d.val_fraction), max(n // 5, d.num_classes)
    else:
        train, val, test = SPLIT_IMAGES.get(d.dataset, SPLIT_IMAGES["cifar10"])
    if d.folds:
        total = train + val
        val, train = total // d.folds, total - total // d.folds
    if d.subset:  # the first N per class, of 10 classes, before the validation carve-out
        keep = min(1.0, d.subset * d.num_classes / (train + val))
        train, val = max(1, round(train * keep)), max(1, round(val * keep))
    return train, val, test


def plan_stage(cfg: Any, label: str, rate: Rate | None, mflops: float | None) -> StageCost:
    """The steps, images and time of one stage from its epochs, step cap and budget."""
    t = cfg.train
    train, val, test = split_images(cfg)
    per_epoch = math.ceil(train / t.batch_size) if not t.compile else train // t.batch_size
    if t.max_steps_per_epoch:
        per_epoch = min(per_epoch, t.max_steps_per_epoch)
    epochs = planned_epochs(t.epochs, per_epoch, t.max_steps)
    steps = max(1, round(epochs * per_epoch))
    views = {"none": 1, "flip": 2, "flip_translate": 6}.get(t.tta, 1)
    eval_images = (epoch_count(epochs) * val + test) * views
    bound = "steps" if t.max_steps is not None and epochs < t.epochs else "epochs"
    flops = None if mflops is None else mflops * 1e6 * (3 * steps * t.batch_size + eval_images)
    seconds = None
    if rate is not None:
        seconds = SETUP_S + steps * t.batch_size / rate.train_img_per_s + eval_images / rate.eval_img_per_s
        if t.budget is not None:
            budget = parse_duration(t.budget)
            # The budget ends training; the last validation and the test still run.
            capped = SETUP_S + budget + (val + test) * views / rate.eval_img_per_s
            if capped < seconds:
                seconds, bound = capped, "budget"
                steps = min(steps, int(budget * rate.train_img_per_s / t.batch_size))
    return StageCost(label, steps, steps * t.batch_size, eval_images, flops, bound, rate, seconds)


def run_cost(cfg: Any, threads: int, rates: dict[tuple[str, str], Rate], cpu: str | None) -> Cost:
    """The cost of one run of the resolved ``cfg`` from rates already measured (None where not)."""
    stages = []
    for stage_cfg, _prev, label in stage_configs(cfg):
        rate = lookup(rates, rate_key(stage_cfg, threads), cpu)
        stages.append(plan_stage(stage_cfg, label, rate, forward_mflops(stage_cfg)))
    return Cost(stages)


def measure(cfg: Any, threads: int, init_from: Path | None = None, keep_weights: Path | None = None) -> Rate:
    """Time ``cfg``'s training steps and evaluation batches here, at ``threads`` intra-op threads.

    ``init_from``: a folder with the previous stage's ``best.pt`` (a stage that starts from it);
    ``keep_weights``: write this stage's weights there as ``best.pt`` for the next stage's probe.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    from harness.run.loop import evaluate, local_context, setup
    from harness.run.strategies import set_train_mode

    probe = probe_config(cfg)
    if init_from is not None:
        probe.strategy.init_from = str(init_from)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="harness-cost-") as d:
            run = setup(probe, Path(d), local_context("cpu"))
            run.train_loader.set_epoch(0)
            set_train_mode(run.model)
            batches = iter(run.train_loader)
            for _ in range(WARMUP_STEPS):
                run.step(*next(batches))
            with OthersMeter() as others:
                t0, n, steps = time.perf_counter(), 0, 0
                for x, y in batches:
                    loss, _ = run.step(x, y)
                    float(loss.detach())  # the step is done when its loss is
                    n, steps = n + y.size(0), steps + 1
                    if steps >= MAX_TIMED_STEPS or (steps >= TIMED_STEPS and time.perf_counter() - t0 > TIMED_S):
                        break
                train_rate = n / (time.perf_counter() - t0)
            val = [b for _, b in zip(range(EVAL_BATCHES + 1), iter(run.val_loader))]
            evaluate(run.model, val[:1], run.num_classes, run.ctx, probe.train.precision)  # warm-up
            t0 = time.perf_counter()
            evaluate(run.model, val[1:] or val, run.num_classes, run.ctx, probe.train.precision, tta=probe.train.tta)
            eval_rate = sum(int(b[1].size(0)) for b in (val[1:] or val)) / (time.perf_counter() - t0)
            if keep_weights is not None:
                keep_weights.mkdir(parents=True, exist_ok=True)
                torch.save({"model": run.model.state_dict()}, keep_weights / "best.pt")
    finally:
        torch.set_num_threads(before)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return Rate(train_rate, eval_rate, cpu_model(), threads, _dt.date.today().isoformat(), steps, load,
                others.cpus)


def measure_run(cfg: Any, threads: int, results: Path, remeasure: bool = False) -> Cost:
    """Measure each stage of the resolved ``cfg`` not yet in ``results/costs.csv`` for this CPU (or timed there
    beside other work, while this CPU is idle now); its cost."""
    rates, cpu = read_rates(results), cpu_model()
    stages = stage_configs(cfg)
    # Asked at most once, and only where a rate timed beside other work could be timed again.
    idle_now = functools.cache(lambda: (o := others_busy_now()) is not None and o < BUSY_CPUS)
    with tempfile.TemporaryDirectory(prefix="harness-cost-stages-") as d:
        prev: Path | None = None
        for i, (stage_cfg, from_prev, _label) in enumerate(stages):
            key, here = rate_key(stage_cfg, threads), Path(d) / f"stage{i}"
            feeds_next = i + 1 < len(stages) and stages[i + 1][1]
            if remeasure or (cpu, key) not in rates or (rates[(cpu, key)].beside_others and idle_now()):
                rates[(cpu, key)] = measure(stage_cfg, threads, prev if from_prev else None,
                                            here if feeds_next else None)
                append_rows(Path(results) / COSTS_CSV, [_row(key, stage_cfg, rates[(cpu, key)], git_sha(),
                                                             versions()["torch"])], COST_COLUMNS)
            elif feeds_next:  # measured already, but the next stage's probe starts from this one's weights
                here.mkdir(parents=True)
                _write_weights(stage_cfg, here / "best.pt")
            prev = here
    return run_cost(cfg, threads, rates, cpu)


def _write_weights(cfg: Any, path: Path) -> None:
    """Freshly initialised weights of ``cfg``'s model, where a later stage's probe needs a checkpoint."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    from harness.run.strategies import build_model

    p = probe_config(cfg)
    chans = 1 if p.data.grayscale else 3
    torch.save({"model": build_model(p, 10, chans, p.data.img_size).state_dict()}, path)


def _row(key: str, cfg: Any, rate: Rate, sha: str, torch_version: str) -> dict[str, Any]:
    return {"key": key, "cpu": rate.cpu, "threads": rate.threads, "arch": cfg.model.arch,
            "img_size": cfg.data.img_size or NATIVE_SIZE.get(cfg.data.dataset), "in_chans": 1 if cfg.data.grayscale else 3,
            "batch_size": cfg.train.batch_size, "precision": cfg.train.precision,
            "channels_last": cfg.train.channels_last, "strategy": cfg.strategy.name,
            "train_img_per_s": rate.train_img_per_s, "eval_img_per_s": rate.eval_img_per_s,
            "steps_timed": rate.steps, "load": round(rate.load, 2),
            "others_cpus": None if rate.others_cpus is None else round(rate.others_cpus, 2),
            "torch": torch_version, "git_sha": sha, "date": rate.date}


def duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
