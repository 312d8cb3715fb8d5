"""Run one configuration: in process (``dist.workers == 0``) or as a Ray Train ``TorchTrainer``.

Both paths call the same :func:`harness.run.loop.train_loop_per_worker`. A run is the stages its
strategy declares (:meth:`Strategy.stages`): one for most, two for ``transfer`` (stage one pretrains
from scratch on ``--pretrain-dataset`` into ``<run>/pretrain``, stage two finetunes from it).
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import CONFIG_FILE
from harness.raycluster import init_ray
from harness.run.config import (
    RunConfig,
    apply_overrides,
    config_hash,
    config_to_dict,
    field_info,
    load_config,
    save_config,
)
from harness.run.loop import load_last, train_loop_per_worker
from harness.run.resolve import ResolvedConfig, as_resolved, resolve
from harness.run.resources import (
    check_fits,
    current_shape,
    require_cluster_device,
    run_worker_cpus,
)
from harness.run.strategies import STRATEGIES
from harness.run.summary import RunSummary

#: what torch raises, inside Ray Train's process-group setup, for NCCL on a worker without a CUDA GPU
_NCCL_WITHOUT_GPU = "ProcessGroupNCCL is only supported with GPUs"


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
        tune_report: bool = False, resume: bool = False) -> RunSummary:
    """Run one configuration end to end and return its summary.

    A plain ``RunConfig`` is resolved first (:func:`harness.run.resolve.resolve`), so the run directory's
    name, ``config.yaml`` and the summary's ``config_hash`` all describe what ran; a
    :class:`~harness.run.resolve.ResolvedConfig` (what ``harness run`` and a sweep trial pass) is used as
    it is, so a run is resolved once. Then the strategy's
    stages run in order, each in process or as a ``TorchTrainer``.

    Args:
        cfg: the config as asked for, or already resolved.
        run_dir: where the run's files go; a fresh directory under ``cfg.out`` if None.
        report: in process, called with each epoch's metrics and finally the summary (``done=True``).
        tune_report: under Ray Train, forward the workers' reports to the enclosing Tune trial.
        resume: continue the interrupted run in ``run_dir`` (see :func:`resume_run`).

    Returns:
        The summary of the last stage (also in ``summary.json``); a transfer run's includes its stage one.
    """
    if not isinstance(cfg, ResolvedConfig):
        cfg = resolve(cfg, ray_cluster_gpus(cfg) if cfg.dist.workers > 0 else None)
    run_dir = Path(run_dir).resolve() if run_dir else make_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    run_hash = config_hash(cfg)
    stages = STRATEGIES.get(cfg.strategy.name).stages(cfg)
    previous: tuple[Path, RunSummary] | None = None
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        stage_dir = run_dir / stage.subdir if stage.subdir else run_dir
        done = RunSummary.read(stage_dir) if resume and not last else None
        if done is not None and done.stop_reason != "interrupted":
            previous = (stage_dir, done)  # a stage that had finished before the interruption
            continue
        stage_cfg = stage.cfg
        if stage.init_from_previous and previous is not None:
            stage_cfg = copy.deepcopy(stage_cfg)
            stage_cfg.strategy.init_from = str(previous[0])
        if len(stages) > 1 and cfg.train.progress:
            print(f"{cfg.strategy.name} stage {i + 1}/{len(stages)}: {stage.label}", flush=True)
        if stage.subdir:
            stage_dir.mkdir(exist_ok=True)
            save_config(stage_cfg, stage_dir / CONFIG_FILE)
        extra = {"run_hash": run_hash if stage_dir == run_dir else None, "resume": resume,
                 "pretrained": previous[1].to_dict() if stage.init_from_previous and previous else None}
        summary = _dispatch(stage_cfg, stage_dir, report if last else None, tune_report and last, extra)
        if summary.diverged and not last:
            return summary  # stage one diverged: there is nothing to start stage two from
        previous = (stage_dir, summary)
    return summary


def ray_cluster_gpus(cfg: RunConfig) -> float:
    """The GPUs of the Ray cluster DDP workers will use: ``$RAY_ADDRESS``'s (connecting to it), or this
    machine's (a private local Ray, which knows no autoscaler: no need to start it to ask).

    Raises:
        HarnessError: on a cluster, ``dist.use_gpu`` unset (see :func:`require_cluster_device`).
    """
    require_cluster_device(cfg)
    return sum(n.gpus for n in current_shape().gpu_nodes)


def resume_run(run_dir: str | Path, shown: dict[str, Any] | None = None,
               report: Callable[[dict], None] | None = None) -> RunSummary:
    """Continue an interrupted ``harness run`` from its last checkpoint, with the config it was started with.

    The finished epochs are kept (``metrics.csv`` gets no duplicate rows), and the run ends with the
    summary an uninterrupted run would have.

    Args:
        run_dir: the run directory.
        shown: ``{config key: value}`` of keys that change no result (declared ``resume=True``, such as
            ``train.progress`` or ``data.data_dir``), applied on top of the saved config.
        report: as for :func:`fit`.

    Raises:
        HarnessError: not a run directory, a run that already ended, an unreadable checkpoint, or a key
            in ``shown`` that would change what runs.
    """
    d = Path(run_dir).expanduser().resolve()
    if not (d / CONFIG_FILE).is_file():
        raise HarnessError(f"--resume {run_dir}: not a run directory (no {CONFIG_FILE}); give the directory "
                           "`harness run` printed last")
    prev = RunSummary.read(d)
    if prev is not None and prev.stop_reason != "interrupted":
        raise HarnessError(f"--resume {run_dir}: that run already ended ({prev.stop_reason}); nothing to resume")

    changes = [k for k in shown or {} if not field_info(k).resume]
    if changes:
        raise HarnessError(f"--resume {run_dir}: {', '.join(changes)} would change what runs; the run continues "
                           "with the config it was started with")
    load_last(d)  # a corrupt checkpoint is one line now, before any data loads
    # config.yaml was written resolved, and what --resume may change (display, where the data is) does not
    # touch what resolving settles: resolving it again would check (and load weights) for nothing
    cfg = load_config(d / CONFIG_FILE)
    return fit(as_resolved(apply_overrides(cfg, shown) if shown else cfg), run_dir=d, report=report, resume=True)


def _dispatch(cfg: RunConfig, run_dir: Path, report: Callable[[dict], None] | None, tune_report: bool,
              extra: dict) -> RunSummary:
    """One stage, in process or as a TorchTrainer; ``extra`` goes to the loop (``run_hash``, ``pretrained``)."""
    loop_config = {"cfg": cfg, "run_dir": str(run_dir), **extra}
    if cfg.dist.workers == 0:  # in process the typed config goes in as it is; a dict only for Ray (below)
        return RunSummary.from_dict(train_loop_per_worker({**loop_config, "report": report}))
    return _fit_ray(cfg, loop_config, tune_report)


def _fit_ray(cfg: RunConfig, loop_config: dict, tune_report: bool) -> RunSummary:
    # ray is heavy: imported only where Ray is used
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    init_ray()
    use_gpu = bool(cfg.dist.use_gpu)  # resolved against the cluster's resources, never this process's CUDA
    n = cfg.dist.workers
    if tune_report:
        # A sweep trial: the sweep sized its workers and checked them against the cluster's nodes (or the
        # autoscaler's); the nodes that hold them may not be up yet, so nothing here may refuse them.
        cpus = cfg.dist.cpus_per_worker or 1
    else:
        shape = current_shape()
        cpus = run_worker_cpus(cfg, shape)
        check_fits(shape, n, cpus, 1.0 if use_gpu else 0.0, "--workers")
    cfg = copy.deepcopy(cfg)
    cfg.dist.cpus_per_worker = cpus
    run_dir = Path(loop_config["run_dir"])
    storage = cfg.dist.storage or str(run_dir / "ray_train")
    callbacks = []
    if tune_report:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "cfg": config_to_dict(cfg)},
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
        if use_gpu and _NCCL_WITHOUT_GPU in str(e):
            # Ray Train sets up NCCL before the loop runs, so a GPU group placed on nodes that lack CUDA (a
            # node declaring GPUs it lacks) fails there with a worker's traceback: the loop's one line instead.
            raise HarnessError("CUDA not available on a Ray Train worker (NCCL found no GPU there), but the run "
                               "resolved to train on GPUs (dist.use_gpu); check the nodes' GPUs or set "
                               "dist.use_gpu=false") from None
        raise
    if result.error is not None:
        raise result.error
    metrics = dict(result.metrics or {})
    if not RunSummary.is_summary(metrics):
        raise RuntimeError(f"Ray Train finished without a final summary (last metrics: {metrics})")
    return RunSummary.from_dict(metrics)
