"""The one training loop: in process, under Ray Train DDP, and inside a Tune trial.

``train_loop_per_worker(config)`` follows the Ray Train examples: each worker builds its data, model
and optimizer, wraps the model for DDP, and reports the same number of times on every rank. Only
rank 0 writes files. Metrics are accumulated as tensors and synchronised once per epoch (or every
``_CHECK_EVERY`` steps for the divergence and budget checks), so the loop adds almost nothing to a
bare PyTorch step.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.run.config import RunConfig, config_from_dict, config_hash, parse_duration
from harness.run.data import load_data
from harness.run.optim import build_optimizer, build_schedule, current_lr, param_groups
from harness.run.strategies import STRATEGIES, set_train_mode

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "train_img_per_s"]
_CHECK_EVERY = 20  # steps between divergence/budget checks (each costs a device sync, and an all-reduce under DDP)


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


def _context(cfg: RunConfig) -> WorkerContext:
    try:
        import ray.train

        ctx = ray.train.get_context()
        ws = ctx.get_world_size()
        in_train = True
    except Exception:  # noqa: BLE001 - not inside a Ray Train worker: in process (maybe a Tune trial)
        in_train = False
    if in_train:
        import logging

        import ray.train.torch

        # Ray Train logs every report's whole metrics dict at INFO from each worker; keep warnings only.
        # (That module names its logger by file path, not by dotted module name.)
        from ray.train.v2._internal.execution import context as _train_context

        logging.getLogger(_train_context.__file__).setLevel(logging.WARNING)
        device = ray.train.torch.get_device()
        if cfg.dist.cpus_per_worker:
            # Ray pins each worker to its CPU share; more torch threads than that only thrash.
            torch.set_num_threads(max(1, cfg.dist.cpus_per_worker))
        return WorkerContext(ctx.get_world_rank(), ws, ctx.get_local_rank(), device, True)
    use_gpu = torch.cuda.is_available() if cfg.dist.use_gpu is None else cfg.dist.use_gpu
    return WorkerContext(0, 1, 0, torch.device("cuda" if use_gpu else "cpu"), False)


def _all_reduce(t: torch.Tensor, ctx: WorkerContext, op: str = "sum") -> torch.Tensor:
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def _autocast(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def evaluate(model: nn.Module, loader: Any, num_classes: int, ctx: WorkerContext, cfg: RunConfig) -> dict:
    """Loss, accuracy and confusion matrix over a (sharded) split, summed across ranks.

    Returns:
        ``{"loss", "acc", "n", "confusion"}`` with ``confusion[true, pred]`` counts.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=ctx.device)
    crit = nn.CrossEntropyLoss(reduction="sum")
    with torch.inference_mode():
        for x, y in loader:
            with _autocast(cfg, ctx.device):
                out = model(x)
            loss_sum += crit(out.float(), y).double()
            conf += torch.bincount(y * num_classes + out.argmax(1), minlength=num_classes * num_classes)
    _all_reduce(loss_sum, ctx)
    _all_reduce(conf, ctx)
    conf = conf.view(num_classes, num_classes).cpu()
    n = int(conf.sum())
    return {
        "loss": float(loss_sum) / max(n, 1),
        "acc": float(conf.diag().sum()) / max(n, 1),
        "n": n,
        "confusion": conf,
    }


