"""Test-wide setup: keep every test's outputs out of the repo, and share one local Ray cluster.

Starting Ray costs several seconds, so the tests of one module share the ``ray_cluster`` fixture (a
real local cluster with 2 CPUs, dashboard off). It is module-scoped, not session-scoped, so each module
starts from a clean driver: the cluster-job tests start and stop heads of their own (a stop scoped to
one head's processes, see ``tests/test_cluster_job.py``), and some modules need a driver with other
settings.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Before anything imports wandb or writes results: tests never touch the repo's results/ or the network.
_TMP = tempfile.mkdtemp(prefix="harness-tests-")
os.environ.setdefault("HARNESS_RESULTS_DIR", os.path.join(_TMP, "results"))
os.environ.setdefault("HARNESS_CACHE_DIR", os.path.join(_TMP, "cache"))
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.pop("RAY_ADDRESS", None)
# auto on a CPU is fp32 NCHW without timing a probe first; tests/test_probe.py turns the probe on itself.
os.environ["HARNESS_PROBE"] = "off"
# The code version every row the suite writes records: stated (provenance honours HARNESS_GIT_SHA), not read
# from git, so rows stay publishable while the checkout has uncommitted changes, as it has whenever a change
# is being tested; otherwise each page a test renders drops them as "+dirty". Tests of the git reading set
# their own.
TEST_SHA = "0123456789"
os.environ["HARNESS_GIT_SHA"] = TEST_SHA
torch.set_num_threads(min(2, os.cpu_count() or 1))


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``harness`` subprocess: nothing of the caller's Ray, W&B or harness settings,
    except the suite's own (no probe, :data:`TEST_SHA`), unbuffered output, and ``extra``."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_", "HARNESS_"))}
    e.update(HARNESS_PROBE="off", HARNESS_GIT_SHA=TEST_SHA, PYTHONUNBUFFERED="1", **extra)
    return e


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster for one test module (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="r", dir="/tmp"))  # AF_UNIX paths: <= 107 bytes
    yield ray
    ray.shutdown()


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """A fresh results/ directory for one test."""
    d = tmp_path / "results"
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(d))
    return d
