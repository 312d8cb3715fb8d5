"""What fits where: the shape of the machine or Ray cluster that workers run on, and the questions asked of it.

Every check of CPUs, GPUs and workers lives here, for ``harness run`` and ``harness sweep`` alike:

- :func:`local_shape` / :func:`cluster_shape` / :func:`current_shape`: the nodes, one entry each (a
  worker group is placed node by node, so totals say nothing about whether it fits), and, on a
  cluster, the node types its autoscaler may add.
- :func:`gpu_share`: GPUs per single-worker trial when none were asked for: small models share a GPU.
- :func:`worker_cpus`: CPUs per worker when none were asked for: per GPU, the smallest CPU-per-GPU
  ratio over the GPU nodes (a CPU-only head does not count); on CPUs, the largest equal share that
  places every worker.
- :func:`fit_problem`: whether a group of N workers can be placed: ``None``, a refusal (one line, it
  can never be placed) or a warning (not now, but an autoscaler may add nodes that hold it).
- :func:`require_cluster_device` and :func:`check_run_fits`: ``harness run``'s questions.

Ray 2.60's open-source autoscaler does not tell a driver its node types: Ray's own channel for them
(the cluster config in the GCS, which Ray Train V2 reads for the same check) is filled only where an
autoscaler reports it. Where it is missing, the autoscaler's status (which the monitor writes to the
GCS) says at least whether one runs with declared node types (or a v2 autoscaler runs); then a group
the live nodes cannot hold is a warning, because the nodes that would hold it may come.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

from harness.errors import HarnessError
from harness.raycluster import available_cpus, init_ray
from harness.run.config import RunConfig

#: the node types a monitor without an autoscaling config invents for the live nodes (Ray's readonly provider)
_READONLY_TYPE_PREFIX = "node_"


@dataclasses.dataclass(frozen=True)
class NodeShape:
    """One node, or one node type an autoscaler may start up to ``max_count`` times (-1: no limit)."""

    cpus: float
    gpus: float
    name: str = ""
    max_count: int = 1


@dataclasses.dataclass(frozen=True)
class ClusterShape:
    """Where workers run: the live nodes, the node types an autoscaler may add, and how to name it."""

    nodes: tuple[NodeShape, ...]
    node_types: tuple[NodeShape, ...] | None = None  # declared node types; None where Ray does not say
    may_grow: bool = False  # an autoscaler may add nodes
    where: str = "this machine"

    @property
    def gpu_nodes(self) -> tuple[NodeShape, ...]:
        """The live nodes with GPUs, else the declared node types with GPUs (none alive yet)."""
        live = tuple(n for n in self.nodes if n.gpus > 0)
        return live or tuple(t for t in self.node_types or () if t.gpus > 0)

    def describe(self) -> str:
        """The nodes as ``2 x (4 CPUs, 2 GPUs)``, for error lines."""
        counts: dict[tuple[float, float], int] = {}
        for n in self.nodes:
            counts[(n.cpus, n.gpus)] = counts.get((n.cpus, n.gpus), 0) + 1
        return ", ".join(f"{k} x ({c:g} CPUs, {g:g} GPUs)" for (c, g), k in counts.items()) or "no nodes"


def local_cpus(num_cpus: int | None = None) -> int:
    """The CPUs of a private local Ray: ``num_cpus`` (``--num-cpus``), else those this process may run on."""
    return num_cpus or available_cpus()


def local_shape(num_cpus: int | None = None) -> ClusterShape:
    """This machine as the one node of a private local Ray (not started yet): it never grows."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    return ClusterShape((NodeShape(float(local_cpus(num_cpus)), float(torch.cuda.device_count())),))


def cluster_shape() -> ClusterShape:
    """The shape of the Ray cluster this process is connected to (``ray.init`` done): live nodes from
    ``ray.nodes()``, node types from the autoscaler where Ray exposes them."""
    # ray is heavy: imported only where Ray is used
    import ray

    nodes = tuple(NodeShape(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
                  for n in ray.nodes() if n.get("Alive"))
    types = _declared_node_types()
    if types is not None:
        grows = any(t.max_count == -1 or t.max_count > 0 for t in types)
    else:
        grows = _autoscaler_declared()
    return ClusterShape(nodes, types, grows, "the Ray cluster")


def current_shape(num_cpus: int | None = None) -> ClusterShape:
    """The cluster in ``$RAY_ADDRESS`` (connecting to it), else this machine (``num_cpus``: ``--num-cpus``)."""
    if not os.environ.get("RAY_ADDRESS"):
        return local_shape(num_cpus)
    init_ray()
    return cluster_shape()


def _declared_node_types() -> tuple[NodeShape, ...] | None:
    """The worker node types the autoscaler reported to the GCS (Ray's cluster config), or None."""
    # ray is heavy: imported only where Ray is used
    import ray._private.state

    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return tuple(NodeShape(float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)), g.name, g.max_count)
                 for g in config.node_group_configs)


