"""Worker groups sized to the nodes of real Ray clusters, on Ray's own simulators (no GPU needed).

Two layouts, each a set of real raylets on this machine that declare GPUs they lack:

- **fixed**: a CPU head (1 CPU) and two GPU nodes of 3 CPUs and 2 GPUs each, started with ``ray start``.
  ``--workers 3`` with a GPU each is placed across both nodes (1 CPU per worker: the nodes' CPU-per-GPU
  ratio; the old share of the cluster's total CPUs, 7 // 3 = 2, fitted one worker per node and Ray Train
  waited forever); ``--cpus-per-worker 2`` can never be placed and is one line.
- **autoscaling**: Ray's fake autoscaler (``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config``,
  as ``ray.cluster_utils.AutoscalingCluster`` starts it, without its ``ray stop --force``): a head with
  no GPU and a GPU node type with ``min_workers: 0``. A DDP sweep trial and ``harness run --workers 2``
  are placed after a scale-up, never refused up front (they were: the checks read the live nodes only).

Every head and node runs in its own temp dir on its own ports, and is stopped by the marker in its
processes' environment (see ``tests/test_cluster_job.py``). The driver is this machine's CPU: a GPU
run ends with one line, "CUDA not available on a Ray Train worker" (NCCL found no GPU where the group was
placed); the driver never needs CUDA.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.results_csv import read_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cluster_job import VENV_BIN, Head, _free_ports, _harness, _head_processes, stop_head  # noqa: E402

pytestmark = pytest.mark.slow

RUN = ["run", "--dataset", "synthetic", "--arch", "tiny_cnn", "--epochs", "1", "--set", "data.synthetic_size=64",
       "--set", "train.measure_inference=false", "--no-progress"]
MATRIX = """description: one tiny DDP trial
search: grid
base:
  data.dataset: synthetic
  data.synthetic_size: 64
  data.augment: none
  train.epochs: 1
  train.batch_size: 32
  train.measure_inference: false
axes:
  arch: [tiny_cnn]
"""
# Ray Train retries a worker group it cannot place forever; longer than this is the hang these tests catch.
PLACED_WITHIN_S = 180


def _ports_args(ports: list[int]) -> list[str]:
    """The ports of one non-head raylet: its own, so that nothing meets another cluster's."""
    nm, om, met, renv, ah, ag = ports
    return [f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--metrics-export-port={met}",
            f"--runtime-env-agent-port={renv}", f"--dashboard-agent-listen-port={ah}",
            f"--dashboard-agent-grpc-port={ag}"]


def _start(h: Head, num_cpus: int, extra: list[str] = (), env: dict | None = None) -> None:
    """``ray start --head`` for ``h`` (the ports, temp dir and token of :class:`Head`), with no GPU."""
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
           "--num-gpus=0", "--dashboard-host=127.0.0.1", f"--port={h.gcs}", f"--dashboard-port={h.dash}",
           f"--ray-client-server-port={h.client}", f"--temp-dir={h.temp}", "--object-store-memory=100000000",
           "--disable-usage-stats",
           *_ports_args([h.node_mgr, h.obj_mgr, h.metrics, h.renv, h.agent_http, h.agent_grpc]), *extra]
    _run_ray(cmd, {**h.env, **(env or {}), "HARNESS_TEST_HEAD": h.marker}, h.root)


def _join(h: Head, num_cpus: int, num_gpus: int) -> None:
    """A node of ``num_gpus`` GPUs it does not have, joined to ``h``."""
    cmd = [str(VENV_BIN / "ray"), "start", f"--address=127.0.0.1:{h.gcs}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--object-store-memory=100000000",
           "--disable-usage-stats", *_ports_args(_free_ports(6))]
    _run_ray(cmd, {**h.env, "HARNESS_TEST_HEAD": h.marker}, h.root)


def _run_ray(cmd: list[str], env: dict, cwd: Path) -> None:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"ray start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _wait_for_status(h: Head, nodes: int, timeout: float = 90) -> None:
    """Until the monitor has written its status with ``nodes`` nodes (the driver reads it)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        r = subprocess.run([str(VENV_BIN / "ray"), "status", f"--address=127.0.0.1:{h.gcs}"], env=h.env,
                           capture_output=True, text=True, timeout=60)
        out = r.stdout
        active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
        if sum(1 for line in active.splitlines() if line.strip().startswith("1 ")) >= nodes:
            return
        time.sleep(1)
    raise AssertionError(f"the monitor never reported {nodes} nodes:\n{out[-2000:]}")


@contextlib.contextmanager
def _cluster(prefix: str) -> Iterator[Head]:
    """A :class:`Head` (not started), whose processes are stopped and files removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # AF_UNIX paths: <= 107 bytes
    h = Head(root)
    try:
        yield h
    finally:
        stop_head(h.marker)
        leftovers = _head_processes(h.marker)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"cluster processes survived the stop: {leftovers}"


@pytest.fixture(scope="module")
def fixed():
    """A CPU head and two fixed nodes of 3 CPUs and 2 GPUs each; no autoscaler."""
    with _cluster("fx") as h:
        _start(h, num_cpus=1)
        _join(h, 3, 2)
        _join(h, 3, 2)
        _wait_for_status(h, 3)
        yield h


