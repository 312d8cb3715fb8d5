"""Optimizers and learning-rate schedules, each chosen by name from a registry.

Everything is torch's own (``torch.optim`` and ``torch.optim.lr_scheduler``); this module only maps
names and epoch-based settings onto them. Schedulers that the literature defines per epoch (step,
multistep, exponential, plateau) step per epoch; the rest step per batch, so warm-up and annealing
are smooth even on short runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import lr_scheduler as sch

from harness.errors import ConfigError
from harness.registry import Registry
from harness.run.config import OptimConfig, SchedConfig
from harness.run.muon import ConvMuon

OPTIMIZERS: Registry[Callable[[list[dict], OptimConfig], torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULERS: Registry[SchedulerSpec] = Registry("scheduler")


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict], c: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0,
                           weight_decay=c.weight_decay)


@OPTIMIZERS.register("adam")
def _adam(groups: list[dict], c: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay,
                            amsgrad=c.amsgrad)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict], c: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay,
                             amsgrad=c.amsgrad)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(groups: list[dict], c: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(groups, lr=c.lr, momentum=c.momentum, eps=c.eps, weight_decay=c.weight_decay)


@OPTIMIZERS.register("muon")
def _muon(groups: list[dict], c: OptimConfig) -> torch.optim.Optimizer:
    return ConvMuon(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, muon_lr=c.muon_lr,
                    muon_momentum=c.muon_momentum)


def param_groups(
    model: nn.Module, c: OptimConfig, head_prefix: str | None, lr: float
) -> list[dict]:
    """Split trainable parameters into groups: head vs body (own learning rates) x decay vs no decay.

    Args:
        model: the (unwrapped) model; frozen parameters (``requires_grad=False``) are left out.
        c: optimizer settings; ``head_lr``/``body_lr`` default to ``lr``.
        head_prefix: dotted name prefix of the classifier head, or None when there is no split.
        lr: the base learning rate after any scaling rule.

    Returns:
        A list of param-group dicts for a ``torch.optim`` optimizer, each with a ``name``.
    """
    scale = lr / c.lr
    head_lr = c.head_lr * scale if c.head_lr is not None else lr
    body_lr = c.body_lr * scale if c.body_lr is not None else lr
    no_decay_ids: set[int] = set()
    bn_bias_ids = {id(m.bias) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    split_bn_bias = c.bn_bias_lr_mult != 1.0
    if c.no_decay_bn_bias:
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                no_decay_ids.update(id(p) for p in m.parameters(recurse=False))
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                no_decay_ids.add(id(p))
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if head_prefix and (n == head_prefix or n.startswith(head_prefix + ".")) else "body"
        if split_bn_bias and id(p) in bn_bias_ids:
            part += "_bn_bias"
        buckets.setdefault((part, id(p) in no_decay_ids), []).append(p)
    groups = []
    for (part, nodecay), params in sorted(buckets.items()):
        g_lr = head_lr if part.startswith("head") else body_lr
        if part.endswith("_bn_bias"):
            g_lr *= c.bn_bias_lr_mult
        g = {"params": params, "lr": g_lr, "name": part + ("_no_decay" if nodecay else "")}
        if nodecay:
            g["weight_decay"] = 0.0
        groups.append(g)
    if not groups:
        raise ConfigError("no parameter is trainable: check --trainable / --freeze")
    return groups


def kilostep_scale(momentum: float) -> float:
    """airbench's unit of decoupled hyperparameters: 1024 examples times the step a unit gradient makes
    under momentum ``m`` in the long run (``1 + 1/(1 - m)``, counting the step that adds it)."""
    return 1024 * (1 + 1 / (1 - momentum))


def decouple(groups: list[dict], c: OptimConfig, global_batch: int) -> list[dict]:
    """``optim.decoupled``: groups whose lr was given per 1024 examples, turned into torch's units in place.

    Each group's torch lr is ``lr x global_batch / kilostep_scale`` (times its multiplier, already in
    the group): the loss is a mean over the batch, so ``global_batch`` puts back what airbench's summed
    loss has. Torch's SGD multiplies weight decay by the lr, so each group's decay is divided by its
    own lr: every weight then shrinks by ``weight_decay x global_batch / kilostep_scale`` per step (times
    the schedule), whatever lr or multiplier its group has. Groups marked no-decay keep 0.
    """
    k = global_batch / kilostep_scale(c.momentum)
    decay_per_step = c.weight_decay * k
    for g in groups:
        g["lr"] = g["lr"] * k
        if g.get("weight_decay", None) != 0.0:
            g["weight_decay"] = decay_per_step / g["lr"] if g["lr"] > 0 else 0.0
    return groups


def build_optimizer(groups: list[dict], c: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``c.name`` over ``groups``."""
    return OPTIMIZERS.get(c.name)(groups, c)


