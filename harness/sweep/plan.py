"""``harness plan``: what a sweep will cost before it runs, for the resources it would get.

A sweep of the ``full`` matrix is a thousand trials: how many epochs ASHA will let them train, how many
GPU-hours that is, and how long it takes on 64 GPUs are questions to answer before spending them. The
plan counts the matrix's trials (as ``harness sweep`` would make them: grid cells x samples, or the
random draws), then per trial:

- **ASHA's expected epochs.** Rungs sit at grace x rf^k epochs below the maximum (Ray's
  ``ASHAScheduler``); at each a trial goes on with probability 1/rf. A trial of E epochs is then
  expected to train ``min(E, r0) + sum_k rf^-(k+1) x (min(E, r(k+1)) - r(k))`` epochs (the last
  segment ends at E). It is an expectation: a real sweep promotes by rank, not by chance.
- **Cost.** On GPUs the stated rate of :mod:`harness.report.costs` (``max(FLOPs / GPU_FLOPS, steps x
  GPU_STEP_S)`` plus a setup allowance per stage): an assumption, printed with the result. On CPUs the
  rates measured on this CPU model in ``results/costs.csv`` (``harness reproduce --estimate`` measures
  them); trials with none are counted as not measured, never guessed.
- **Concurrency.** Trials at once = resources // resources per trial; the wall time is at best the
  total over that, and never less than the longest trial.

Phase two (``--rerun-top K --seeds S``) reruns K configurations of each architecture with S seeds at
full budget; its cost is each architecture's costliest configuration times K x S (an upper bound).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from harness.provenance import cpu_model
from harness.report.costs import GPU_FLOPS, GPU_STEP_S, SETUP_S, read_rates, run_cost
from harness.results_csv import results_dir
from harness.run.config import RunConfig, apply_overrides
from harness.run.resolve import resolve
from harness.run.strategies import STRATEGIES
from harness.sweep.asha import asha_params


def asha_rungs(max_epochs: float, grace: int, reduction_factor: float) -> list[int]:
    """The epochs at which ASHA judges trials: grace x rf^k, below ``max_epochs``."""
    rungs, r = [], float(grace)
    while r < max_epochs:
        rungs.append(int(round(r)))
        r *= reduction_factor
    return rungs


def expected_epochs(epochs: float, rungs: list[int], reduction_factor: float) -> float:
    """The epochs a trial of ``epochs`` is expected to train under ASHA (see the module docstring)."""
    if not rungs or rungs[0] >= epochs:
        return float(epochs)
    total, survive = float(rungs[0]), 1.0
    for k, r in enumerate(rungs):
        if r >= epochs:
            break
        survive /= reduction_factor
        nxt = rungs[k + 1] if k + 1 < len(rungs) and rungs[k + 1] < epochs else epochs
        total += survive * (nxt - r)
    return total


@dataclass
class TrialCost:
    """One trial of the plan: its architecture, epochs, expected epochs and seconds (GPU, and this CPU's)."""

    arch: str
    epochs: float
    expected: float
    gpu_s: float  # the whole run, stated rate
    cpu_s: float | None  # the whole run at the measured rate of this CPU, None where not measured

    def gpu_expected_s(self) -> float:
        return SETUP_S + (self.gpu_s - SETUP_S) * self.expected / max(self.epochs, 1e-9)

    def cpu_expected_s(self) -> float | None:
        if self.cpu_s is None:
            return None
        return SETUP_S + (self.cpu_s - SETUP_S) * self.expected / max(self.epochs, 1e-9)


@dataclass
class Plan:
    """A sweep's trials and what they cost, before it runs."""

    matrix: str
    trials: list[TrialCost]
    rungs: list[int]
    grace: int
    reduction_factor: float
    reruns: list[TrialCost] = field(default_factory=list)  # phase two: K x S per architecture

    def expected_epochs(self) -> float:
        return sum(t.expected for t in self.trials)

    def full_epochs(self) -> float:
        return sum(t.epochs for t in self.trials)


def trial_costs(m: Any, sets: list[str], num_samples: int | None, gpus: bool, threads: int) -> list[TrialCost]:
    """Every trial of matrix ``m`` (with the ``--set`` overrides) and its stated GPU and measured CPU cost.

    Raises:
        HarnessError: a trial that does not resolve (an unknown name, an impossible value), in one line.
    """
    rates, cpu = read_rates(results_dir()), cpu_model()
    out, seen = [], {}
    for t in m.configurations(num_samples=num_samples):
        cfg = apply_overrides(apply_overrides(RunConfig(), t["overrides"]), sets) if sets else \
            apply_overrides(RunConfig(), t["overrides"])
        cfg.dist.use_gpu = gpus
        cfg = resolve(_without_weights(cfg), cluster_gpus=1.0 if gpus else 0.0, probe=False)
        key = repr(sorted((k, str(v)) for k, v in t["overrides"].items()))
        if key not in seen:  # a repeated sample of the same cell costs the same
            c = run_cost(cfg, threads, rates, cpu)
            seen[key] = (c.gpu_seconds or SETUP_S, c.seconds)
        gpu_s, cpu_s = seen[key]
        out.append(TrialCost(cfg.model.arch, float(cfg.train.epochs), float(cfg.train.epochs), gpu_s, cpu_s))
    return out


def _without_weights(cfg: Any) -> Any:
    """``cfg`` as a scratch run with the same trainable layers, where it starts from pretrained weights.

    A step costs the same whatever the weights hold, and resolving a finetune would fetch them (offline:
    an error). The strategy's own rewrite runs first, so a linear probe still trains only its head.
    """

    s = cfg.strategy
    if not (s.weights or s.init_from):
        return cfg
    out = STRATEGIES.get(s.name).rewrite(copy.deepcopy(cfg))
    out.strategy.name, out.strategy.weights, out.strategy.init_from = "scratch", None, None
    return out


def make_plan(m: Any, sets: list[str], num_samples: int | None = None, gpus: bool = True, threads: int = 1,
              grace: int | None = None, reduction_factor: float | None = None, rerun_top: int = 0,
              seeds: int = 1) -> Plan:
    """The plan of a sweep of matrix ``m`` (see the module docstring)."""

    trials = trial_costs(m, sets, num_samples, gpus, threads)
    max_t = max(t.epochs for t in trials)
    _, g, rf = asha_params(math.ceil(max_t), grace if grace is not None else m.grace_period,
                           reduction_factor if reduction_factor is not None else m.reduction_factor)
    rungs = asha_rungs(max_t, g, rf)
    for t in trials:
        t.expected = expected_epochs(t.epochs, rungs, rf)
    reruns = []
    if rerun_top:
        for arch in sorted({t.arch for t in trials}):
            worst = max((t for t in trials if t.arch == arch), key=lambda t: t.gpu_s)
            reruns += [TrialCost(arch, worst.epochs, worst.epochs, worst.gpu_s, worst.cpu_s)] * (rerun_top * seeds)
    return Plan(m.name, trials, rungs, g, rf, reruns)


def hours(seconds: float) -> str:
    """Seconds as hours with sensible digits (0.02, 1.4, 312), without the unit."""
    h = seconds / 3600
    return f"{h:.2f}" if h < 1 else f"{h:.1f}" if h < 100 else f"{h:,.0f}"


def report(plan: Plan, gpus: int | None, cpus: int | None, gpus_per_trial: float, cpus_per_trial: int) -> list[str]:
    """The plan's lines: trials, ASHA, concurrency, GPU-hours (or CPU-hours) and wall time."""
    n, full, exp = len(plan.trials), plan.full_epochs(), plan.expected_epochs()
    lines = [f"plan: matrix {plan.matrix}: {n} trials, {len({t.arch for t in plan.trials})} architectures"]
    if plan.rungs:
        lines.append(f"  ASHA: grace {plan.grace}, reduction factor {plan.reduction_factor:g}, rungs at epochs "
                     f"{', '.join(map(str, plan.rungs))}: {exp:,.0f} expected epochs of {full:,.0f} "
                     f"({exp / max(full, 1):.0%}), {exp / max(n, 1):.1f} a trial")
    else:
        lines.append(f"  ASHA: no rung before the last epoch: every trial trains its {full / max(n, 1):g} epochs")
    if plan.reruns:
        lines.append(f"  phase two: {len(plan.reruns)} reruns at full budget "
                     f"({sum(t.epochs for t in plan.reruns):,.0f} epochs)")
    everything = plan.trials + plan.reruns
    if gpus:
        slots = max(1, int(gpus // gpus_per_trial))
        search = sum(t.gpu_expected_s() for t in plan.trials)
        rerun = sum(t.gpu_s for t in plan.reruns)
        longest = max(t.gpu_s for t in everything)
        wall = max((search + rerun) * gpus_per_trial / gpus, longest)
        lines += [f"  resources: {gpus} GPUs, {gpus_per_trial:g} a trial: {min(slots, n)} trials at once",
                  f"  cost: {hours(search)} GPU-hours to search" + (f" + {hours(rerun)} to rerun" if rerun else "")
                  + f" (stated rate: {GPU_FLOPS / 1e12:g} TFLOP/s, {GPU_STEP_S * 1e3:g} ms a step at least, "
                  f"{SETUP_S:g} s setup a stage)",
                  f"  wall: about {hours(wall)} h at best (the total over {gpus} GPUs, at least the longest trial)"]
    if cpus:
        slots = max(1, cpus // cpus_per_trial)
        measured = [t for t in everything if t.cpu_s is not None]
        lines.append(f"  resources: {cpus} CPUs, {cpus_per_trial} a trial: {min(slots, n)} trials at once")
        if measured:
            total = sum(t.cpu_expected_s() or 0.0 for t in measured if t in plan.trials) + \
                sum(t.cpu_s or 0.0 for t in measured if t not in plan.trials)
            lines.append(f"  cost: {hours(total)} CPU-hours of trials measured on this CPU ({len(measured)} of "
                         f"{len(everything)} trials); wall about {hours(total / slots)} h at best for those")
        if len(measured) < len(everything):
            lines.append(f"  not measured on this CPU: {len(everything) - len(measured)} trials (no rate in "
                         "results/costs.csv; `harness reproduce NAME --estimate` measures report rows)")
    return lines
