"""The one training loop: in process, under Ray Train DDP, and inside a Tune trial.

``train_loop_per_worker(config)`` follows the Ray Train examples: each worker builds its data, model
and optimizer, wraps the model for DDP, and reports the same number of times on every rank. Only
rank 0 writes files. The loop is a handful of named steps that :func:`run_worker` calls in order:

``setup`` (data, loaders, model, optimizer, schedule) -> ``resume`` (a :class:`TrainState`, from Ray
Train's checkpoint after a restart) -> per epoch ``train_one_epoch``, ``evaluate`` on validation and
``end_epoch`` (select, record, checkpoint, report) -> ``finish`` (test once on the selected weights,
build the :class:`RunSummary`, write the artifacts).

Metrics are accumulated as tensors and synchronised once per epoch (or every ``CHECK_EVERY`` steps
for the divergence and budget checks), so the loop adds almost nothing to a bare PyTorch step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.errors import HarnessError
from harness.files import BEST_CKPT, LAST_CKPT, METRICS_FILE
from harness.provenance import provenance
from harness.run.artifacts import write_artifacts, write_metrics
from harness.run.averaging import WeightAverager
from harness.run.config import (
    RunConfig,
    config_from_dict,
    config_hash,
    config_to_dict,
    epoch_count,
    parse_duration,
    planned_epochs,
    steps_in_epoch,
)
from harness.run.data import augment_spec, load_data
from harness.run.measure import (
    DeviceTimer,
    apply_backend_flags,
    autocast,
    backend_flags,
    inference_img_per_s,
    peak_mem_mb,
)
from harness.run.optim import Schedule, build_optimizer, build_schedule, current_lr, decouple, param_groups
from harness.run.progress import RunProgress
from harness.run.state import TrainState
from harness.run.strategies import STRATEGIES, set_train_mode
from harness.run.summary import RunSummary
from harness.run.tta import keep_layout, tta_logits
from harness.run.whiten import freeze_whiten_bias, init_whitening
from loaders import build_loader

CHECK_EVERY = 20  # steps between divergence/budget checks (each costs a device sync, and an all-reduce under DDP)
Report = Callable[[dict, "Path | None"], None]


@dataclass
class WorkerContext:
    """Where this worker sits: its rank, the world size, its device, and how it reports."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    ray_train: bool  # running inside a Ray Train worker group (reports go through ray.train.report)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        return f"[rank {self.rank}/{self.world_size}] " if self.world_size > 1 else ""


def local_context(device: str | torch.device = "cpu") -> WorkerContext:
    """The context of a single in-process worker on ``device``."""
    return WorkerContext(0, 1, 0, torch.device(device), False)


def _context(cfg: RunConfig) -> WorkerContext:
    ctx = _find_context(cfg)
    if ctx.device.type == "cuda" and not torch.cuda.is_available():
        # A GPU run placed where there is none (e.g. a node that declares GPUs it lacks): one line, not
        # a CUDA stack trace from deep inside the first tensor op.

        raise HarnessError(f"CUDA not available on this worker ({os.uname().nodename}), but the run resolved to "
                           "train on a GPU (dist.use_gpu); check the node's GPUs or set dist.use_gpu=false")
    return ctx


def _find_context(cfg: RunConfig) -> WorkerContext:
    try:
        # ray is heavy: imported only where Ray is used
        import ray.train

        ctx = ray.train.get_context()
        ws = ctx.get_world_size()
    except Exception:  # noqa: BLE001 - not inside a Ray Train worker: in process (maybe a Tune trial)
        return local_context("cuda" if cfg.dist.use_gpu or (cfg.dist.use_gpu is None and torch.cuda.is_available())
                             else "cpu")

    import ray.train.torch

    # Ray Train logs every report's whole metrics dict at INFO from each worker; keep warnings only.
    # (That module names its logger by file path, not by dotted module name.)
    from ray.train.v2._internal.execution import context as _train_context

    logging.getLogger(_train_context.__file__).setLevel(logging.WARNING)
    if cfg.dist.cpus_per_worker:
        # Ray pins each worker to its CPU share; more torch threads than that only thrash.
        torch.set_num_threads(max(1, cfg.dist.cpus_per_worker))
    # With no CUDA here, Ray's get_device() fails deep inside; _context turns this into one line.
    gpu_missing = bool(cfg.dist.use_gpu) and not torch.cuda.is_available()
    device = torch.device("cuda") if gpu_missing else ray.train.torch.get_device()
    return WorkerContext(ctx.get_world_rank(), ws, ctx.get_local_rank(), device, True)


def all_reduce(t: torch.Tensor, ctx: WorkerContext, op: str = "sum") -> torch.Tensor:
    """Sum (or max) ``t`` across ranks in place; a no-op in a single process."""
    if ctx.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


# ---------------------------------------------------------------------------------------------
# One optimizer step, and one epoch of them