def _autoscaler_declared(wait_s: float = 12.0) -> bool:
    """Whether the cluster's autoscaler runs with declared node types (so nodes may come).

    The (v1) monitor writes its status to the GCS every few seconds; without an autoscaling config it
    runs Ray's readonly provider, whose node types are the live nodes themselves (``node_<id>``). A v2
    autoscaler writes no such status: it counts as one that may add nodes, so a wait is warned of,
    never refused. No status after ``wait_s`` (a monitor updates every 5 s): no autoscaler.
    """
    # ray is heavy: imported only where Ray is used
    from ray._private import ray_constants
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    if is_autoscaler_v2(fetch_from_server=True):
        return True
    deadline = time.monotonic() + wait_s
    while not (raw := _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not raw:
        return False
    report = json.loads(raw).get("autoscaler_report") or {}
    names = set(report.get("active_nodes") or {}) | set((report.get("node_type_mapping") or {}).values())
    names |= set(report.get("pending_launches") or {})
    return any(not n.startswith(_READONLY_TYPE_PREFIX) for n in names)


def placeable(nodes: tuple[NodeShape, ...], cpus: float, gpus: float) -> float:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs the nodes hold (a type: ``max_count`` times)."""
    total = 0.0
    for n in nodes:
        fits = ([n.cpus // cpus] if cpus else []) + ([n.gpus // gpus] if gpus else [])
        per_node = min(fits) if fits else math.inf
        if per_node == 0 or n.max_count == 0:
            continue
        if per_node == math.inf or n.max_count == -1:
            return math.inf
        total += per_node * n.max_count
    return total


#: A training step of this many GFLOPs (forward and backward) keeps one large GPU busy on its own. A
#: smaller step is mostly kernel launches and leaves the GPU idle between them, so several trials share
#: it. A ResNet-20 step at batch 512 is ~125 GFLOPs, so eight trials share a GPU; ResNet-18 at 128 (~430) two.
GPU_FULL_STEP_GFLOPS = 1000.0
#: Each trial holds a CUDA context and its own activations and split: beyond this, packing more gains little.
MAX_TRIALS_PER_GPU = 8


def gpu_share(shape: ClusterShape, step_gflops: float | None) -> float:
    """GPUs per single-worker trial when none were asked for: ``1/k``, with ``k`` trials to a GPU.

    ``k`` is the largest power of two (at most :data:`MAX_TRIALS_PER_GPU`, and at most the GPU nodes'
    smallest CPU-per-GPU ratio, so each trial keeps a CPU of its own) whose trials' steps together stay
    within :data:`GPU_FULL_STEP_GFLOPS`. 1 where the cost is unknown or there is no GPU node.

    Args:
        shape: the nodes the trials run on.
        step_gflops: the largest training step of the sweep's trials, in GFLOPs.
    """
    ratios = [n.cpus / n.gpus for n in shape.gpu_nodes if n.gpus]
    if not step_gflops or step_gflops <= 0 or not ratios:
        return 1.0
    most = min(MAX_TRIALS_PER_GPU, max(1, int(min(ratios))))
    k = 1
    while 2 * k <= most and 2 * k * step_gflops <= GPU_FULL_STEP_GFLOPS:
        k *= 2
    return 1.0 / k


def worker_cpus(shape: ClusterShape, workers: int, gpus: float) -> int:
    """CPUs per worker when none were asked for.

    With GPUs: the smallest CPU-per-GPU ratio over the GPU nodes (live, else declared), times ``gpus``,
    so a worker fits every GPU node beside the others and a CPU-only head inflates nothing. Without:
    the largest equal share that still places all ``workers`` (1 at least).
    """
    if gpus:
        ratios = [n.cpus * gpus / n.gpus for n in shape.gpu_nodes]
        return max(1, int(min(ratios))) if ratios else 1
    most = int(max((n.cpus for n in shape.nodes), default=1))
    return next((c for c in range(most, 0, -1) if placeable(shape.nodes, c, 0) >= workers), 1)


def fit_problem(shape: ClusterShape, workers: int, cpus: float, gpus: float, flag: str) -> str | None:
    """Whether ``workers`` workers of ``cpus`` CPUs and ``gpus`` GPUs each can be placed on ``shape``.

    Args:
        flag: the option that sets the number of workers, for the message (``--workers``).

    Returns:
        None when the live nodes hold them, or nodes the autoscaler may add will; a warning (one line)
        when they do not now and Ray does not say which node types may come.

    Raises:
        HarnessError: one line, when they can never be placed: on fixed nodes, or on any of the
            declared node types.
    """
    live = placeable(shape.nodes, cpus, gpus)
    if live >= workers:
        return None
    ask = f"{flag} {workers} x {cpus:g} CPU(s){f' + {gpus:g} GPU' if gpus else ''} = {workers * cpus:g} CPUs" + (
        f" + {workers * gpus:g} GPUs" if gpus else "")
    lower = f"lower {flag} or --cpus-per-worker"
    if shape.node_types is not None:
        most = placeable(shape.node_types, cpus, gpus)
        if most >= workers:
            return None
        kinds = ", ".join(f"{t.name} ({t.cpus:g} CPUs, {t.gpus:g} GPUs, up to {t.max_count})"
                          for t in shape.node_types)
        raise HarnessError(f"{ask}, but the cluster's node types ({kinds}) hold {most:g} such worker(s) at most; "
                           f"{lower}")
    if shape.may_grow:
        return (f"warning: {ask}, but the live nodes of {shape.where} ({shape.describe()}) hold {live:g} such "
                "worker(s); waiting for the autoscaler to add nodes. Ray does not say which node types it may "
                f"add: if none can hold a worker this waits forever (Ctrl-C, then {lower})")
    cpu, gpu = sum(n.cpus for n in shape.nodes), sum(n.gpus for n in shape.nodes)
    per_node = ", one node each" if len(shape.nodes) > 1 else ""
    raise HarnessError(f"{ask}, but {shape.where} offers {cpu:g} CPUs, {gpu:g} GPUs ({shape.describe()}), which "
                       f"hold {live:g} such worker(s){per_node}; {lower}")


def check_fits(shape: ClusterShape, workers: int, cpus: float, gpus: float, flag: str) -> None:
    """:func:`fit_problem`, with its warning printed to stderr.

    Raises:
        HarnessError: as :func:`fit_problem`.
    """
    warning = fit_problem(shape, workers, cpus, gpus, flag)
    if warning:
        print(warning, file=sys.stderr, flush=True)


def require_cluster_device(cfg: RunConfig) -> None:
    """On a Ray cluster (``$RAY_ADDRESS``), Ray Train workers need ``dist.use_gpu`` said: the GPU nodes
    of an autoscaling cluster may not be alive yet, so the cluster's resources cannot decide it.

    Raises:
        HarnessError: ``dist.use_gpu`` unset for ``dist.workers > 0`` on a cluster.
    """
    if cfg.dist.workers > 0 and cfg.dist.use_gpu is None and os.environ.get("RAY_ADDRESS"):
        raise HarnessError(f"--workers {cfg.dist.workers} on a Ray cluster ($RAY_ADDRESS): say where the workers "
                           "train with --set dist.use_gpu=true (one GPU each) or --set dist.use_gpu=false; GPU "
                           "nodes an autoscaler adds later are not in the cluster yet to decide it")


def run_worker_cpus(cfg: RunConfig, shape: ClusterShape) -> int:
    """``dist.cpus_per_worker``, else :func:`worker_cpus` for the run's workers."""
    if cfg.dist.cpus_per_worker is not None:
        return cfg.dist.cpus_per_worker
    return worker_cpus(shape, cfg.dist.workers, 1.0 if cfg.dist.use_gpu else 0.0)


def check_run_fits(cfg: RunConfig, shape: ClusterShape) -> None:
    """For ``harness run --workers N``: refuse, before anything is written, a worker group that can never
    be placed (a wait for an autoscaler is warned of when the group starts). ``dist.workers: 0`` (in
    process) needs nothing. ``dist.use_gpu`` unset on this machine means: where there is a GPU (on a
    cluster it must be said, see :func:`require_cluster_device`).

    Raises:
        HarnessError: as :func:`require_cluster_device` and :func:`fit_problem`; GPUs where no node or
            node type has one.
    """
    n = cfg.dist.workers
    if n <= 0:
        return
    require_cluster_device(cfg)
    use_gpu = cfg.dist.use_gpu if cfg.dist.use_gpu is not None else bool(shape.gpu_nodes)
    local = "; or set RAY_ADDRESS to run on a Ray cluster that has them" if shape.where == "this machine" else ""
    if use_gpu and not shape.gpu_nodes and not (shape.may_grow and shape.node_types is None):
        raise HarnessError(f"dist.use_gpu=true: each of the --workers {n} needs a GPU but {shape.where} has no "
                           f"GPU ({shape.describe()}); drop dist.use_gpu{local}")
    try:
        fit_problem(shape, n, run_worker_cpus(cfg, shape), 1.0 if use_gpu else 0.0, "--workers")
    except HarnessError as e:
        raise HarnessError(f"{e}{local}") from None
