"""The cluster job path on loopback: a real Ray head, token auth on, `harness submit`, `harness results`.

The head is started as cluster/README.md starts one (``ray start --head --node-ip-address=127.0.0.1
--dashboard-host=127.0.0.1``), from this venv (so the job's ``python`` has torch, ray and harness),
with its own temp dir, its own free ports and its own auth token (``RAY_AUTH_MODE=token`` +
``RAY_AUTH_TOKEN_PATH``; ``~/.ray/auth_token`` is never touched).

Stopping it: plain ``ray stop`` kills *every* Ray process on the machine (it matches process names,
not clusters), which would take down the suite's session ``ray_cluster`` and anyone else's Ray on a
shared runner. So the finalizer stops exactly this head's processes: those whose environment carries
this head's marker variable (every process the head starts inherits it), SIGTERM then SIGKILL. It
always runs, pass or fail.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.bench.loopback import terminate

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SMOKE = "cluster/smoke-matrix.yaml"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _head_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get("HARNESS_TEST_HEAD") == marker:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def stop_head(marker: str, grace: float = 8.0) -> None:
    """`ray stop`, scoped to one head: SIGTERM its processes, SIGKILL what is left after ``grace`` s."""
    terminate(_head_processes(marker), grace)


class Head:
    """A loopback Ray head: its address, the env that reaches it, and where it keeps its files."""

    def __init__(self, root: Path, num_gpus: int = 0):
        self.root = root
        self.num_gpus = num_gpus  # GPUs the head declares, whether it has them or not (a fake-GPU node)
        self.marker = uuid.uuid4().hex
        self.temp = root / "ray"
        self.token_file = root / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        (self.gcs, self.dash, self.client, self.agent_http, self.agent_grpc, self.renv, self.metrics,
         self.node_mgr, self.obj_mgr) = _free_ports(9)
        self.address = f"http://127.0.0.1:{self.dash}"
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("RAY_", "HARNESS_", "WANDB_")) and k != "PYTHONPATH"}
        # What a real cluster node has: the env's python first on PATH, auth on, one temp dir.
        self.env = {**base, "HARNESS_PROBE": "off", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_TMPDIR": str(self.temp), "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(self.token_file), "HARNESS_CACHE_DIR": str(root / "cache"),
                    "RAY_USAGE_STATS_ENABLED": "0"}

    def client_env(self, **extra: str) -> dict:
        """The submitting user's shell: the token, nothing of the head's marker."""
        env = {k: v for k, v in self.env.items()}
        env["HARNESS_RESULTS_DIR"] = str(self.root / "local-results")
        env.update(extra)
        return env

    def start(self) -> None:
        cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--num-cpus=2",
               "--dashboard-host=127.0.0.1", f"--port={self.gcs}", f"--dashboard-port={self.dash}",
               f"--ray-client-server-port={self.client}", f"--dashboard-agent-listen-port={self.agent_http}",
               f"--dashboard-agent-grpc-port={self.agent_grpc}", f"--runtime-env-agent-port={self.renv}",
               f"--metrics-export-port={self.metrics}", f"--node-manager-port={self.node_mgr}",
               f"--object-manager-port={self.obj_mgr}", f"--temp-dir={self.temp}",
               "--object-store-memory=100000000", "--disable-usage-stats", f"--num-gpus={self.num_gpus}"]
        env = {**self.env, "HARNESS_TEST_HEAD": self.marker}
        proc = subprocess.run(cmd, env=env, cwd=self.root, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"ray start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@contextlib.contextmanager
def running_head(prefix: str = "hc", num_gpus: int = 0) -> Iterator[Head]:
    """A started loopback head, stopped (only its own processes) and removed afterwards, pass or fail."""
    # AF_UNIX socket paths are capped at 107 bytes: a short root under /tmp.
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    h = Head(root, num_gpus=num_gpus)
    try:
        h.start()
        yield h
    finally:
        stop_head(h.marker)
        leftovers = _head_processes(h.marker)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"head processes survived the stop: {leftovers}"


@pytest.fixture(scope="module")
def head():
    with running_head() as h:
        yield h


def _harness(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_dashboard_is_loopback_only(head):
    with socket.create_connection(("127.0.0.1", head.dash), timeout=5):
        pass
    others = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")}
    for ip in others:
        with pytest.raises(OSError):
            socket.create_connection((ip, head.dash), timeout=2).close()


def test_job_server_requires_the_token(head):
    no_token = head.client_env(RAY_AUTH_MODE="disabled")
    r = _harness(["results", "--address", head.address, "--job", "nope"], no_token)
    assert r.returncode == 2 and "requires a Ray auth token" in r.stderr, r.stderr
    wrong = head.root / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    r = _harness(["results", "--address", head.address, "--job", "nope"],
                 head.client_env(RAY_AUTH_TOKEN_PATH=str(wrong)))
    assert r.returncode == 2 and "rejected the auth token" in r.stderr, r.stderr
    r = _harness(["results", "--address", head.address, "--job", "nope"], head.client_env())
    assert r.returncode == 2 and "nope" in r.stderr, r.stderr


def test_submit_sweep_and_collect_leaderboard(head):
    storage = head.root / "shared"  # stands in for NFS: the one path head and workers share
    # A fixed code version (provenance honours HARNESS_GIT_SHA): the real sha moves while others commit.
    env = head.client_env(HARNESS_GIT_SHA="0123456789+test")
    t0 = time.monotonic()
    sub = _harness(["submit", "--address", head.address, "--storage", str(storage), "--",
                    "--matrix", SMOKE, "--wandb", "off", "--max-concurrent", "2"], env)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().splitlines()[-1]
    assert job_id.startswith("harness-")
    assert f"ray job logs --address {head.address} --follow {job_id}" in sub.stdout
    assert "RAY_AUTH_MODE=token" in sub.stdout
    token = head.token_file.read_text()
    assert token not in sub.stdout + sub.stderr

    # The documented plain line, with the same auth, upload and runtime_env, while the sweep runs.
    plain = subprocess.run([str(VENV_BIN / "ray"), "job", "submit", "--address", head.address, "--working-dir", ".",
                            "--runtime-env", "cluster/runtime_env.yaml", "--", "python", "-m", "harness", "sweep",
                            "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    assert "usage: harness sweep" in plain.stdout

    res = _harness(["results", "--address", head.address, "--job", job_id, "--timeout", "500", "--poll", "2"],
                   env, timeout=560)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    dest = Path(res.stdout.strip().splitlines()[-1])
    assert dest == head.root / "local-results" / "jobs" / job_id
    assert f"from {storage}/harness-results/{job_id}" in res.stdout
    rows = _rows(dest / "leaderboard.csv")
    assert sorted(r["arch"] for r in rows) == ["mlp", "tiny_cnn"]
    assert all(r["dataset"] == "synthetic" and not r["error"] for r in rows), rows
    # The upload has no .git: harness submit passes the code version along.
    assert {r["git_sha"] for r in rows} == {"0123456789+test (HARNESS_GIT_SHA)"}
    assert (dest / "throughput.csv").is_file()
    # The sweep's Tune experiment went to the shared path too, not only to the head's scratch space.
    assert list(storage.glob("smoke-matrix-*")), sorted(p.name for p in storage.iterdir())

    # Without storage the same files come back from the job's log.
    empty = head.root / "empty-storage"
    empty.mkdir()
    res2 = _harness(["results", "--address", head.address, "--job", job_id, "--storage", str(empty),
                     "--dest", str(head.root / "from-log")], env)
    assert res2.returncode == 0, res2.stderr
    assert "from the job log" in res2.stdout
    for name in ("leaderboard.csv", "throughput.csv"):
        assert (head.root / "from-log" / name).read_bytes() == (dest / name).read_bytes()
    print(f"loopback job: submit to leaderboard in {elapsed:.0f} s")
