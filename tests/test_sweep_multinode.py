"""A sweep on a 3-node loopback cluster: every trial's row reaches the leaderboard, wherever it ran.

A head and two worker raylets on 127.0.0.1, started as cluster/README.md starts a cluster (``ray start``,
token auth on), each node with its own ``--temp-dir``: so each node has its own Ray session folder, as
separate machines do, and a file a trial writes into its node's session folder is not on the driver's.
The only path the nodes share is ``--storage`` (NFS on a real cluster). The driver runs on the head.

The nodes are stopped by their marker variable, as ``tests/test_cluster_job.py`` stops its head (never a
bare ``ray stop``, which would kill every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cluster_job import REPO, VENV_BIN, Head, _free_ports, _head_processes, _rows, stop_head

pytestmark = pytest.mark.slow

N_TRIALS = 6


def _start_worker(head: Head, name: str, num_cpus: int) -> None:
    """One more raylet joining ``head``: its own temp dir and ports, the head's token and marker."""
    node_mgr, obj_mgr, metrics, agent_http, agent_grpc, renv = _free_ports(6)
    cmd = [str(VENV_BIN / "ray"), "start", f"--address=127.0.0.1:{head.gcs}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={head.root / name}",
           f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
           f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent_http}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={renv}",
           "--object-store-memory=100000000", "--disable-usage-stats"]
    env = {**head.env, "RAY_TMPDIR": str(head.root / name), "HARNESS_TEST_HEAD": head.marker}
    proc = subprocess.run(cmd, env=env, cwd=head.root, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"ray start (worker) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@contextlib.contextmanager
def three_nodes() -> Iterator[Head]:
    """A head (1 CPU) and two workers (1 CPU each) on loopback; only their processes are stopped."""
    root = Path(tempfile.mkdtemp(prefix="mn", dir="/tmp"))  # AF_UNIX paths: <= 107 bytes
    h = Head(root)
    try:
        h.start()
        for i in (1, 2):
            _start_worker(h, f"w{i}", 1)
        yield h
    finally:
        stop_head(h.marker)
        leftovers = _head_processes(h.marker)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"node processes survived the stop: {leftovers}"


def test_every_trial_row_lands_from_every_node(tmp_path):
    matrix = tmp_path / "mn.yaml"
    # One CPU per trial and 3 CPUs in the cluster: the workers run trials while the head runs one.
    matrix.write_text("search: grid\nnum_samples: 1\nbase:\n  data.dataset: synthetic\n  data.synthetic_size: 64\n"
                      "  data.augment: none\n  train.epochs: 1\n  train.batch_size: 32\n"
                      "  train.measure_inference: false\n"
                      f"axes:\n  optim.lr: [{', '.join(str(0.01 * (i + 1)) for i in range(N_TRIALS))}]\n"
                      "  arch: [mlp]\n")
    with three_nodes() as head:
        storage = head.root / "shared"  # the one path every node shares (NFS on a real cluster)
        env = head.client_env(RAY_ADDRESS=f"127.0.0.1:{head.gcs}")
        proc = subprocess.run([sys.executable, "-m", "harness", "sweep", "--matrix", str(matrix), "--name", "mn",
                               "--wandb", "off", "--storage", str(storage), "--results-dir", str(tmp_path / "res"),
                               "--docs-dir", ""], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        staging = sorted(p for p in head.root.glob("w*/session_*/artifacts/*/mn/driver_artifacts/*") if p.is_dir())
        trials = sorted(p for p in (storage / "mn").iterdir() if p.is_dir()) if (storage / "mn").is_dir() else []
        run_dirs = [t for t in trials if (t / "run" / "summary.json").is_file()]
        leftovers = [p for p in staging if any(p.iterdir())]
    out = proc.stdout[-3000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, out
    rows = _rows(tmp_path / "res" / "leaderboard.csv")
    assert len(rows) == N_TRIALS and all(not r["error"] for r in rows), out
    assert sorted(float(r["lr"]) for r in rows) == pytest.approx([0.01 * (i + 1) for i in range(N_TRIALS)])
    # Each trial's run folder (metrics, plots) is in the shared storage, next to Tune's files.
    assert len(trials) == N_TRIALS and len(run_dirs) == N_TRIALS, trials
    # The workers' session folders hold no trial outputs (they would never reach the driver).
    assert not leftovers, leftovers