def _write_metrics(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Progress:
    """Per-epoch progress lines with an ETA, plus an in-place batch counter on a terminal."""

    def __init__(self, enabled: bool, epochs: int, tag: str) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stdout.isatty()
        self.epochs = epochs
        self.tag = tag
        self._last = 0.0

    def batch(self, epoch: int, step: int, total: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last > 0.5:
            self._last = now
            print(f"\r{self.tag}epoch {epoch + 1}/{self.epochs} [{step}/{total}]", end="", flush=True)

    def epoch(self, row: dict, mean_epoch_s: float) -> None:
        if not self.enabled:
            return
        left = (self.epochs - row["epoch"]) * mean_epoch_s
        print(("\r" if self.tty else "") +
              f"{self.tag}epoch {row['epoch']}/{self.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
              f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  lr {row['lr']:.3g}"
              f"  {row['epoch_s']:.1f}s {row['train_img_per_s']:.0f} img/s  ETA {_fmt_s(left)}", flush=True)


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _inference_img_per_s(model: nn.Module, shape: tuple[int, int, int], cfg: RunConfig, device: torch.device) -> float:
    """Images/s of a forward pass at batch 256 (median of 3 after a warm-up)."""
    model.eval()
    x = torch.randn(256, *shape, device=device)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), _autocast(cfg, device):
        for i in range(4):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t)
    times.sort()
    return 256 / times[len(times) // 2]


def resolve_device_defaults(cfg: RunConfig, device: torch.device) -> None:
    """Settle the ``auto`` speed options for ``device``: bf16 autocast and channels_last on CUDA, fp32 on CPU.

    bf16 needs no loss scaling and is what Hopper/Ampere tensor cores are fast at; on CPU, bf16 autocast is
    slower than fp32 for these small convnets, so it stays opt-in there.
    """
    cuda = device.type == "cuda"
    if cfg.train.precision == "auto":
        cfg.train.precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.train.channels_last is None:
        cfg.train.channels_last = cuda


def run_worker(cfg: RunConfig, run_dir: Path, ctx: WorkerContext, report: Callable[[dict, Path | None], None]) -> dict:
    """Train, validate every epoch, select on validation, test once; return the summary.

    Args:
        cfg: the resolved run config.
        run_dir: where rank 0 writes metrics, checkpoints and artifacts.
        ctx: this worker's rank, world size and device.
        report: called on every rank after every epoch with the metrics and (rank 0) a checkpoint
            directory, and once at the end with the summary (``done=True``).
    """
    from architectures import count_mflops, model_info
    from loaders import build_loader

    t_start = time.monotonic()
    resolve_device_defaults(cfg, ctx.device)
    torch.manual_seed(cfg.train.seed + ctx.rank)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    info = model_info(cfg.model.arch)
    splits, meta = load_data(cfg, info.min_img_size, announce=ctx.is_main and cfg.train.progress)
    in_chans, img_size = meta.shape[0], meta.shape[-1]
    num_classes = len(meta.classes)

    common = dict(device=ctx.device, rank=ctx.rank, world_size=ctx.world_size, seed=cfg.train.seed,
                  channels_last=cfg.train.channels_last)
    train_loader = build_loader(splits.train, meta, backend=cfg.data.loader, train=True,
                                batch_size=cfg.train.batch_size, augment=cfg.data.augment,
                                num_workers=cfg.data.num_workers, **common)
    eval_backend = "tensor" if cfg.data.loader == "auto" else cfg.data.loader
    val_loader = build_loader(splits.val, meta, backend=eval_backend, train=False,
                              batch_size=cfg.train.eval_batch_size, augment="none", **common)

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    prepared = STRATEGIES.get(cfg.strategy.name).prepare(cfg, num_classes, in_chans, img_size)
    model = prepared.model.to(ctx.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    mflops = count_mflops(copy.deepcopy(model).cpu(), in_chans, img_size) if ctx.is_main else 0.0

    global_batch = cfg.train.batch_size * ctx.world_size
    lr = cfg.optim.lr * (global_batch / cfg.optim.base_batch if cfg.optim.lr_scaling == "linear" else 1.0)
    split_groups = cfg.optim.head_lr is not None or cfg.optim.body_lr is not None
    groups = param_groups(model, cfg.optim, prepared.head_prefix if split_groups else None, lr)
    opt = build_optimizer(groups, cfg.optim)
    steps = len(train_loader) if cfg.train.max_steps_per_epoch is None else min(len(train_loader), cfg.train.max_steps_per_epoch)
    sched = build_schedule(opt, cfg.sched, cfg.train.epochs, max(steps, 1))
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    raw_model = model
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    fwd_model = torch.compile(model) if cfg.train.compile else model

    # ---- resume (Ray Train restarts workers from the last reported checkpoint) ----
    history: list[dict] = []
    state: dict[str, Any] = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "best_loss": math.inf, "wait": 0,
                             "time_to_target_s": None, "elapsed": 0.0}
    best_state: dict | None = None
    resumed = _load_resume(ctx)
    if resumed is not None:
        raw_model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        sched.scheduler.load_state_dict(resumed["scheduler"])
        history, state = resumed["history"], resumed["state"]
        best_state = resumed.get("best_model")
        if ctx.is_main:
            print(f"resumed from the checkpoint of epoch {state['epoch']}", flush=True)
    t_start -= state["elapsed"]

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resumed is not None:
            _write_metrics(run_dir / "metrics.csv", history)  # drop rows of the epoch that was lost
    if ctx.ray_train:
        # The fault test finds workers to kill here; a restarted worker writes its new pid.
        (run_dir / "pids").mkdir(parents=True, exist_ok=True)
        (run_dir / "pids" / f"rank{ctx.rank}").write_text(str(os.getpid()))

    tb = None
    if ctx.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(log_dir=str(run_dir / "tb"))
        except ImportError:  # tensorboard is a dependency; stay usable without it
            tb = None

    tag = f"[rank {ctx.rank}/{ctx.world_size}] " if ctx.world_size > 1 else ""
    if cfg.train.progress and (ctx.is_main or ctx.world_size > 1):  # every rank says it started
        print(f"{tag}training {cfg.model.arch} ({params / 1e6:.3f}M params) on {cfg.data.dataset} "
              f"{tuple(meta.shape)} x {len(splits.train.labels)} train / {len(splits.val.labels)} val, "
              f"{cfg.strategy.name}, {ctx.device}, loader {train_loader.backend}, world size {ctx.world_size}",
              flush=True)
    progress = _Progress(cfg.train.progress and ctx.is_main, cfg.train.epochs, tag)
    deadline = t_start + parse_duration(cfg.train.budget) if cfg.train.budget else None
    stop_reason = "completed"
    epoch_times: list[float] = []
    img_rates: list[float] = []
    train_s_total = sum(r["epoch_s"] for r in history)
    plain_cfg = _plain_config(cfg)  # stored in every checkpoint
    first_step_at: float | None = None  # unix time of the first optimizer step (bench overhead)

    for epoch in range(state["epoch"], cfg.train.epochs):
        train_loader.set_epoch(epoch)
        set_train_mode(raw_model)
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        correct = torch.zeros((), dtype=torch.int64, device=ctx.device)
        seen = 0
        stop_now = None
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            with _autocast(cfg, ctx.device):
                out = fwd_model(x)
                loss = crit(out, y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.train.grad_clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if cfg.train.grad_clip:
                    nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.train.grad_clip)
                opt.step()
            sched.step_batch()
            if first_step_at is None:
                first_step_at = time.time()
            loss_sum += loss.detach().double() * y.size(0)
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.size(0)
            progress.batch(epoch, step + 1, steps)
            if (step + 1) % _CHECK_EVERY == 0 or step + 1 == steps:
                flags = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0,
                                      1.0 if deadline and time.monotonic() > deadline else 0.0], device=ctx.device)
                _all_reduce(flags, ctx, "max")
                if flags[0] > 0:
                    stop_now = "diverged"
                    break
                if flags[1] > 0:
                    stop_now = "budget"
                    break
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        epoch_s = time.perf_counter() - t0
        train_s_total += epoch_s
        totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=ctx.device)])
        _all_reduce(totals, ctx)
        n_global = max(float(totals[2]), 1.0)
        train_loss, train_acc = float(totals[0]) / n_global, float(totals[1]) / n_global
        if stop_now == "diverged" or not math.isfinite(train_loss):
            stop_reason = "diverged"
            if ctx.is_main:
                print(f"{tag}loss is not finite at epoch {epoch + 1}: stopping (diverged)", flush=True)
            break
        val = evaluate(fwd_model, val_loader, num_classes, ctx, cfg)
        lr_now = current_lr(opt)
        sched.step_epoch(val["loss"])
        row = {"epoch": epoch + 1, "lr": lr_now, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val["loss"], "val_acc": val["acc"], "epoch_s": epoch_s,
               "train_img_per_s": n_global / epoch_s if epoch_s > 0 else 0.0}
        history.append(row)
        epoch_times.append(epoch_s)
        img_rates.append(row["train_img_per_s"])
        if val["acc"] > state["best_acc"]:
            state["best_acc"], state["best_epoch"] = val["acc"], epoch + 1
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in raw_model.state_dict().items()}
        if cfg.train.target_acc and state["time_to_target_s"] is None and val["acc"] >= cfg.train.target_acc:
            state["time_to_target_s"] = time.monotonic() - t_start
        if val["loss"] < state["best_loss"] - cfg.train.min_delta:
            state["best_loss"], state["wait"] = val["loss"], 0
        else:
            state["wait"] += 1
        state["epoch"] = epoch + 1
        state["elapsed"] = time.monotonic() - t_start

        ckpt_dir = None
        if ctx.is_main:
            _write_metrics(run_dir / "metrics.csv", history)
            if tb is not None:
                for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_img_per_s"):
                    tb.add_scalar(k, row[k], epoch + 1)
                tb.flush()
            ck = {"model": raw_model.state_dict(), "optimizer": opt.state_dict(),
                  "scheduler": sched.scheduler.state_dict(), "history": history, "state": state,
                  "best_model": best_state, "config": plain_cfg}
            torch.save(ck, run_dir / "last.pt.tmp")
            os.replace(run_dir / "last.pt.tmp", run_dir / "last.pt")
            if state["best_epoch"] == epoch + 1:
                torch.save({"model": best_state, "epoch": epoch + 1, "val_acc": val["acc"],
                            "config": plain_cfg}, run_dir / "best.pt")
            if ctx.ray_train:
                ckpt_dir = Path(tempfile.mkdtemp(prefix="harness-ckpt-"))
                shutil.copy2(run_dir / "last.pt", ckpt_dir / "last.pt")
        progress.epoch(row, sum(epoch_times) / len(epoch_times))
        report({**row, "done": False}, ckpt_dir)
        if ckpt_dir is not None:
            shutil.rmtree(ckpt_dir, ignore_errors=True)

        if stop_now == "budget":
            stop_reason = "budget"
            break
        if cfg.train.early_stop_patience and state["wait"] >= cfg.train.early_stop_patience:
            stop_reason = "early_stop"
            if ctx.is_main and cfg.train.progress:
                print(f"{tag}early stop: val loss has not improved for {state['wait']} epochs", flush=True)
            break
        if deadline and time.monotonic() > deadline:
            stop_reason = "budget"
            break

    # ---- test once, on the model selected on validation ----
    test_loader = build_loader(splits.test, meta, backend=eval_backend, train=False,
                               batch_size=cfg.train.eval_batch_size, augment="none", **common)
    test = None
    if best_state is not None:
        raw_model.load_state_dict(best_state)
        test = evaluate(fwd_model, test_loader, num_classes, ctx, cfg)
    from harness.provenance import provenance

    prov = provenance(str(ctx.device))
    summary: dict[str, Any] = {
        "arch": cfg.model.arch, "dataset": cfg.data.dataset, "strategy": cfg.strategy.name,
        "optimizer": cfg.optim.name, "scheduler": cfg.sched.name, "augment": cfg.data.augment,
        "epochs_planned": cfg.train.epochs, "epochs_run": len(history), "batch_size": cfg.train.batch_size,
        "lr": cfg.optim.lr, "seed": cfg.train.seed, "params": params, "mflops_per_img": mflops,
        "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
        "val_acc": state["best_acc"] if best_state is not None else None,
        "val_loss": min((r["val_loss"] for r in history), default=None),
        "best_epoch": state["best_epoch"], "time_to_target_s": state["time_to_target_s"],
        "total_s": time.monotonic() - t_start, "train_s": train_s_total, "stop_reason": stop_reason,
        "status": "diverged" if stop_reason == "diverged" else "ok", "error": "",
        "device": ctx.device.type, "hardware": prov["hardware"], "world_size": ctx.world_size,
        "precision": cfg.train.precision, "loader": train_loader.backend, "torch": prov["torch"],
        "ray": prov["ray"], "git_sha": prov["git_sha"], "date": prov["date"],
        "train_img_per_s": sorted(img_rates)[len(img_rates) // 2] if img_rates else None,
        "infer_img_per_s": None, "peak_mem_mb": None, "run_dir": str(run_dir), "config_hash": config_hash(cfg),
        "first_step_at": first_step_at, "img_size": img_size, "in_chans": in_chans, "num_train": len(splits.train.labels),
    }
    if ctx.is_main:
        if cfg.train.measure_inference and stop_reason != "diverged":
            summary["infer_img_per_s"] = _inference_img_per_s(raw_model, tuple(meta.shape), cfg, ctx.device)
        summary["peak_mem_mb"] = _peak_mem_mb(ctx.device)
        from harness.run.artifacts import write_artifacts

        write_artifacts(run_dir, history, test["confusion"] if test else None, list(meta.classes))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if tb is not None:
            tb.close()
    final_ckpt = None
    if ctx.ray_train and ctx.is_main:
        # Ray Train's Result carries the metrics of the latest *checkpointed* report, so the summary
        # travels with one (its directory holds summary.json; no shared filesystem is assumed).
        final_ckpt = Path(tempfile.mkdtemp(prefix="harness-summary-"))
        (final_ckpt / "summary.json").write_text(json.dumps(summary, indent=2))
    report({**summary, "done": True}, final_ckpt)
    if final_ckpt is not None:
        shutil.rmtree(final_ckpt, ignore_errors=True)
    return summary


def _plain_config(cfg: RunConfig) -> dict:
    """The config as plain data, safe for ``torch.load(weights_only=True)``."""
    from harness.run.config import config_to_dict

    return json.loads(json.dumps(config_to_dict(cfg)))


def _load_resume(ctx: WorkerContext) -> dict | None:
    if not ctx.ray_train:
        return None
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(Path(d) / "last.pt", map_location=ctx.device, weights_only=True)


def train_loop_per_worker(config: dict) -> dict:
    """The entry point for every mode. ``config`` holds ``cfg`` (the RunConfig as a dict), ``run_dir``,
    and, in process only, ``report`` (a callable taking the metrics dict)."""
    cfg = config_from_dict(config["cfg"])
    run_dir = Path(config["run_dir"])
    ctx = _context(cfg)
    user_report = config.get("report")

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        if ctx.ray_train:
            import ray.train

            ray.train.report(_jsonable(metrics),
                             checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None)
        elif user_report is not None:
            user_report(_jsonable(metrics))

    return run_worker(cfg, run_dir, ctx, report)


def _jsonable(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}