@dataclass
class Stepper:
    """One optimizer step: forward under autocast, backward (loss-scaled for fp16), clip, step, schedule."""

    model: nn.Module  # what the batch goes through (maybe DDP-wrapped and compiled)
    params: Iterable[nn.Parameter]  # what is clipped: the unwrapped model's parameters
    opt: torch.optim.Optimizer
    sched: Schedule | None
    crit: nn.Module
    precision: str
    device: torch.device
    grad_clip: float | None = None
    scaler: torch.amp.GradScaler | None = None
    averager: WeightAverager | None = None  # --ema: updated after every optimizer step

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; returns ``(loss, logits)``, both still on the device."""
        with autocast(self.precision, self.device):
            out = self.model(x)
            loss = self.crit(out, y)
        self.opt.zero_grad(set_to_none=True)
        # Without fp16 the scaler is absent, and the same lines are the plain step.
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.grad_clip:
            if self.scaler:
                self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(list(self.params), self.grad_clip)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        if self.sched is not None:
            self.sched.step_batch()
        if self.averager is not None:
            self.averager.step()
        return loss, out


@dataclass
class EpochStats:
    """One training epoch, summed across ranks."""

    loss: float
    acc: float
    n: int  # images seen, all ranks
    seconds: float
    stop: str | None = None  # "diverged" or "budget" when the epoch was cut short


def train_one_epoch(step: Stepper, loader: Iterable, ctx: WorkerContext, *, max_steps: int,
                    deadline: float | None = None, on_step: Callable[[int], None] | None = None) -> EpochStats:
    """Run up to ``max_steps`` optimizer steps over ``loader``; check divergence and the budget on the way.

    A non-finite loss is flagged on the device and read once, at the end of the epoch (a per-step
    check would cost a device sync every step).

    Args:
        step: the optimizer step.
        loader: yields ``(images, labels)`` on the device.
        ctx: rank and device; loss and accuracy are summed over ranks at the end.
        max_steps: steps in this epoch.
        deadline: ``time.monotonic()`` at which the wall-clock budget ends, or None. In one process it
            is checked after every step on the host clock; under DDP every ``CHECK_EVERY`` steps, when
            the ranks agree on it (and on divergence) with one all-reduce.
        on_step: called with the number of steps done after each one (progress, first-step time).
    """
    dev = ctx.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    nonfinite = torch.zeros((), dtype=torch.bool, device=dev)  # read once, at the end: no sync per step
    seen, stop = 0, None
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i >= max_steps:
            break
        loss, out = step(x, y)
        loss = loss.detach()
        nonfinite |= ~torch.isfinite(loss)
        loss_sum += loss.double() * y.size(0)
        correct += (out.detach().argmax(1) == y).sum()
        seen += y.size(0)
        if on_step is not None:
            on_step(i + 1)
        if ctx.world_size == 1:
            if deadline is not None and time.monotonic() > deadline:  # the host clock: no device sync
                stop = "budget"
                break
        elif (i + 1) % CHECK_EVERY == 0 or i + 1 == max_steps:
            # Ranks must stop at the same step: agree on the flags (one all-reduce every CHECK_EVERY steps).
            flags = torch.stack([nonfinite.float(), torch.tensor(
                1.0 if deadline is not None and time.monotonic() > deadline else 0.0, device=dev)])
            all_reduce(flags, ctx, "max")
            stop = "diverged" if flags[0] > 0 else "budget" if flags[1] > 0 else None
            if stop:
                break
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    totals = all_reduce(torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                             device=dev)]), ctx)
    n = max(float(totals[2]), 1.0)
    if stop is None and bool(all_reduce(nonfinite.float(), ctx, "max")):
        stop = "diverged"
    return EpochStats(float(totals[0]) / n, float(totals[1]) / n, int(n), seconds, stop)


def evaluate(model: nn.Module, loader: Iterable, num_classes: int, ctx: WorkerContext,
             precision: str = "fp32", pad_to: int | None = None, tta: str = "none") -> dict[str, Any]:
    """Loss, accuracy and confusion matrix over a (sharded) split, summed across ranks.

    ``pad_to``: pad a short batch to this size with zeros and drop the padding's outputs, so that a
    compiled model sees one shape (every other shape would compile again). ``tta``: test-time
    augmentation (:func:`harness.run.tta.tta_logits`): the logits are averaged over its views.

    Returns:
        ``{"loss", "acc", "n", "confusion", "seconds"}`` with ``confusion[true, pred]`` counts (on the
        CPU) and the seconds of device work (:class:`~harness.run.measure.DeviceTimer`).
    """
    timer = DeviceTimer(ctx.device).start()
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=ctx.device)
    crit = nn.CrossEntropyLoss(reduction="sum")
    ones = torch.ones(0, dtype=torch.int64, device=ctx.device)
    with torch.inference_mode():
        for x, y in loader:
            if ones.numel() < y.size(0):
                ones = torch.ones(y.size(0), dtype=torch.int64, device=ctx.device)
            n = x.size(0)
            # A compiled model's guards include the batch size and the tensor's dispatch keys: an input made
            # outside inference mode (a view of the training split) would recompile. _pad copies it into one.
            if pad_to and (n < pad_to or not x.is_inference()):
                x = _pad(x, pad_to)
            with autocast(precision, ctx.device):
                out = tta_logits(model, x, tta)[:n]
            loss_sum += crit(out.float(), y).double()
            # index_add_, not bincount: CUDA's bincount reads its input's min and max back (a sync per batch).
            conf.index_add_(0, y * num_classes + out.argmax(1), ones[: y.size(0)])
    all_reduce(loss_sum, ctx)
    all_reduce(conf, ctx)
    conf = conf.view(num_classes, num_classes).cpu()
    n = int(conf.sum())
    return {"loss": float(loss_sum) / max(n, 1), "acc": float(conf.diag().sum()) / max(n, 1), "n": n,
            "confusion": conf, "seconds": timer.stop()}


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` padded with zero images to ``size`` (a copy even when it has that many), in its memory format."""
    return keep_layout(torch.cat([x, x.new_zeros((size - x.size(0), *x.shape[1:]))]), x)


