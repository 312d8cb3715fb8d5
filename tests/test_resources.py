"""The questions of :mod:`harness.run.resources` on cluster shapes written down (no Ray): per-node sizing,
the CPU head, autoscaling node types and the one-line refusals. ``tests/test_cluster_sizing.py`` asks
the same questions of real Ray clusters."""

from __future__ import annotations

import math

import pytest

from harness.errors import HarnessError
from harness.run.config import RunConfig, apply_overrides
from harness.run.resources import ClusterShape, NodeShape, check_run_fits, fit_problem, placeable, worker_cpus
from harness.sweep.resources import trial_resources
from harness.sweep.settings import SweepSettings

CPU_HEAD = NodeShape(8, 0)
G5 = NodeShape(48, 4)  # g5.12xlarge, cluster/gpu-cluster.yaml's GPU node
TWO_G5 = ClusterShape((CPU_HEAD, G5, G5), where="the Ray cluster")
# An autoscaler whose node types Ray does not describe (Ray 2.60's own), no GPU node up yet
GROWING = ClusterShape((NodeShape(4, 0),), None, True, "the Ray cluster")


def test_gpu_workers_get_the_cpu_per_gpu_ratio_of_the_gpu_nodes():
    assert worker_cpus(TWO_G5, 3, 1) == 12, "48 CPUs / 4 GPUs; the CPU head and the cluster's total do not count"
    assert placeable(TWO_G5.nodes, 12, 1) == 8
    assert fit_problem(TWO_G5, 3, 12, 1, "--workers") is None
    uneven = ClusterShape((NodeShape(48, 4), NodeShape(16, 4)))
    assert worker_cpus(uneven, 3, 1) == 4, "the smallest ratio: a worker fits on every GPU node"


def test_cpu_workers_get_the_largest_share_that_places_them_all():
    assert worker_cpus(ClusterShape((NodeShape(2, 0),)), 2, 0) == 1
    assert worker_cpus(ClusterShape((NodeShape(48, 0), NodeShape(48, 0))), 3, 0) == 24, "two on one node, one on the other"
    assert worker_cpus(ClusterShape((NodeShape(2, 0),)), 3, 0) == 1, "none fits: 1, and the check says so"


def test_totals_that_fit_but_nodes_that_do_not_are_one_line():
    # The old check: 3 x 32 = 96 CPUs <= 104 in total, and Ray Train waited for its placement group forever.
    with pytest.raises(HarnessError, match=r"--workers 3 x 32 CPU\(s\) \+ 1 GPU = 96 CPUs \+ 3 GPUs, but the Ray "
                       r"cluster offers 104 CPUs, 8 GPUs .* hold 2 such worker\(s\), one node each"):
        fit_problem(TWO_G5, 3, 32, 1, "--workers")


def test_an_autoscaler_that_does_not_say_its_node_types_gets_a_warning_not_a_refusal():
    warning = fit_problem(GROWING, 2, 1, 1, "--workers-per-trial")
    assert warning and warning.startswith("warning:") and "waiting for the autoscaler" in warning
    assert "\n" not in warning


def test_declared_node_types_decide_what_can_ever_be_placed():
    types = (NodeShape(1, 0, "head", 0), NodeShape(2, 2, "gpu", 2))
    shape = ClusterShape((NodeShape(1, 0),), types, True, "the Ray cluster")
    assert fit_problem(shape, 4, 1, 1, "--workers") is None, "two GPU nodes of 2 GPUs may come"
    with pytest.raises(HarnessError, match=r"node types \(head .*gpu \(2 CPUs, 2 GPUs, up to 2\)\) hold 4"):
        fit_problem(shape, 5, 1, 1, "--workers")
    with pytest.raises(HarnessError, match="hold 0 such worker"):
        fit_problem(shape, 1, 4, 1, "--workers")
    assert placeable((NodeShape(2, 2, "gpu", -1),), 1, 1) == math.inf


def test_run_fits_this_machine():
    two_cpus = ClusterShape((NodeShape(2, 0),))
    cpu = {"dist.use_gpu": False}
    check_run_fits(apply_overrides(RunConfig(), {**cpu, "dist.workers": 2}), two_cpus)
    check_run_fits(apply_overrides(RunConfig(), {**cpu, "dist.workers": 1, "dist.cpus_per_worker": 2}), two_cpus)
    check_run_fits(apply_overrides(RunConfig(), {"dist.workers": 0, "dist.cpus_per_worker": 64}), two_cpus)
    with pytest.raises(HarnessError, match=r"--workers 3 x 1 CPU\(s\) = 3 CPUs, but this machine offers 2 CPUs.*"
                       "RAY_ADDRESS"):
        check_run_fits(apply_overrides(RunConfig(), {**cpu, "dist.workers": 3}), two_cpus)
    with pytest.raises(HarnessError, match=r"--workers 2 x 2 CPU\(s\) = 4 CPUs"):
        check_run_fits(apply_overrides(RunConfig(), {**cpu, "dist.workers": 2, "dist.cpus_per_worker": 2}), two_cpus)
    with pytest.raises(HarnessError, match="dist.use_gpu=true: .* this machine has no GPU"):
        check_run_fits(apply_overrides(RunConfig(), {"dist.use_gpu": True, "dist.workers": 1}), two_cpus)


