"""What each trial of a sweep reserves, and how many run at once: sized to the cluster's nodes before
anything starts (the questions themselves are :mod:`harness.run.resources`).

A trial that can never fit is an error, not a hang; one that waits for an autoscaler to add nodes is a
warning. In-process trials (``--workers-per-trial 1``) reserve ``cpus_per_worker`` CPUs (and GPUs); a
``TorchTrainer`` trial reserves no CPU itself, and its workers' share caps how many trials run at once.
"""

from __future__ import annotations

import dataclasses
import math

from harness.errors import HarnessError
from harness.run.config import RunConfig
from harness.run.resources import ClusterShape, check_fits, gpu_share, local_shape, placeable, worker_cpus
from harness.sweep.settings import SweepSettings


def trial_resources(s: SweepSettings, shape: ClusterShape,
                    step_gflops: float | None = None) -> tuple[dict, int | None]:
    """Per-trial resources and the concurrency cap, sized so that trials fit the cluster's nodes.

    Fills in ``s.cpus_per_worker`` and ``s.gpus_per_worker`` where they were left to the sweep.

    Args:
        s: the sweep's settings.
        shape: this machine's (a private local Ray), or the cluster's.
        step_gflops: the largest training step of the trials (:func:`largest_step_gflops`), which sizes
            a GPU's share when ``--gpus-per-worker`` was left to the sweep; None: a whole GPU each.

    Raises:
        HarnessError: a trial can never be placed, or ``--gpus-per-worker`` is needed to say where trials run.
    """
    _settle_gpus(s, shape, step_gflops)
    if s.cpus_per_worker is None:
        # GPU trials: a share per GPU of the GPU nodes; small CNNs on CPU: more trials in parallel beats
        # more threads per trial.
        s.cpus_per_worker = worker_cpus(shape, s.workers_per_trial, s.gpus_per_worker) if s.gpus_per_worker else 1
    n, c, g = s.workers_per_trial, s.cpus_per_worker, s.gpus_per_worker
    if n > 1 and g not in (0, 1):
        # Ray Train gives each GPU worker one whole GPU (ScalingConfig(use_gpu=True)), and NCCL refuses two
        # ranks on one device ("Duplicate GPU detected"): a fraction would be counted here but not reserved.
        raise HarnessError(f"--gpus-per-worker {g:g} with --workers-per-trial {n}: DDP trials need one whole GPU "
                           "per worker (1), or 0; fractions share a GPU only between single-worker trials "
                           "(--workers-per-trial 1)")
    check_fits(shape, n, c, g, "--workers-per-trial")
    cap = s.max_concurrent
    if n <= 1:
        return ({"cpu": c, "gpu": g} if g else {"cpu": c}), cap
    # The trial only drives a TorchTrainer; its workers request their own resources. The trial reserves
    # no CPU, so the cap keeps the workers of all running trials within what the nodes (or the node types
    # an autoscaler may add) hold; unknown node types cap nothing.
    nodes = shape.node_types if shape.node_types is not None else shape.nodes
    most = placeable(nodes, c, g)
    if (shape.may_grow and shape.node_types is None) or most == math.inf:
        return {"cpu": 0, "memory": 2**20}, cap
    fit_n = max(1, int(most // n))
    return {"cpu": 0, "memory": 2**20}, min(cap, fit_n) if cap else fit_n


def _settle_gpus(s: SweepSettings, shape: ClusterShape, step_gflops: float | None) -> None:
    """``--gpus-per-worker`` left to the sweep: where a node (or node type) has GPUs, a whole GPU per DDP
    worker and a share sized from the model's cost per single-worker trial; else 0. Refused where an
    autoscaler may add nodes Ray does not describe (GPU nodes may come: the user must say)."""
    if s.gpus_per_worker is not None:
        if s.gpus_per_worker and not shape.gpu_nodes and not shape.may_grow:
            raise HarnessError(f"--gpus-per-worker {s.gpus_per_worker:g}: {shape.where} has no GPU "
                               f"({shape.describe()})")
        return
    if not shape.gpu_nodes and shape.may_grow and shape.node_types is None:
        raise HarnessError("no GPU node is alive, and the Ray cluster's autoscaler may add some: say where trials "
                           "train with --gpus-per-worker 1 (GPU nodes) or --gpus-per-worker 0 (CPUs)")
    if not shape.gpu_nodes:
        s.gpus_per_worker = 0
        return
    s.gpus_per_worker = gpu_share(shape, step_gflops) if s.workers_per_trial <= 1 else 1
    if s.gpus_per_worker < 1:
        print(f"GPUs: {round(1 / s.gpus_per_worker)} trials share each GPU (the largest training step is "
              f"{step_gflops:.0f} GFLOPs); --gpus-per-worker 1 gives each trial a GPU of its own", flush=True)


def needs_step_cost(s: SweepSettings, shape: ClusterShape) -> bool:
    """Whether :func:`trial_resources` would size a GPU share from the trials' cost (so it is worth counting)."""
    return s.gpus_per_worker is None and s.workers_per_trial <= 1 and bool(shape.gpu_nodes)


def largest_step_gflops(configs: list[RunConfig]) -> float | None:
    """GFLOPs of the costliest training step among ``configs`` (forward and backward: 3x the forward
    pass, torch's FLOP counter, times the batch); None where a model cannot be counted."""
    # imports torch (heavy) when a model is counted
    from harness.report.rows import forward_mflops

    steps = []
    for cfg in configs:
        mflops = forward_mflops(cfg)
        if mflops is None:
            return None
        steps.append(3 * mflops * cfg.train.batch_size / 1e3)
    return max(steps, default=None)


def check_fits_locally(s: SweepSettings) -> None:
    """Before Ray starts: fail if a trial cannot fit this machine (``s`` itself is left as it is).

    Raises:
        HarnessError: as :func:`trial_resources`.
    """
    trial_resources(dataclasses.replace(s), local_shape(s.num_cpus))