class EvalGraph(nn.Module):
    """The model as evaluation calls it, a module of its own so that ``torch.compile`` gives evaluation a
    graph of its own.

    Dynamo keeps its graphs per code object and guards each on the global state (grad mode) and the
    inputs' dispatch keys. Evaluated through the training module, the training graph's ``forward`` was
    recompiled for inference mode, then again for inference tensors (issue 21). This ``forward`` is
    another code object, only ever called under ``torch.inference_mode`` (:func:`evaluate`, and the
    inference-speed measurement).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class InferenceGraph(EvalGraph):
    """The model as the inference-speed measurement calls it (batch 256, :func:`_inference_speed`).

    Another code object again, so under --compile batch 256 compiles a static graph of its own instead of
    recompiling the evaluation graph, whose batch is ``train.eval_batch_size``. That recompile was the one
    left in a compiled run, and it measured a graph evaluation never ran.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (its counter only grows; a run reads the difference)."""
    # torch._dynamo takes seconds to import: only train.compile needs it
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def fresh_compile_state() -> int:
    """Drop dynamo's compiled code of earlier runs in this process; returns :func:`compiled_graphs` now.

    Every run then compiles its own training and evaluation graphs: an earlier run's graphs for the same
    model class would otherwise be reused or recompiled (so a run's count and ``compile_s`` depended on
    what ran before it), and a code object's cache is capped (``recompile_limit``), past which dynamo
    silently runs it eagerly.
    """
    # torch._dynamo takes seconds to import: only train.compile needs it
    import torch._dynamo

    torch._dynamo.reset()
    return compiled_graphs()


# ---------------------------------------------------------------------------------------------
# Setting up a run


@dataclass
class Run:
    """Everything :func:`setup` builds for one run on one worker."""

    cfg: RunConfig
    ctx: WorkerContext
    run_dir: Path
    run_hash: str  # the hash the run directory was named with
    splits: Any
    meta: Any
    train_loader: Any
    val_loader: Any
    model: nn.Module  # unwrapped: what checkpoints hold
    fwd_model: nn.Module  # DDP-wrapped and compiled as asked: what training batches go through
    eval_model: nn.Module  # what evaluation goes through: under --compile the model in an EvalGraph, compiled apart
    step: Stepper
    steps: int  # optimizer steps per epoch
    params: int
    mflops: float
    progress: RunProgress
    t_start: float
    deadline: float | None = None
    tb: Any = None
    pretrained: RunSummary | None = None  # transfer: stage one's summary, folded into this one's
    resume_from_disk: bool = False  # `harness run --resume`: continue from <run_dir>/last.pt
    compile_s: float | None = None  # --compile: the warm-up compilation, timed apart from epoch 1
    graphs_at_start: int = 0  # --compile: compiled_graphs() when this run began (the count is per run)
    whiten_s: float = 0.0  # model.whiten: the whitening init (timed work of the recipe)
    cpu_t0: float = field(default_factory=time.process_time)  # this process's CPU clock at setup
    cpu_before: float = 0.0  # CPU seconds of earlier processes of this run (a resumed one)

    def cpu_s(self) -> float:
        """CPU seconds of this run so far: this process's since setup, plus earlier processes' (resume)."""
        return self.cpu_before + time.process_time() - self.cpu_t0

    @property
    def eval_pad(self) -> int | None:
        """The batch size evaluation pads to under --compile (one shape, one compilation)."""
        return self.cfg.train.eval_batch_size if self.cfg.train.compile else None

    @property
    def num_classes(self) -> int:
        return len(self.meta.classes)

    def validate(self) -> dict[str, Any]:
        """Validation on the weights the run evaluates (the averaged ones under --ema), with --tta."""
        return evaluate_weights(self, self.val_loader)


def evaluate_weights(run: Run, loader: Any) -> dict[str, Any]:
    """:func:`evaluate` of ``run``'s model over ``loader``, on the averaged weights when there are some."""
    avg = run.step.averager
    with avg.swapped() if avg is not None else contextlib.nullcontext():
        if run.ctx.world_size > 1:  # DDP does not broadcast buffers in its forward (broadcast_buffers=False)
            _broadcast_buffers(run.model)
        return evaluate(run.eval_model, loader, run.num_classes, run.ctx, run.cfg.train.precision, run.eval_pad,
                        run.cfg.train.tta)


