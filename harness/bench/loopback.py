"""A multi-node Ray cluster on one machine: a head and worker raylets on 127.0.0.1, for ``bench sweep --nodes``.

Started as cluster/README.md starts a cluster (``ray start``, token auth on), with one difference that
makes it a fair stand-in for separate machines: every node has its own ``--temp-dir``, so its own Ray
session folder. Every node gets its own free ports and its own token file, and a marker variable in
its environment; :meth:`LoopbackCluster.stop` ends exactly the processes carrying that marker (a bare
``ray stop`` would kill every Ray on the machine, other users' included).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil

from harness.errors import HarnessError

_PORTS = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
          "dashboard-agent-grpc-port", "runtime-env-agent-port")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LoopbackCluster:
    """``nodes`` raylets on 127.0.0.1 (the first is the head), ``cpus`` CPUs each; a context manager."""

    def __init__(self, nodes: int, cpus: int = 1) -> None:
        self.nodes, self.cpus = nodes, cpus
        self.root = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))  # AF_UNIX paths: <= 107 bytes
        self.marker = uuid.uuid4().hex
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.gcs, self.dash = _free_ports(2)
        self.address = f"127.0.0.1:{self.gcs}"
        bin_dir = Path(sys.executable).parent
        #: What a driver needs to join: the address and the token (never printed).
        self.env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        self._ray = str(bin_dir / "ray")

    def __enter__(self) -> LoopbackCluster:
        try:
            for i in range(self.nodes):
                self._start_node(i)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start_node(self, i: int) -> None:
        temp = self.root / f"n{i}"
        ports = [f"--{name}={p}" for name, p in zip(_PORTS, _free_ports(len(_PORTS)))]
        role = (["--head", f"--port={self.gcs}", f"--dashboard-port={self.dash}", "--dashboard-host=127.0.0.1",
                 f"--ray-client-server-port={_free_ports(1)[0]}"] if i == 0 else [f"--address={self.address}"])
        cmd = [self._ray, "start", *role, "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
               f"--temp-dir={temp}", *ports, "--object-store-memory=100000000", "--disable-usage-stats"]
        env = {**os.environ, **self.env, "RAY_TMPDIR": str(temp), "HARNESS_LOOPBACK": self.marker}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run(cmd, env=env, cwd=self.root, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            raise HarnessError(f"ray start (node {i}) failed: {(proc.stderr or proc.stdout).strip()[-500:]}")

    def _processes(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid != os.getpid() and p.environ().get("HARNESS_LOOPBACK") == self.marker:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM this cluster's processes (and only them), SIGKILL what is left, remove its folder."""
        terminate(self._processes(), grace)
        shutil.rmtree(self.root, ignore_errors=True)


def terminate(procs: list[psutil.Process], grace: float = 8.0) -> None:
    """`ray stop` scoped to ``procs``: SIGTERM them, SIGKILL what is left after ``grace`` s (never a bare
    `ray stop`, which ends every Ray process on the machine)."""
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
