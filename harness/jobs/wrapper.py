"""Inside the job: run the sweep with a results folder of its own, then publish what it wrote.

The job runs ``python -m harness.jobs job --job-id ID [--storage URI] -- COMMAND...`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.jobs.storage import storage_location, write_storage

_BEGIN = "@@harness-results begin"
_FILE = "@@harness-file"
_END = "@@harness-results end"
_LOG_PAYLOAD_LIMIT = 32 * 1024 * 1024  # bytes of results echoed into the job log; more goes to storage only


def _results_dir_of(command: list[str], job_id: str) -> Path:
    """The folder the wrapped sweep writes: its ``--results-dir``, else ``./results/<job id>``."""
    for i, a in enumerate(command):
        if a == "--results-dir" and i + 1 < len(command):
            return Path(command[i + 1]).expanduser().resolve()
        if a.startswith("--results-dir="):
            return Path(a.split("=", 1)[1]).expanduser().resolve()
    return (Path.cwd() / "results" / job_id).resolve()


def run_job(job_id: str, command: list[str], storage: str | None) -> int:
    """Run ``command`` with a results folder of its own, then publish that folder; its exit status.

    ``ray job stop`` sends SIGTERM to the whole process group: the sweep stops, keeping finished
    trials, and whatever it wrote is still published before this process exits.
    """
    if not command:
        raise HarnessError("job: nothing to run after --")
    results = _results_dir_of(command, job_id)
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["HARNESS_RESULTS_DIR"] = str(results)
    env.setdefault("HARNESS_DOCS_DIR", str(results / "docs"))
    print(f"harness job {job_id}: {shlex.join(command)}", flush=True)
    print(f"harness job {job_id}: results -> {results}", flush=True)
    stopped: list[int] = []

    def on_term(signum: int, _frame: Any) -> None:
        stopped.append(signum)  # the sweep, in our process group, got the same signal

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        rc = subprocess.call(command, env=env)
    finally:
        signal.signal(signal.SIGTERM, old)
    publish(results, job_id, storage)
    if stopped and rc == 0:
        rc = 128 + stopped[0]
    return rc


def _result_files(results: Path) -> list[Path]:
    if not results.is_dir():
        return []
    return sorted(p for p in results.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith((".lock", ".tmp")))


def publish(results: Path, job_id: str, storage: str | None, out: Callable[[str], None] | None = None) -> list[str]:
    """Echo every file under ``results`` into the job log, and copy them to ``--storage``.

    Args:
        results: the folder the sweep wrote.
        job_id: the submission id.
        storage: a path or URI, or None.
        out: where log lines go (stdout).

    Returns:
        The relative paths published.
    """
    out = out or (lambda line: print(line, flush=True))
    files = _result_files(results)
    rels = [p.relative_to(results).as_posix() for p in files]
    if storage:
        try:
            write_storage(storage, job_id, {r: p.read_bytes() for r, p in zip(rels, files)})
            out(f"harness job {job_id}: {len(rels)} result files copied to {storage_location(storage, job_id)}")
        except Exception as e:  # noqa: BLE001 - report the storage failure, still echo into the log
            out(f"harness job {job_id}: copying results to {storage} failed: {str(e).splitlines()[0]}")
    total = 0
    out(f"{_BEGIN} job={job_id} files={len(rels)}")
    for rel, p in zip(rels, files):
        data = p.read_bytes()
        total += len(data)
        if total > _LOG_PAYLOAD_LIMIT:
            out(f"harness job {job_id}: {rel} and later files are too big for the log; use --storage")
            break
        out(f"{_FILE} {rel} bytes={len(data)} sha256={hashlib.sha256(data).hexdigest()}")
        text = base64.b64encode(data).decode()
        for i in range(0, len(text), 76):
            out(text[i:i + 76])
    out(_END)
    return rels


def parse_published(logs: str) -> dict[str, bytes]:
    """The files that :func:`publish` echoed into a job log (the last block, if several).

    Raises:
        HarnessError: a file's size or checksum does not match (a truncated or mangled log).
    """
    start = logs.rfind(_BEGIN)
    if start < 0:
        return {}
    files: dict[str, bytes] = {}
    name, size, digest, chunks = None, 0, "", []

    def close() -> None:
        if name is None:
            return
        data = base64.b64decode("".join(chunks))
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise HarnessError(f"job log: {name} came back damaged ({len(data)} of {size} bytes); use --storage")
        files[name] = data

    for line in logs[start:].splitlines()[1:]:
        line = line.strip()
        if line.startswith(_END):
            break
        if line.startswith(_FILE):
            close()
            m = re.match(rf"^{re.escape(_FILE)} (.+) bytes=(\d+) sha256=([0-9a-f]{{64}})$", line)
            if not m:
                raise HarnessError(f"job log: bad results header '{line[:80]}'")
            name, size, digest, chunks = m.group(1), int(m.group(2)), m.group(3), []
        elif name is not None and line and not line.startswith("harness job "):
            chunks.append(line)
    close()
    return files


def main(argv: list[str] | None = None) -> int:
    """The job-side entry point (what the Ray job runs)."""
    p = argparse.ArgumentParser(prog="python -m harness.jobs",
                                description="Run inside a Ray job: wrap a sweep and publish its results.")
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("job", help="run COMMAND with its own results folder, then publish the results")
    j.add_argument("--job-id", required=True, help="the submission id (names the results folder)")
    j.add_argument("--storage", default=None, help="also copy the results to <storage>/harness-results/<job id>")
    j.add_argument("command", nargs=argparse.REMAINDER, help="-- python -m harness sweep ...")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return run_job(args.job_id, command, args.storage)
    except HarnessError as e:
        sys.stderr.write(f"harness job: error: {e}\n")
        return 2

