"""Run one configuration: in process (``dist.workers == 0``) or as a Ray Train ``TorchTrainer``.

Both paths call the same :func:`harness.run.loop.train_loop_per_worker`. The ``transfer``
strategy is two runs of it: stage one pretrains from scratch on ``--pretrain-dataset`` into
``<run>/pretrain``, stage two finetunes from that on ``--dataset``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.run.config import RunConfig, config_hash, config_to_dict, save_config
from harness.errors import ConfigError, HarnessError


def check_config(cfg: RunConfig) -> None:
    """Fail fast, before any data loads, on names and combinations that cannot work.

    Raises:
        HarnessError: one line naming the problem and the valid choices.
    """
    import torch

    from architectures import model_info
    from harness.run.optim import OPTIMIZERS, SCHEDULERS
    from harness.run.strategies import check_strategy
    from loaders import AUGMENTATIONS, BACKENDS, DATASETS

    model_info(cfg.model.arch)
    DATASETS.get(cfg.data.dataset)
    if cfg.strategy.pretrain_dataset:
        DATASETS.get(cfg.strategy.pretrain_dataset)
    BACKENDS.get(cfg.data.loader)
    AUGMENTATIONS.get(cfg.data.augment)
    OPTIMIZERS.get(cfg.optim.name)
    SCHEDULERS.get(cfg.sched.name)
    check_strategy(cfg)
    if cfg.strategy.trainable or cfg.strategy.freeze:
        _check_stage_names(cfg)
    if cfg.strategy.weights:
        # Fetch (or find cached) pretrained weights now: offline, that is a one-line error before any data loads.
        from architectures import create_model

        create_model(cfg.model.arch, num_classes=10, weights=cfg.strategy.weights)
    cuda = torch.cuda.is_available() if cfg.dist.use_gpu is None else cfg.dist.use_gpu
    if cfg.train.precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU (GradScaler); use bf16 on CPU")
    if cfg.dist.use_gpu and not torch.cuda.is_available():
        raise ConfigError("dist.use_gpu=true but no CUDA GPU is visible")
    if cfg.sched.warmup_epochs and cfg.sched.name in ("plateau", "onecycle", "cyclic"):
        raise ConfigError(f"sched.warmup_epochs cannot be combined with sched.name={cfg.sched.name}")


def _check_stage_names(cfg: RunConfig) -> None:
    """Resolve --trainable/--freeze against a model built on the meta device (no memory, no data)."""
    import torch

    from architectures import create_model, model_info
    from harness.run.strategies import resolve_frozen

    info = model_info(cfg.model.arch)
    in_chans = 1 if cfg.data.grayscale else 3
    if in_chans not in info.in_chans:
        in_chans = info.in_chans[0]
    with torch.device("meta"):
        model = create_model(cfg.model.arch, num_classes=10, in_chans=in_chans,
                             img_size=max(cfg.data.img_size or info.default_img_size, info.min_img_size),
                             **cfg.model.kwargs)
    resolve_frozen(model, info.head, cfg.strategy.trainable, cfg.strategy.freeze, cfg.model.arch)


def make_run_dir(cfg: RunConfig) -> Path:
    """``<out>/<name or arch-dataset-strategy>-<config hash>-<UTC time>``, created."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = cfg.name or f"{cfg.model.arch}-{cfg.data.dataset}-{cfg.strategy.name}"
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base)
    d = Path(cfg.out).expanduser().resolve() / f"{base}-{config_hash(cfg)}-{stamp}"
    n = 1
    while d.exists():
        n += 1
        d = d.with_name(f"{base}-{config_hash(cfg)}-{stamp}-{n}")
    d.mkdir(parents=True)
    return d