def _broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank, before an evaluation.

    DDP runs with ``broadcast_buffers=False`` (and compiled evaluation goes around its wrapper anyway,
    :class:`EvalGraph`): each rank's statistics moved on with its own batches, and the shards must be
    evaluated with one model, rank 0's, which is also what checkpoints hold.
    """
    for b in model.buffers():
        dist.broadcast(b, 0)


def _seed(cfg: RunConfig, ctx: WorkerContext) -> None:
    torch.manual_seed(cfg.train.seed + ctx.rank)
    apply_backend_flags(backend_flags(cfg.train.precision, cfg.train.deterministic, ctx.device.type))


def _loaders(cfg: RunConfig, ctx: WorkerContext, splits: Any, meta: Any) -> tuple[Any, Any]:
    common = dict(device=ctx.device, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.train.seed,
                  channels_last=cfg.train.channels_last, **_layout(cfg))
    # A compiled model recompiles for the short last batch; drop it (at most batch_size - 1 images an epoch).
    train = build_loader(splits.train, meta, backend=cfg.data.loader, train=True, batch_size=cfg.train.batch_size,
                         augment=augment_spec(cfg), num_workers=cfg.data.num_workers,
                         drop_last=True if cfg.train.compile else None, **common)
    val = eval_loader(cfg, ctx, splits.val, meta)
    return train, val


def eval_loader(cfg: RunConfig, ctx: WorkerContext, split: Any, meta: Any) -> Any:
    """A loader over a validation or test split: no augmentation, every image once across ranks."""
    # auto decides per split (it prefers the tensor backend whenever the split fits in device memory).
    return build_loader(split, meta, backend=cfg.data.loader, train=False, batch_size=cfg.train.eval_batch_size,
                        augment="none", device=ctx.device, rank=ctx.rank, world_size=ctx.world_size,
                        seed=cfg.train.seed, channels_last=cfg.train.channels_last, **_layout(cfg))


def _layout(cfg: RunConfig) -> dict[str, str]:
    """The loaders' ``layout`` keyword where the config asks for a non-default one (tensor backend only)."""
    return {"layout": cfg.data.layout} if cfg.data.layout != "uint8" else {}


def _model(cfg: RunConfig, ctx: WorkerContext, meta: Any) -> tuple[nn.Module, str | None]:
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    in_chans, img_size = meta.shape[0], meta.shape[-1]
    prepared = STRATEGIES.get(cfg.strategy.name).prepare(cfg, len(meta.classes), in_chans, img_size)
    model = prepared.model.to(ctx.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, prepared.head_prefix


def _stepper(cfg: RunConfig, ctx: WorkerContext, model: nn.Module, head: str | None,
             steps: int) -> tuple[Stepper, nn.Module, nn.Module]:
    split_groups = cfg.optim.head_lr is not None or cfg.optim.body_lr is not None
    groups = param_groups(model, cfg.optim, head if split_groups else None, cfg.optim.lr)
    if cfg.optim.decoupled:
        decouple(groups, cfg.optim, cfg.train.batch_size * ctx.world_size)
    opt = build_optimizer(groups, cfg.optim)
    sched = build_schedule(opt, cfg.sched, cfg.train.epochs, max(steps, 1))
    fwd = model
    if ctx.world_size > 1:
        # No buffer broadcast before every training forward (a collective per step; evaluation broadcasts
        # rank 0's BatchNorm statistics itself), and gradients that are views of the all-reduce buckets
        # (no copy in and out of them each step).
        fwd = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                  broadcast_buffers=False, gradient_as_bucket_view=True)
    ev = fwd
    if cfg.train.compile:
        # Evaluation skips the DDP wrapper: dynamo runs DDP's forward eagerly and would compile the model's own
        # forward under it (the training graph's code again). Without grad DDP only syncs the buffers, once
        # after training: evaluate_weights does that.
        fwd, ev = torch.compile(fwd, dynamic=False), torch.compile(EvalGraph(model), dynamic=False)
    step = Stepper(fwd, list(model.parameters()), opt, sched, nn.CrossEntropyLoss(
        label_smoothing=cfg.train.label_smoothing), cfg.train.precision, ctx.device, cfg.train.grad_clip,
        torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None)
    t = cfg.train
    if t.ema != "none":
        step.averager = WeightAverager(model, t.ema, t.ema_decay, t.ema_every, round(t.epochs * max(steps, 1)),
                                       t.ema_ramp)
    return step, fwd, ev


def setup(cfg: RunConfig, run_dir: Path, ctx: WorkerContext, run_hash: str | None = None) -> Run:
    """Seed, load the data, build the loaders, the model (by its strategy), the optimizer and the schedule."""
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures import count_mflops, model_info

    t_start, cpu_t0 = time.monotonic(), time.process_time()
    _seed(cfg, ctx)
    splits, meta = load_data(cfg, model_info(cfg.model.arch).min_img_size, announce=ctx.is_main and cfg.train.progress)
    train_loader, val_loader = _loaders(cfg, ctx, splits, meta)
    model, head = _model(cfg, ctx, meta)
    whiten_s = 0.0
    if cfg.model.whiten:  # before the optimizer is built: the frozen filters are left out of it

        whiten_s = init_whitening(model, cfg.model.arch, splits.train.images, meta.mean, meta.std, ctx.device,
                                  freeze_bias=cfg.model.whiten_bias_epochs == 0)
    mflops = count_mflops(copy.deepcopy(model).cpu(), meta.shape[0], meta.shape[-1]) if ctx.is_main else 0.0
    steps = len(train_loader) if cfg.train.max_steps_per_epoch is None else min(len(train_loader),
                                                                                cfg.train.max_steps_per_epoch)
    step, fwd, ev = _stepper(cfg, ctx, model, head, steps)
    progress = RunProgress(cfg.train.progress and ctx.is_main, cfg.train.epochs, ctx.tag)
    run = Run(cfg, ctx, Path(run_dir), run_hash or config_hash(cfg), splits, meta, train_loader, val_loader,
              model, fwd, ev, step, steps, sum(p.numel() for p in model.parameters()), mflops, progress, t_start)
    run.whiten_s, run.cpu_t0 = whiten_s, cpu_t0
    if cfg.train.compile:
        run.graphs_at_start = fresh_compile_state()
        run.compile_s = compile_warmup(run)
    return run


