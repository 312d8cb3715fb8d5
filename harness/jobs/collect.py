"""Waiting for a job and bringing its results back (``harness results``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.jobs.server import ask
from harness.jobs.storage import META_STORAGE, read_storage, storage_location
from harness.jobs.wrapper import parse_published

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def wait_for_job(client: Any, job_id: str, timeout: float | None = None, poll: float = 2.0,
                 on_status: Callable[[str], None] | None = None) -> str:
    """Poll until the job ends; its final status (SUCCEEDED, FAILED or STOPPED).

    Raises:
        HarnessError: unknown job id (``no job 'X' on ADDRESS``), the server went away, or ``timeout``
            seconds passed first.
    """
    t0 = time.monotonic()
    last = None
    while True:
        status = str(ask(client, job_id, "get_job_status").value)
        if status != last and on_status:
            on_status(status)
        last = status
        if status in TERMINAL:
            return status
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise HarnessError(f"job {job_id} still {status} after {timeout:.0f} s (it keeps running; "
                               "run harness results again later)")
        time.sleep(poll)


def collect(client: Any, job_id: str, storage: str | None) -> tuple[dict[str, bytes], str]:
    """A finished job's result files, and where they came from.

    ``storage`` (or the one recorded at submit time) first; the job's log otherwise, or when the
    storage holds nothing for this job.
    """
    if storage is None:
        storage = (ask(client, job_id, "get_job_info").metadata or {}).get(META_STORAGE) or None
    if storage:
        files = read_storage(storage, job_id)
        if files:
            return files, storage_location(storage, job_id)
    files = parse_published(ask(client, job_id, "get_job_logs"))
    return files, "the job log"


def write_files(files: dict[str, bytes], dest: Path) -> list[Path]:
    """Write ``files`` (relative path -> bytes) under ``dest``; the paths written."""
    written = []
    dest = dest.resolve()
    for rel, data in sorted(files.items()):
        path = (dest / rel).resolve()
        if dest not in path.parents:
            raise HarnessError(f"refusing to write {rel} outside {dest}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written
