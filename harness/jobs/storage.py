"""Where a job publishes its results besides its log: ``--storage``, through ``pyarrow.fs``
(local paths, NFS, ``file://``, ``s3://``, ``gs://``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: Subfolder of ``--storage`` that receives the published results, one folder per job.
STORAGE_SUBDIR = "harness-results"
#: Job metadata key that remembers ``--storage``, so ``harness results`` needs only the job id.
META_STORAGE = "harness_storage"


def is_uri(storage: str) -> bool:
    """True for ``s3://``, ``gs://``, ``file://`` ...; False for a plain (local or NFS) path."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", storage))


def storage_location(storage: str, job_id: str) -> str:
    """``<storage>/harness-results/<job id>``, as the user wrote the storage."""
    return f"{storage.rstrip('/')}/{STORAGE_SUBDIR}/{job_id}"


def _filesystem(storage: str) -> tuple[Any, str]:
    from pyarrow import fs  # pyarrow (Ray's) is heavy: imported only when --storage is used

    if not is_uri(storage):
        return fs.LocalFileSystem(), str(Path(storage).expanduser().resolve())
    try:
        return fs.FileSystem.from_uri(storage)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError
        raise HarnessError(f"storage {storage}: {str(e).splitlines()[0]}") from None


def write_storage(storage: str, job_id: str, files: dict[str, bytes]) -> None:
    filesystem, base = _filesystem(storage)
    root = f"{base.rstrip('/')}/{STORAGE_SUBDIR}/{job_id}"
    for rel, data in files.items():
        path = f"{root}/{rel}"
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as fh:
            fh.write(data)


def read_storage(storage: str, job_id: str) -> dict[str, bytes]:
    """The files a job published to ``storage``; empty when there are none."""
    from pyarrow import fs  # heavy: see _filesystem

    filesystem, base = _filesystem(storage)
    root = f"{base.rstrip('/')}/{STORAGE_SUBDIR}/{job_id}"
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    except Exception as e:  # noqa: BLE001
        raise HarnessError(f"storage {storage}: {str(e).splitlines()[0]}") from None
    out: dict[str, bytes] = {}
    for info in infos:
        if info.type == fs.FileType.File:
            with filesystem.open_input_stream(info.path) as fh:
                out[info.path[len(root) + 1:]] = fh.read()
    return out
