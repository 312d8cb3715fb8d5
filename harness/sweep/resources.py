"""What each trial of a sweep reserves, and how many run at once: sized to the cluster before anything starts.

A trial that cannot fit is an error, not a hang. In-process trials (``--workers-per-trial 1``)
reserve ``cpus_per_worker`` CPUs (and GPUs); a ``TorchTrainer`` trial reserves no CPU itself, and
its workers' share caps how many trials run at once.

The same holds for ``harness run --workers N`` on a private local Ray (no ``RAY_ADDRESS``):
:func:`check_run_fits_locally` refuses workers that this machine can never place, before Ray starts,
instead of letting the ``TorchTrainer`` wait forever for its placement group.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.raycluster import available_cpus
from harness.sweep.settings import SweepSettings

if TYPE_CHECKING:
    from harness.run.config import RunConfig


def trial_resources(s: SweepSettings, cluster: dict[str, float], local: bool) -> tuple[dict, int | None]:
    """Per-trial resources and the concurrency cap, sized so that trials fit the cluster.

    Fills in ``s.cpus_per_worker`` and ``s.gpus_per_worker`` where they were left to the sweep.

    Args:
        s: the sweep's settings.
        cluster: the cluster's resources (``ray.cluster_resources()``: ``CPU``, ``GPU``).
        local: the cluster is this machine, so a trial that needs more than it has can never run.

    Raises:
        HarnessError: a trial needs more CPUs or GPUs than the (local) cluster has.
    """
    total_cpu = int(cluster.get("CPU", 0))
    total_gpu = int(cluster.get("GPU", 0))
    if s.gpus_per_worker is None:
        s.gpus_per_worker = 1 if total_gpu else 0
    if s.gpus_per_worker and not total_gpu and local:
        raise HarnessError(f"--gpus-per-worker {s.gpus_per_worker}: this machine has no GPU")
    if s.cpus_per_worker is None:
        if s.gpus_per_worker:
            s.cpus_per_worker = max(1, total_cpu // max(1, int(total_gpu / s.gpus_per_worker)))
        else:
            s.cpus_per_worker = 1  # small CNNs on CPU: more trials in parallel beats more threads per trial
    n, c, g = s.workers_per_trial, s.cpus_per_worker, s.gpus_per_worker
    if n > 1 and g not in (0, 1):
        # Ray Train gives each GPU worker one whole GPU (ScalingConfig(use_gpu=True)), and NCCL refuses two
        # ranks on one device ("Duplicate GPU detected"): a fraction would be counted here but not reserved.
        raise HarnessError(f"--gpus-per-worker {g:g} with --workers-per-trial {n}: DDP trials need one whole GPU "
                           "per worker (1), or 0; fractions share a GPU only between single-worker trials "
                           "(--workers-per-trial 1)")
    need_cpu, need_gpu = n * c, n * g
    if local and need_cpu > total_cpu:
        raise HarnessError(f"a trial needs {n} worker(s) x {c} CPU(s) = {need_cpu} CPUs but this machine offers "
                           f"{total_cpu}; lower --workers-per-trial or --cpus-per-worker")
    if local and need_gpu > total_gpu:
        raise HarnessError(f"a trial needs {need_gpu:g} GPUs but this machine has {total_gpu}")
    cap = s.max_concurrent
    if n <= 1:
        res = {"cpu": c, "gpu": g} if g else {"cpu": c}
    else:
        # The trial only drives a TorchTrainer; its workers request their own resources. The trial
        # reserves no CPU, so the cap must keep the workers of all running trials within the cluster.
        res = {"cpu": 0, "memory": 2**20}
        fit_n = max(1, total_cpu // need_cpu) if total_cpu else 1
        if need_gpu:
            fit_n = min(fit_n, max(1, int(total_gpu // need_gpu)))
        cap = min(cap, fit_n) if cap else fit_n
    return res, cap


def local_cpus(s: SweepSettings) -> int:
    """The CPUs of a local Ray cluster: ``--num-cpus``, else those this process may run on."""
    return s.num_cpus or available_cpus()


def check_fits_locally(s: SweepSettings) -> None:
    """Before Ray starts: fail if a trial cannot fit this machine (``s`` itself is left as it is).

    Raises:
        HarnessError: as :func:`trial_resources`.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    trial_resources(dataclasses.replace(s), {"CPU": local_cpus(s), "GPU": torch.cuda.device_count()}, True)


def check_run_fits_locally(cfg: RunConfig) -> None:
    """Before a ``harness run`` starts a private local Ray: fail if its Ray Train workers can never be placed.

    The trainer asks for ``dist.workers`` workers of ``dist.cpus_per_worker`` CPUs each (unset: an
    equal share of this machine's CPUs, at least 1) and, with ``dist.use_gpu``, one GPU each. A
    request bigger than this machine would wait for its placement group forever; here it is one line.
    ``dist.workers: 0`` (in process) needs nothing.

    Raises:
        HarnessError: more CPUs or GPUs than this machine has, or GPUs where it has none.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    n = cfg.dist.workers
    if n <= 0:
        return
    total_cpu, total_gpu = available_cpus(), torch.cuda.device_count()
    cluster = "; or set RAY_ADDRESS to run on a Ray cluster that has them"
    use_gpu = torch.cuda.is_available() if cfg.dist.use_gpu is None else cfg.dist.use_gpu
    if use_gpu and not total_gpu:
        raise HarnessError(f"dist.use_gpu=true: each of the --workers {n} needs a GPU but this machine has no "
                           f"CUDA GPU; drop dist.use_gpu{cluster}")
    cpus = cfg.dist.cpus_per_worker
    if cpus is not None and n * cpus > total_cpu:
        raise HarnessError(f"--workers {n} x --cpus-per-worker {cpus} = {n * cpus} CPUs but this machine offers "
                           f"{total_cpu}; lower --workers or --cpus-per-worker{cluster}")
    if cpus is None and n > total_cpu:
        raise HarnessError(f"--workers {n} needs {n} CPUs (1 per worker) but this machine offers {total_cpu}; "
                           f"lower --workers{cluster}")
    if use_gpu and n > total_gpu:
        raise HarnessError(f"--workers {n} with dist.use_gpu needs {n} GPUs (1 per worker) but this machine has "
                           f"{total_gpu}; lower --workers{cluster}")
