"""Cluster faults: a job server that is not there (or does not answer), and job ids it does not know.

Each is one line on stderr in the harness's words, naming the address (or the id), exit 2, and fast:
a refused connection fails at once, and a server that accepts but never answers is given up after
``$HARNESS_JOB_SERVER_TIMEOUT`` seconds instead of Ray's client waiting forever.

The unknown id is asked of a stand-in job server that answers as Ray's does (``GET /api/version``,
``GET /api/jobs/<id>`` -> 404 ``Job <id> does not exist``), and, in the slow variant, of a real Ray
head started as tests/test_cluster_job.py starts one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import child_env

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict:
    return child_env(HARNESS_RESULTS_DIR=str(tmp_path / "results"), RAY_AUTH_MODE="disabled", **extra)


def _harness(args: list[str], env: dict, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t0


def _one_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, f"exit {p.returncode}\n{p.stderr[-3000:]}"
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    for n in needles:
        assert n in lines[0], f"'{n}' not in: {lines[0]}"
    return lines[0]


@contextmanager
def _silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


class _RayLikeJobServer(BaseHTTPRequestHandler):
    """What Ray's job server answers for a version check and for a job it does not know."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/api/version":
            import ray

            body, status = json.dumps({"version": "2", "ray_version": ray.__version__, "ray_commit": "x",
                                       "session_name": "stub"}), 200
        elif self.path.startswith("/api/jobs/"):
            body, status = f"Job {self.path[len('/api/jobs/'):]} does not exist", 404
        else:
            body, status = "Not Found", 404
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _stub_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RayLikeJobServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_job_server_is_one_line(tmp_path):
    env = _env(tmp_path)
    address = f"http://127.0.0.1:{_free_port()}"  # nothing listens: the connection is refused
    p, took = _harness(["submit", "--address", address, "--", "--matrix", "quick"], env)
    _one_line(p, address, "cannot reach")
    assert took < 30, f"harness submit took {took:.0f} s to give up"
    p, took = _harness(["results", "--address", address, "--job", "harness-x"], env)
    _one_line(p, address, "cannot reach")
    assert took < 30, f"harness results took {took:.0f} s to give up"

    # A server that accepts but never answers: given up after $HARNESS_JOB_SERVER_TIMEOUT seconds.
    with _silent_server() as port:
        address = f"http://127.0.0.1:{port}"
        slow = _env(tmp_path, HARNESS_JOB_SERVER_TIMEOUT="2")
        for args in (["submit", "--address", address, "--", "--matrix", "quick"],
                     ["results", "--address", address, "--job", "harness-x"]):
            p, took = _harness(args, slow)
            _one_line(p, address, "did not answer within 2 s")
            assert took < 30, f"harness {args[0]} took {took:.0f} s against a silent server"
    assert not (tmp_path / "results").exists(), "nothing is written"


def test_unknown_job_id_is_one_line(tmp_path):
    env = _env(tmp_path)
    # Empty (or not an id at all): refused before any server is asked; it used to be
    # "TypeError: JobDetails() argument after ** must be a mapping, not list" (GET /api/jobs/ lists them).
    for job, needle in (("", "--job is empty"), ("a/../b", "is not a job id")):
        p, _ = _harness(["results", "--address", f"http://127.0.0.1:{_free_port()}", "--job", job], env)
        _one_line(p, "--job", needle)
    # An id the (Ray-like) server does not know.
    with _stub_server() as address:
        p, _ = _harness(["results", "--address", address, "--job", "harness-nope"], env)
        _one_line(p, f"no job 'harness-nope' on {address}")
    assert not (tmp_path / "results").exists(), "nothing is written"


@pytest.mark.slow
def test_unknown_job_id_is_one_line_on_a_ray_head(tmp_path):
    """The same answer from a real Ray head (token auth on), started and stopped as test_cluster_job does."""
    import shutil

    from test_cluster_job import Head, _head_processes, stop_head

    root = Path(tempfile.mkdtemp(prefix="hf", dir="/tmp"))  # AF_UNIX paths: <= 107 bytes
    head = Head(root)
    try:
        head.start()
        p, _ = _harness(["results", "--address", head.address, "--job", "harness-nope"], head.client_env(),
                        timeout=120)
        _one_line(p, f"no job 'harness-nope' on {head.address}")
        p, _ = _harness(["results", "--address", head.address, "--job", ""], head.client_env())
        _one_line(p, "--job is empty")
    finally:
        stop_head(head.marker)
        leftovers = _head_processes(head.marker)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"head processes survived the stop: {leftovers}"