@dataclass
class Schedule:
    """A torch LR scheduler and when to step it: ``"step"`` (per batch) or ``"epoch"``."""

    scheduler: sch.LRScheduler | sch.ReduceLROnPlateau
    interval: str

    def step_batch(self) -> None:
        """Call after every optimizer step."""
        if self.interval == "step":
            self.scheduler.step()

    def step_epoch(self, val_loss: float) -> None:
        """Call after every epoch's validation."""
        if isinstance(self.scheduler, sch.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.interval == "epoch":
            self.scheduler.step()


@dataclass(frozen=True)
class SchedulerSpec:
    """A registered schedule: how to build it, and whether a linear warm-up may precede it."""

    build: Callable[..., Schedule]
    warmup: bool = True  # onecycle and cyclic warm up by design; plateau has no step count to warm up over


def scheduler(name: str, *, warmup: bool = True) -> Callable[[Callable[..., Schedule]], Callable[..., Schedule]]:
    """Register a schedule builder ``(opt, SchedConfig, epochs, steps_per_epoch) -> Schedule`` under ``name``."""

    def add(fn: Callable[..., Schedule]) -> Callable[..., Schedule]:
        SCHEDULERS.register(name, SchedulerSpec(fn, warmup))
        return fn

    return add


def takes_warmup(name: str) -> bool:
    """Whether schedule ``name`` may follow a linear warm-up (raises on an unknown name)."""
    return SCHEDULERS.get(name).warmup


def _per_step(epochs: float, steps_per_epoch: int) -> int:
    return max(1, int(round(epochs * steps_per_epoch)))


@scheduler("constant")
def _constant(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.ConstantLR(opt, factor=1.0, total_iters=0), "step")


@scheduler("step")
def _step(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.StepLR(opt, step_size=c.step_size, gamma=c.gamma), "epoch")


@scheduler("multistep")
def _multistep(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.MultiStepLR(opt, milestones=list(c.milestones), gamma=c.gamma), "epoch")


@scheduler("exponential")
def _exponential(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.ExponentialLR(opt, gamma=c.gamma), "epoch")


@scheduler("linear")
def _linear(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    base = opt.param_groups[0]["initial_lr"] if "initial_lr" in opt.param_groups[0] else opt.param_groups[0]["lr"]
    end = max(c.min_lr / base, 1e-8) if base > 0 else 1e-8
    return Schedule(sch.LinearLR(opt, start_factor=1.0, end_factor=min(end, 1.0), total_iters=_per_step(epochs, spe)), "step")


@scheduler("poly")
def _poly(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.PolynomialLR(opt, total_iters=_per_step(epochs, spe), power=c.power), "step")


@scheduler("cosine")
def _cosine(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.CosineAnnealingLR(opt, T_max=_per_step(epochs, spe), eta_min=c.min_lr), "step")


@scheduler("onecycle", warmup=False)
def _onecycle(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    max_lr = [g["lr"] for g in opt.param_groups]
    return Schedule(sch.OneCycleLR(opt, max_lr=max_lr, total_steps=_per_step(epochs, spe) + 1,
                                   pct_start=c.pct_start), "step")


@scheduler("cyclic", warmup=False)
def _cyclic(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    max_lr = [g["lr"] for g in opt.param_groups]
    base_lr = [lr * c.base_lr_factor for lr in max_lr]
    # CyclicLR cycles momentum by default, which only SGD-style optimizers have.
    cycle_momentum = "momentum" in opt.defaults and opt.defaults.get("momentum", 0) > 0
    return Schedule(sch.CyclicLR(opt, base_lr=base_lr, max_lr=max_lr, step_size_up=_per_step(c.cycle_epochs, spe),
                                 cycle_momentum=cycle_momentum), "step")


@scheduler("poly_cyclic", warmup=False)
def _poly_cyclic(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    """``SequentialLR``: polynomial decay for ``poly_epochs``, then cyclic (the attention report's chain)."""
    n_poly = _per_step(min(c.poly_epochs, epochs), spe)
    poly = sch.PolynomialLR(opt, total_iters=n_poly, power=c.power)
    cyc = _cyclic(opt, c, epochs, spe).scheduler
    return Schedule(sch.SequentialLR(opt, [poly, cyc], milestones=[n_poly]), "step")


def piecewise_factor(step: int, total: int, start: float, peak_at: float, floor: float) -> float:
    """The ``piecewise`` schedule's lr factor at ``step`` of ``total``: ``start`` -> 1 at ``peak_at x total``
    (linear), then linear down to ``floor`` at ``total`` (and ``floor`` after it)."""
    peak = peak_at * total
    if step < peak:
        return start + (1 - start) * step / peak
    if step >= total:
        return floor
    return 1 + (floor - 1) * (step - peak) / max(total - peak, 1e-9)


@scheduler("piecewise", warmup=False)
def _piecewise(opt, c: SchedConfig, epochs: float, spe: int) -> Schedule:
    # airbench94's triangle (arXiv 2404.00498): 0.2 -> 1 at 23% of the steps -> 0.07, stepped per batch.
    total = _per_step(epochs, spe)
    return Schedule(sch.LambdaLR(opt, lambda t: piecewise_factor(t, total, c.warmup_start_factor, c.peak_at,
                                                                 c.floor_factor)), "step")


@scheduler("plateau", warmup=False)
def _plateau(opt, c: SchedConfig, epochs: int, spe: int) -> Schedule:
    return Schedule(sch.ReduceLROnPlateau(opt, mode="min", factor=c.gamma, patience=c.patience), "epoch")


def build_schedule(opt: torch.optim.Optimizer, c: SchedConfig, epochs: int, steps_per_epoch: int) -> Schedule:
    """The schedule named by ``c.name``, with optional linear warm-up in front (``SequentialLR``).

    Raises:
        ConfigError: unknown name, or warm-up asked for with a schedule it cannot precede.
    """
    spec = SCHEDULERS.get(c.name)
    make = spec.build
    if c.warmup_epochs <= 0:
        return make(opt, c, epochs, steps_per_epoch)
    if not spec.warmup:
        raise ConfigError(warmup_error(c.name))
    main = make(opt, c, max(epochs - c.warmup_epochs, 1), steps_per_epoch)
    if main.interval == "epoch":
        n_warm = max(1, int(math.ceil(c.warmup_epochs)))
    else:
        n_warm = _per_step(c.warmup_epochs, steps_per_epoch)
    warm = sch.LinearLR(opt, start_factor=c.warmup_start_factor, end_factor=1.0, total_iters=n_warm)
    return Schedule(sch.SequentialLR(opt, [warm, main.scheduler], milestones=[n_warm]), main.interval)


def warmup_error(name: str) -> str:
    """The one line for a warm-up asked of a schedule that takes none."""
    return (f"sched.warmup_epochs cannot be combined with sched.name={name} (onecycle, cyclic and piecewise "
            "warm up by design; plateau has no step count)")


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group (the head's, when groups differ)."""
    return float(opt.param_groups[0]["lr"])