def _autoscaling_config(h: Head) -> dict:
    """The fake autoscaler's cluster config (Ray's fake_multi_node example, made by hand: the wheel lacks
    it): a head with no GPU, and one GPU node type that starts with no nodes."""
    return {
        "cluster_name": "fake-gpu", "max_workers": 1, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{h.gcs}"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 2}, "node_config": {}, "min_workers": 0,
                           "max_workers": 1},
        },
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@pytest.fixture(scope="module")
def autoscaling():
    """A CPU head under Ray's fake autoscaler, whose GPU node type has no node until one is asked for."""
    with _cluster("as") as h:
        config = h.root / "autoscaling.json"
        config.write_text(json.dumps(_autoscaling_config(h)))
        _start(h, num_cpus=1, extra=[f"--autoscaling-config={config}"],
               env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        _wait_for_status(h, 1)
        yield h


def _env(h: Head, tmp_path: Path) -> dict:
    return h.client_env(RAY_ADDRESS=f"127.0.0.1:{h.gcs}", WANDB_MODE="disabled",
                        HARNESS_RESULTS_DIR=str(tmp_path / "results"), CUDA_VISIBLE_DEVICES="")


def _one_line(r: subprocess.CompletedProcess, before_ray_train: bool = True) -> str:
    """The last line of a command that failed with one (Ray's own connection lines may come before it;
    once Ray Train ran, so may its workers' forwarded logs)."""
    assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
    assert not before_ray_train or "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stderr.strip().splitlines()[-1]


def _ended_on_a_worker(r: subprocess.CompletedProcess) -> None:
    """A GPU run that was placed: its one line comes from a Ray Train worker, not from this driver."""
    assert "CUDA not available on a Ray Train worker" in _one_line(r, before_ray_train=False), r.stderr[-3000:]


def test_three_gpu_workers_are_placed_across_two_nodes(fixed, tmp_path):
    r = _harness([*RUN, "--workers", "3", "--set", "dist.use_gpu=true", "--out", str(tmp_path / "runs")],
                 _env(fixed, tmp_path), timeout=PLACED_WITHIN_S)
    _ended_on_a_worker(r)


def test_a_shape_no_node_holds_is_one_line(fixed, tmp_path):
    r = _harness([*RUN, "--workers", "3", "--cpus-per-worker", "2", "--set", "dist.use_gpu=true",
                  "--out", str(tmp_path / "runs")], _env(fixed, tmp_path), timeout=PLACED_WITHIN_S)
    assert "hold 2 such worker(s), one node each" in _one_line(r), r.stderr[-3000:]
    assert not (tmp_path / "runs").exists(), "refused before the run directory is made"


def test_a_cluster_run_must_say_where_it_trains(autoscaling, tmp_path):
    env = _env(autoscaling, tmp_path)
    r = _harness([*RUN, "--workers", "2", "--out", str(tmp_path / "runs")], env)
    line = _one_line(r)
    assert "dist.use_gpu=true" in line and "dist.use_gpu=false" in line, r.stderr[-3000:]
    m = tmp_path / "ddp.yaml"
    m.write_text(MATRIX)
    r = _harness(["sweep", "--matrix", str(m), "--workers-per-trial", "2", "--wandb", "off",
                  "--storage", str(tmp_path / "sweeps")], env)
    assert "--gpus-per-worker 1" in _one_line(r), r.stderr[-3000:]


def test_ddp_sweep_trial_is_placed_after_a_scale_up(autoscaling, tmp_path):
    m = tmp_path / "ddp.yaml"
    m.write_text(MATRIX)
    r = _harness(["sweep", "--matrix", str(m), "--name", "d", "--workers-per-trial", "2", "--gpus-per-worker", "1",
                  "--wandb", "off", "--storage", str(tmp_path / "sweeps"),
                  "--results-dir", str(tmp_path / "results"), "--docs-dir", ""],
                 _env(autoscaling, tmp_path), timeout=PLACED_WITHIN_S)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (row,) = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert row["stop_reason"] == "error" and "CUDA not available on a Ray Train worker" in row["error"], row
    assert "waiting for the autoscaler" in r.stderr, r.stderr[-3000:]
    (trial,) = [p.parent for p in (tmp_path / "sweeps" / "d").glob("*/trial.json")]
    cfg = json.loads((trial / "trial.json").read_text())["config"]
    assert cfg["dist"]["use_gpu"] is True and cfg["dist"]["workers"] == 2 and cfg["dist"]["cpus_per_worker"] == 1
    assert cfg["train"]["precision"] == "bf16", "resolved for the GPU workers, where no CUDA is (auto: bf16)"


def test_ddp_run_is_placed_on_the_added_gpu_node(autoscaling, tmp_path):
    r = _harness([*RUN, "--workers", "2", "--set", "dist.use_gpu=true", "--out", str(tmp_path / "runs")],
                 _env(autoscaling, tmp_path), timeout=PLACED_WITHIN_S)
    _ended_on_a_worker(r)