def compile_warmup(run: Run) -> float:
    """Compile the training and the evaluation graphs on one batch before epoch 1; returns the seconds.

    Forward and backward run (no optimizer step), then the weights, BatchNorm statistics and gradients
    are put back, so training starts exactly as it would have.
    """
    x, y = next(iter(run.train_loader))
    saved = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    t = time.perf_counter()
    set_train_mode(run.model)
    with autocast(run.cfg.train.precision, run.ctx.device):
        loss = run.step.crit(run.fwd_model(x), y)
    loss.backward()
    evaluate(run.eval_model, [(x[: run.cfg.train.eval_batch_size], y[: run.cfg.train.eval_batch_size])],
             run.num_classes, local_context(run.ctx.device), run.cfg.train.precision, run.eval_pad,
             run.cfg.train.tta)
    if run.ctx.device.type == "cuda":
        torch.cuda.synchronize(run.ctx.device)
    seconds = time.perf_counter() - t
    run.model.load_state_dict(saved)
    run.step.opt.zero_grad(set_to_none=True)
    run.progress.say(f"compile: training and evaluation graphs compiled in {seconds:.1f} s (not counted in "
                     "epoch 1)")
    return seconds


def resume(run: Run) -> TrainState:
    """A fresh :class:`TrainState`, or the one in Ray Train's checkpoint when this worker was restarted."""
    ck = _load_resume(run.ctx) if not run.resume_from_disk else load_last(run.run_dir, run.ctx.device)
    state = TrainState()
    if ck is not None:
        run.model.load_state_dict(ck["model"])
        run.step.opt.load_state_dict(ck["optimizer"])
        run.step.sched.scheduler.load_state_dict(ck["scheduler"])
        if run.step.averager is not None and ck.get("averager") is not None:
            run.step.averager.load_checkpoint(ck["averager"])
        state = TrainState.from_checkpoint(ck)
        run.progress.say(f"resumed from the checkpoint of epoch {state.epoch}")
    run.t_start -= state.elapsed
    run.cpu_before = state.cpu_s
    if run.cfg.train.budget:
        run.deadline = run.t_start + parse_duration(run.cfg.train.budget)
    return state


def _load_resume(ctx: WorkerContext) -> dict | None:
    if not ctx.ray_train:
        return None
    # ray is heavy: imported only where Ray is used
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(Path(d) / LAST_CKPT, map_location=ctx.device, weights_only=True)


def load_last(run_dir: Path, device: torch.device | str = "cpu") -> dict | None:
    """``<run_dir>/last.pt``, or None where an interrupted run had not finished an epoch yet.

    Raises:
        HarnessError: the file exists but is not a readable checkpoint (one line naming it).
    """
    path = Path(run_dir) / LAST_CKPT
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ck, dict) or not {"model", "optimizer", "scheduler", "state", "history"} <= set(ck):
            raise ValueError("not a harness last.pt")
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a truncated or foreign file
        raise HarnessError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:80]}); "
                           "delete it to start the run over") from None
    return ck


def _open_outputs(run: Run, state: TrainState) -> None:
    """Rank 0's run directory and TensorBoard writer; the pid files the fault test reads."""
    ctx, cfg, d = run.ctx, run.cfg, run.run_dir
    if ctx.is_main:
        d.mkdir(parents=True, exist_ok=True)
        if state.epoch:
            write_metrics(d / METRICS_FILE, state.history)  # drop rows of the epoch that was lost
        try:
            from torch.utils.tensorboard import SummaryWriter

            run.tb = SummaryWriter(log_dir=str(d / "tb"))
        except ImportError:  # tensorboard is a dependency; stay usable without it
            run.tb = None
    if cfg.train.progress and (ctx.is_main or ctx.world_size > 1):  # every rank says it started
        print(f"{ctx.tag}training {cfg.model.arch} ({run.params / 1e6:.3f}M params) on {cfg.data.dataset} "
              f"{tuple(run.meta.shape)} x {len(run.splits.train.labels)} train / {len(run.splits.val.labels)} val, "
              f"{cfg.strategy.name}, {ctx.device}, loader {run.train_loader.backend}, world size {ctx.world_size}",
              flush=True)


# ---------------------------------------------------------------------------------------------
# The end of an epoch, and the end of the run