def test_run_on_a_cluster_must_say_where_it_trains(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # nothing connects: the shape is given
    with pytest.raises(HarnessError, match="on a Ray cluster.*dist.use_gpu=true.*dist.use_gpu=false"):
        check_run_fits(apply_overrides(RunConfig(), {"dist.workers": 2}), GROWING)
    check_run_fits(apply_overrides(RunConfig(), {"dist.workers": 2, "dist.use_gpu": True}), GROWING)


def test_sweep_trials_on_an_autoscaling_cluster(capsys):
    with pytest.raises(HarnessError, match="--gpus-per-worker 1 .* or --gpus-per-worker 0"):
        trial_resources(SweepSettings(workers_per_trial=2), GROWING)
    s = SweepSettings(workers_per_trial=2, gpus_per_worker=1)
    res, cap = trial_resources(s, GROWING)
    assert res == {"cpu": 0, "memory": 2**20} and cap is None, "node types unknown: the live nodes cap nothing"
    assert s.cpus_per_worker == 1 and "waiting for the autoscaler" in capsys.readouterr().err


def test_sweep_trials_are_sized_per_node():
    s = SweepSettings(workers_per_trial=3)
    res, cap = trial_resources(s, TWO_G5)
    assert s.gpus_per_worker == 1 and s.cpus_per_worker == 12 and cap == 2, "8 GPU workers: two 3-worker trials"
    res, _ = trial_resources(SweepSettings(workers_per_trial=1, gpus_per_worker=0.5), TWO_G5)
    assert res == {"cpu": 6, "gpu": 0.5}, "half a GPU: half the CPUs per GPU"
    with pytest.raises(HarnessError, match="DDP trials need one whole GPU per worker"):
        trial_resources(SweepSettings(workers_per_trial=2, gpus_per_worker=0.5), TWO_G5)


def test_small_models_share_a_gpu_sized_from_their_step_cost(capsys):
    """A sweep of small models on a big GPU packs several trials per GPU, not one at a time."""
    one_h200 = ClusterShape((NodeShape(16, 1),), where="the Ray cluster")
    s = SweepSettings(workers_per_trial=1)
    res, _ = trial_resources(s, one_h200, step_gflops=125.0)  # ResNet-20 at batch 512
    assert s.gpus_per_worker == 1 / 8 and res == {"cpu": 2, "gpu": 0.125}
    assert "8 trials share each GPU" in capsys.readouterr().out
    s = SweepSettings(workers_per_trial=1)
    trial_resources(s, one_h200, step_gflops=430.0)  # ResNet-18 at batch 128
    assert s.gpus_per_worker == 0.5
    s = SweepSettings(workers_per_trial=1)
    trial_resources(s, one_h200, step_gflops=None)
    assert s.gpus_per_worker == 1, "cost unknown: a whole GPU"
    s = SweepSettings(workers_per_trial=2)
    trial_resources(s, ClusterShape((NodeShape(32, 2),)), step_gflops=1.0)
    assert s.gpus_per_worker == 1, "DDP workers each need a whole GPU"
    s = SweepSettings(workers_per_trial=1)
    trial_resources(s, ClusterShape((NodeShape(4, 2),)), step_gflops=1.0)
    assert s.gpus_per_worker == 0.5, "2 CPUs per GPU: at most 2 trials per GPU, a CPU each"
    s = SweepSettings(workers_per_trial=1, gpus_per_worker=1)
    trial_resources(s, one_h200, step_gflops=1.0)
    assert s.gpus_per_worker == 1, "an explicit --gpus-per-worker stands"


def test_the_step_cost_counts_the_largest_model_at_its_batch():
    small = apply_overrides(RunConfig(), ["model.arch=tiny_cnn", "train.batch_size=64"])
    big = apply_overrides(RunConfig(), ["model.arch=resnet20", "train.batch_size=512"])
    from harness.sweep.resources import largest_step_gflops

    step = largest_step_gflops([small, big])
    assert 100 < step < 150, f"ResNet-20 (81 MFLOPs) x 512 x 3 is ~125 GFLOPs, got {step}"