def fit(cfg: RunConfig, run_dir: Path | None = None, report: Callable[[dict], None] | None = None,
        tune_report: bool = False) -> dict[str, Any]:
    """Run one configuration end to end and return its summary.

    Args:
        cfg: the resolved config.
        run_dir: where the run's files go; a fresh directory under ``cfg.out`` if None.
        report: in process, called with each epoch's metrics and finally the summary (``done=True``).
        tune_report: under Ray Train, forward the workers' reports to the enclosing Tune trial.

    Returns:
        The summary dict (also written to ``summary.json``).
    """
    check_config(cfg)
    run_dir = Path(run_dir).resolve() if run_dir else make_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    pretrain_summary = None
    if cfg.strategy.name == "transfer":
        stage1 = copy.deepcopy(cfg)
        stage1.strategy.name = "scratch"
        stage1.strategy.trainable = stage1.strategy.freeze = None
        stage1.strategy.pretrain_dataset = None
        stage1.strategy.head_layers = 1
        stage1.optim.head_lr = stage1.optim.body_lr = None
        stage1.data.dataset = cfg.strategy.pretrain_dataset
        stage1.train.epochs = cfg.strategy.pretrain_epochs or cfg.train.epochs
        stage1.train.target_acc = None
        if cfg.train.progress:
            print(f"transfer stage 1/2: pretraining {cfg.model.arch} on {stage1.data.dataset}", flush=True)
        pre_dir = run_dir / "pretrain"
        pre_dir.mkdir(exist_ok=True)
        save_config(stage1, pre_dir / "config.yaml")
        pretrain_summary = _dispatch(stage1, pre_dir, None, False)
        if pretrain_summary.get("status") == "diverged":
            pretrain_summary["stop_reason"] = "diverged"
            return pretrain_summary
        cfg = copy.deepcopy(cfg)
        cfg.strategy.init_from = str(pre_dir)
        if cfg.train.progress:
            print(f"transfer stage 2/2: finetuning on {cfg.data.dataset}", flush=True)
    summary = _dispatch(cfg, run_dir, report, tune_report)
    if pretrain_summary is not None:
        summary["pretrain_dataset"] = pretrain_summary.get("dataset")
        summary["pretrain_val_acc"] = pretrain_summary.get("val_acc")
        summary["pretrain_test_acc"] = pretrain_summary.get("test_acc")
        summary["pretrain_train_s"] = pretrain_summary.get("train_s")
        summary["total_s"] = summary.get("total_s", 0) + pretrain_summary.get("total_s", 0)
        import json

        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _dispatch(cfg: RunConfig, run_dir: Path, report: Callable[[dict], None] | None, tune_report: bool) -> dict:
    if cfg.dist.workers == 0:
        from harness.run.loop import train_loop_per_worker

        return train_loop_per_worker({"cfg": config_to_dict(cfg), "run_dir": str(run_dir), "report": report})
    return _fit_ray(cfg, run_dir, tune_report)


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in ``RAY_ADDRESS``, or start a private local one (dashboard on 127.0.0.1 only)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=True)
    else:
        # address="local" never attaches to a stale cluster file; the dashboard must not face the network.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 dashboard_host="127.0.0.1", log_to_driver=True)


def _fit_ray(cfg: RunConfig, run_dir: Path, tune_report: bool) -> dict:
    import ray
    import torch
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    from harness.run.loop import train_loop_per_worker

    init_ray()
    use_gpu = torch.cuda.is_available() if cfg.dist.use_gpu is None else cfg.dist.use_gpu
    n = cfg.dist.workers
    cpus = cfg.dist.cpus_per_worker
    if cpus is None:
        total = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        cpus = max(1, total // n)
        if tune_report:
            cpus = 1  # inside a trial the sweep sizes resources; never ask for more than exists
    cfg = copy.deepcopy(cfg)
    cfg.dist.cpus_per_worker = cpus
    storage = cfg.dist.storage or str(run_dir / "ray_train")
    callbacks = []
    if tune_report:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": config_to_dict(cfg), "run_dir": str(run_dir)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=n, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RayRunConfig(name=run_dir.name, storage_path=storage,
                                failure_config=FailureConfig(max_failures=cfg.dist.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks or None,
                                # INFO logs every report's full metrics dict; warnings are what users need
                                logging_config=LoggingConfig(log_level="WARNING")),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; surface a user error as one
        cause = e
        while cause is not None and not isinstance(cause, HarnessError):
            cause = cause.__cause__ or getattr(cause, "cause", None)
        if isinstance(cause, HarnessError):
            raise HarnessError(str(cause)) from None
        raise
    if result.error is not None:
        raise result.error
    summary = dict(result.metrics or {})
    summary.pop("done", None)
    summary.pop("checkpoint_path", None)
    if "run_dir" not in summary:
        raise RuntimeError(f"Ray Train finished without a final summary (last metrics: {summary})")
    return summary