def _plain_config(cfg: RunConfig) -> dict:
    """The config as plain data, safe for ``torch.load(weights_only=True)``."""
    return json.loads(json.dumps(config_to_dict(cfg)))


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether ``last.pt`` is written after ``epoch`` (1-based): every ``every`` epochs and at the last one.

    ``every=0`` never writes one: no ``--resume`` and no Ray Train restart, but no per-epoch copy of the
    model and optimizer to the host either.
    """
    return every > 0 and (epoch % every == 0 or epoch == epochs)


def _last_epoch(run: Run) -> int:
    """The epoch the run ends on when nothing stops it early (``train.max_steps`` can end it before ``train.epochs``)."""
    return epoch_count(planned_epochs(run.cfg.train.epochs, run.steps, run.cfg.train.max_steps))


def _save_last(run: Run, state: TrainState, plain_cfg: dict) -> None:
    """Rank 0: ``last.pt``, written beside and renamed over, so a kill leaves the old or the new one."""
    d = run.run_dir
    ck = {"model": run.model.state_dict(), "optimizer": run.step.opt.state_dict(),
          "scheduler": run.step.sched.scheduler.state_dict(), "history": state.history, "state": state.scalars(),
          "best_model": state.best_model, "config": plain_cfg,
          "averager": run.step.averager.checkpoint() if run.step.averager is not None else None}
    torch.save(ck, d / f"{LAST_CKPT}.tmp")
    os.replace(d / f"{LAST_CKPT}.tmp", d / LAST_CKPT)


def _write_checkpoints(run: Run, state: TrainState, plain_cfg: dict) -> Path | None:
    """Rank 0: ``last.pt`` when :func:`checkpoint_due` (the restart point); a copy for Ray Train.

    ``best.pt`` is written once, by :func:`finish`: the best weights live in memory until then.
    """
    if not checkpoint_due(state.epoch, _last_epoch(run), run.cfg.train.checkpoint_every):
        return None
    _save_last(run, state, plain_cfg)
    d = run.run_dir
    if not run.ctx.ray_train:
        return None
    ckpt_dir = Path(tempfile.mkdtemp(prefix="harness-ckpt-"))
    shutil.copy2(d / LAST_CKPT, ckpt_dir / LAST_CKPT)
    return ckpt_dir


def end_epoch(run: Run, state: TrainState, stats: EpochStats, val: dict, report: Report,
              plain_cfg: dict) -> dict:
    """Select on validation, record the epoch, write metrics and checkpoints (rank 0), report (every rank).

    Returns:
        The epoch's row (:data:`harness.run.summary.EPOCH_COLUMNS`).
    """
    row = {"epoch": state.epoch + 1, "lr": current_lr(run.step.opt), "train_loss": stats.loss,
           "train_acc": stats.acc, "val_loss": val["loss"], "val_acc": val["acc"], "epoch_s": stats.seconds,
           "train_img_per_s": stats.n / stats.seconds if stats.seconds > 0 else 0.0}
    run.step.sched.step_epoch(val["loss"])
    state.history.append(row)
    state.val_s += val.get("seconds", 0.0)
    if state.improved(val["acc"], val["loss"], run.cfg.train.min_delta):
        avg = run.step.averager  # --ema: the averaged weights are the ones evaluated, so the ones selected
        weights = avg.state_dict() if avg is not None else run.model.state_dict()
        # A copy on the device, queued like any kernel: a host copy here was a CUDA sync on every rank at
        # every improving epoch. They reach the host only where rank 0 writes them (last.pt, best.pt).
        state.best_model = {k: v.detach().clone() for k, v in weights.items()}
    target = run.cfg.train.target_acc
    if target and state.time_to_target_s is None and val["acc"] >= target:
        state.time_to_target_s = time.monotonic() - run.t_start
        # The recipe's own work up to here, as the speed records time it: whitening, the training
        # epochs, and this validation (with its TTA); not data loading, compilation or earlier evaluations.
        state.timed_to_target_s = run.whiten_s + state.train_s + val.get("seconds", 0.0)
    state.epoch += 1
    state.elapsed = time.monotonic() - run.t_start
    state.cpu_s = run.cpu_s()
    ckpt_dir = None
    if run.ctx.is_main:
        write_metrics(run.run_dir / METRICS_FILE, state.history)
        if run.tb is not None:
            for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_img_per_s"):
                run.tb.add_scalar(k, row[k], state.epoch)
            run.tb.flush()
        ckpt_dir = _write_checkpoints(run, state, plain_cfg)
    run.progress.epoch(row, state.train_s / len(state.history))
    report({**row, "done": False}, ckpt_dir)
    if ckpt_dir is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return row


def budget_spent(run: Run, stats: EpochStats) -> bool:
    """Whether the wall-clock budget is spent after this epoch, as every rank agrees.

    Each rank's deadline is on its own clock, from its own start, so after validation one rank can be past
    it while another is not; the one that stopped alone would leave the others waiting in the next
    epoch's collectives. Under DDP the ranks take the max of their flags (one all-reduce an epoch).
    """
    if stats.stop == "budget":  # cut short inside the epoch: already agreed there
        return True
    if run.deadline is None:  # train.budget is unset on every rank alike
        return False
    spent = torch.tensor(1.0 if time.monotonic() > run.deadline else 0.0, device=run.ctx.device)
    return bool(all_reduce(spent, run.ctx, "max") > 0)


def stop_reason(run: Run, state: TrainState, stats: EpochStats) -> str | None:
    """Why the loop stops after this epoch (budget, target, early_stop), or None to go on; the same on every rank
    (the budget by :func:`budget_spent`, the others from validation, which is summed over ranks)."""
    if budget_spent(run, stats):
        return "budget"
    if run.cfg.train.stop_at_target and state.time_to_target_s is not None:
        run.progress.say(f"target val accuracy {run.cfg.train.target_acc:g} reached: stopping")
        return "target"
    patience = run.cfg.train.early_stop_patience
    if patience and state.wait >= patience:
        run.progress.say(f"early stop: val loss has not improved for {state.wait} epochs")
        return "early_stop"
    return None


def _summary(run: Run, state: TrainState, test: dict | None) -> RunSummary:
    cfg, ctx, prov = run.cfg, run.ctx, provenance(str(run.ctx.device))
    rates = sorted(r["train_img_per_s"] for r in state.history)
    return RunSummary(
        arch=cfg.model.arch, dataset=cfg.data.dataset, strategy=cfg.strategy.name, optimizer=cfg.optim.name,
        scheduler=cfg.sched.name, augment=cfg.data.augment, epochs_planned=cfg.train.epochs,
        epochs_run=len(state.history), batch_size=cfg.train.batch_size, lr=cfg.optim.lr, seed=cfg.train.seed,
        params=run.params, mflops_per_img=run.mflops, img_size=run.meta.shape[-1], in_chans=run.meta.shape[0],
        num_train=len(run.splits.train.labels),
        val_acc=state.best_acc if state.best_model is not None else None,
        val_loss=min((r["val_loss"] for r in state.history), default=None),
        test_acc=test["acc"] if test else None, test_loss=test["loss"] if test else None,
        best_epoch=state.best_epoch, time_to_target_s=state.time_to_target_s, stop_reason=state.stop_reason,
        status="diverged" if state.stop_reason == "diverged" else "ok", train_s=state.train_s,
        total_s=time.monotonic() - run.t_start, cpu_s=run.cpu_s(), threads=torch.get_num_threads(),
        first_step_at=state.first_step_at,
        train_img_per_s=rates[len(rates) // 2] if rates else None, device=ctx.device.type,
        hardware=prov["hardware"], world_size=ctx.world_size, precision=cfg.train.precision,
        loader=run.train_loader.backend, torch=prov["torch"], ray=prov["ray"], git_sha=prov["git_sha"],
        run_date=prov["date"], run_dir=str(run.run_dir), config_hash=run.run_hash, tta=cfg.train.tta,
        ema=cfg.train.ema, whiten_s=run.whiten_s if cfg.model.whiten else None, val_s=state.val_s,
        timed_to_target_s=state.timed_to_target_s, lr_reductions=lr_reductions(cfg.sched.name, state.history))


def lr_reductions(scheduler: str, history: list[dict]) -> int | None:
    """How many times a ``plateau`` schedule cut the lr between two epochs of ``history`` (None for others).

    Read from the lr each epoch trained with (``metrics.csv``), so a resumed run counts the cuts before its
    interruption too; a cut after the last epoch changed nothing and is not counted.
    """
    if scheduler != "plateau":
        return None
    lrs = [float(r["lr"]) for r in history]
    return sum(1 for a, b in zip(lrs, lrs[1:]) if b < a)


def finish(run: Run, state: TrainState, report: Report) -> RunSummary:
    """Test once on the weights selected on validation; build the summary; rank 0 writes the artifacts."""
    test = None
    if state.best_model is not None:
        run.model.load_state_dict(state.best_model)  # (averaged weights already, under --ema)
        test = evaluate(run.eval_model, eval_loader(run.cfg, run.ctx, run.splits.test, run.meta), run.num_classes,
                        run.ctx, run.cfg.train.precision, run.eval_pad, run.cfg.train.tta)
    summary = _summary(run, state, test)
    summary.compile_s = run.compile_s
    summary.test_s = test["seconds"] if test else None
    measured = run.ctx.is_main and run.cfg.train.measure_inference and not summary.diverged
    if measured:
        summary.infer_img_per_s = _inference_speed(run)
    if run.cfg.train.compile:
        summary.compiled_graphs = compiled_graphs() - run.graphs_at_start
        served = ", inference at batch 256" if measured and run.ctx.world_size == 1 else ""
        run.progress.say(f"compile: {summary.compiled_graphs} graphs compiled for this run (training, evaluation"
                         f"{served}), {run.compile_s:.1f} s before epoch 1")
    if run.pretrained is not None:  # every reader (summary.json, Tune, Ray Train) sees the whole cost
        summary = summary.with_pretraining(run.pretrained)
    final_ckpt = None
    if run.ctx.is_main:
        if state.best_model is not None and run.cfg.train.save_best:
            best = {k: v.cpu() for k, v in state.best_model.items()}  # loadable where there is no GPU
            torch.save({"model": best, "epoch": state.best_epoch, "val_acc": state.best_acc,
                        "config": _plain_config(run.cfg)}, run.run_dir / BEST_CKPT)
        summary.peak_mem_mb = peak_mem_mb(run.ctx.device)

        write_artifacts(run.run_dir, state.history, test["confusion"] if test else None, list(run.meta.classes))
        summary.write(run.run_dir)
        if run.tb is not None:
            run.tb.close()
        if run.ctx.ray_train:
            # Ray Train's Result carries the metrics of the latest *checkpointed* report, so the summary
            # travels with one (its directory holds summary.json; no shared filesystem is assumed).
            final_ckpt = Path(tempfile.mkdtemp(prefix="harness-summary-"))
            summary.write(final_ckpt)
    report({**summary.to_dict(), "done": True}, final_ckpt)
    if final_ckpt is not None:
        shutil.rmtree(final_ckpt, ignore_errors=True)
    return summary


def _inference_speed(run: Run) -> float:
    """Rank 0's inference images/s at batch 256 (:func:`~harness.run.measure.inference_img_per_s`).

    Compiled where one process trained (under DDP the compiled wrapper would sync ranks), and never by
    recompiling: the evaluation graph where it already has batch 256, else a static graph of batch 256 of
    its own (:class:`InferenceGraph`), compiled in the measurement's untimed warm-up passes. Batch 256
    stays, so the figure compares with every other run's; the eval graph padded to its own batch would
    time padding.
    """
    served = run.model
    if run.cfg.train.compile and run.ctx.world_size == 1:
        served = (run.eval_model if run.cfg.train.eval_batch_size == 256
                  else torch.compile(InferenceGraph(run.model), dynamic=False))
    return inference_img_per_s(served, tuple(run.meta.shape), run.cfg.train.precision,
                               bool(run.cfg.train.channels_last), run.ctx.device)


# ---------------------------------------------------------------------------------------------
# The driver


def run_worker(cfg: RunConfig, run_dir: Path, ctx: WorkerContext, report: Report,
               run_hash: str | None = None, pretrained: RunSummary | None = None,
               resume_from_disk: bool = False) -> RunSummary:
    """Train, validate every epoch, select on validation, test once; return the summary.

    Args:
        cfg: the resolved run config (:func:`harness.run.resolve.resolve`).
        run_dir: where rank 0 writes metrics, checkpoints and artifacts.
        ctx: this worker's rank, world size and device.
        report: called on every rank after every epoch with the metrics and (rank 0) a checkpoint
            directory, and once at the end with the summary (``done=True``).
        run_hash: the config hash the run directory was named with (default: ``cfg``'s).
        pretrained: the summary of an earlier stage of this run (transfer), folded into this one's.
        resume_from_disk: continue from ``<run_dir>/last.pt`` (``harness run --resume``).

    Raises:
        KeyboardInterrupt: Ctrl-C or SIGTERM (see ``harness run``); ``summary.json`` then says
            ``interrupted`` and the finished epochs are kept.
    """
    run = setup(cfg, run_dir, ctx, run_hash)
    run.pretrained, run.resume_from_disk = pretrained, resume_from_disk
    state = resume(run)
    _open_outputs(run, state)
    plain_cfg = _plain_config(cfg)

    def on_step(i: int) -> None:
        if state.first_step_at is None:
            state.first_step_at = time.time()
        run.progress.batch(state.epoch, i, run.steps)

    epochs = planned_epochs(cfg.train.epochs, run.steps, cfg.train.max_steps)
    try:
        for epoch in range(state.epoch, epoch_count(epochs)):
            run.train_loader.set_epoch(epoch)
            if cfg.model.whiten and cfg.model.whiten_bias_epochs and epoch >= cfg.model.whiten_bias_epochs:
                freeze_whiten_bias(run.model, cfg.model.arch)
            set_train_mode(run.model)
            stats = train_one_epoch(run.step, run.train_loader, ctx, deadline=run.deadline, on_step=on_step,
                                    max_steps=steps_in_epoch(epoch, epochs, run.steps))
            if stats.stop == "diverged" or not math.isfinite(stats.loss):
                state.stop_reason = "diverged"
                run.progress.say(f"loss is not finite at epoch {epoch + 1}: stopping (diverged)")
                break
            end_epoch(run, state, stats, run.validate(), report, plain_cfg)
            reason = stop_reason(run, state, stats)
            if reason:
                state.stop_reason = reason
                break
        else:
            if epochs < cfg.train.epochs:  # train.max_steps ended the run before train.epochs did
                state.stop_reason = "max_steps"
    except KeyboardInterrupt:
        interrupted(run, state)
        raise
    if state.stop_reason in ("budget", "target", "early_stop"):
        checkpoint_stopped_run(run, state, plain_cfg)
    return finish(run, state, report)


def checkpoint_stopped_run(run: Run, state: TrainState, plain_cfg: dict) -> None:
    """Rank 0: ``last.pt`` of the epoch a stop (budget, target, early stop) ended the run on, as the last
    epoch of a run that was not stopped always has one, unless that epoch wrote it already."""
    every = run.cfg.train.checkpoint_every
    if run.ctx.is_main and every > 0 and state.epoch and not checkpoint_due(state.epoch, _last_epoch(run), every):
        _save_last(run, state, plain_cfg)


def interrupted(run: Run, state: TrainState) -> None:
    """Rank 0 of an interrupted run: ``summary.json`` says so (no test: the run did not end), and the
    finished epochs stay in ``metrics.csv`` and ``last.pt`` for ``harness run --resume``."""
    if not run.ctx.is_main:
        return
    state.stop_reason = "interrupted"
    summary = _summary(run, state, None)
    summary.status = "interrupted"
    summary.write(run.run_dir)
    if run.tb is not None:
        run.tb.close()


def train_loop_per_worker(config: dict) -> dict:
    """The entry point for every mode.

    ``config`` holds ``cfg`` (the resolved RunConfig: as it is in process, as a dict across the Ray
    boundary), ``run_dir``, optionally ``run_hash``, ``pretrained`` (an earlier stage's summary as a dict)
    and ``resume`` (continue from ``last.pt``), and, in process only, ``report`` (a callable taking the
    metrics dict). Returns the summary as a dict.
    """
    cfg = config["cfg"] if isinstance(config["cfg"], RunConfig) else config_from_dict(config["cfg"])
    ctx = _context(cfg)
    user_report = config.get("report")

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        if ctx.ray_train:
            # ray is heavy: imported only where Ray is used
            import ray.train

            ray.train.report(_jsonable(metrics),
                             checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None)
        elif user_report is not None:
            user_report(_jsonable(metrics))

    pre = config.get("pretrained")
    return run_worker(cfg, Path(config["run_dir"]), ctx, report, config.get("run_hash"),
                      RunSummary.from_dict(pre) if pre else None, bool(config.get("resume"))).to_dict()


def _jsonable(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}
