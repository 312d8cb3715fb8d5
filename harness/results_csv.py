"""Results CSVs: atomic, lock-protected appends and keyed merges.

Several processes (Tune trials, benchmark scripts, concurrent sweeps) write the same files in
``results/``, so every write takes an exclusive ``fcntl`` lock on a side file, reads the current
rows, and replaces the file atomically (write to a temp file, ``os.replace``). A reader never sees
a half-written file and no writer loses another's rows.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

THROUGHPUT_COLUMNS: list[str] = [
    "kind", "arch", "backend", "preset", "dataset", "batch_size", "device", "precision", "world_size",
    "workers", "img_per_s", "ms_per_step", "infer_img_per_s", "peak_mem_mb", "first_step_s", "ratio",
    # kind speed (harness bench speed): test accuracy and timed seconds to the target, mean and std over
    # `runs`, and the fraction of runs that reached it
    "acc", "acc_std", "time_s", "time_s_std", "reached", "runs", "tta",
    # every kind with runs behind it: the seeds of the runs a figure is the mean or median of (`runs` counts them)
    "seeds",
    # kind sweep (harness bench sweep): the sweep machinery's cost per null trial
    "trials", "trials_per_min", "driver_cpu_s_per_trial", "driver_peak_rss_mb", "disk_kb_per_trial",
    "wandb_kb_per_trial", "merge_s",
    "note", "hardware", "torch", "ray", "git_sha", "date",
]


def results_dir() -> Path:
    """``$HARNESS_RESULTS_DIR`` or ``./results``."""
    return Path(os.environ.get("HARNESS_RESULTS_DIR", "results"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock associated with ``path`` (on ``path.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows of a CSV file as dicts; an absent file has none."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_atomic(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are for everyone who can read the repo
        with os.fdopen(fd, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({c: _fmt(r.get(c, "")) for c in columns})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fmt(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def append_rows(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Append ``rows`` to the CSV at ``path`` (created with ``columns`` if absent), atomically."""
    path = Path(path)
    with locked(path):
        old = read_rows(path)
        _write_atomic(path, columns, [*old, *rows])


def merge_rows(
    path: Path, rows: Sequence[dict], columns: Sequence[str], key: Callable[[dict], tuple]
) -> None:
    """Merge ``rows`` into the CSV at ``path``: a row whose key already exists replaces it, others are kept.

    Args:
        path: the CSV file; created if absent.
        rows: the new rows.
        columns: the documented column order.
        key: maps a row (values as strings or not) to its identity.
    """
    path = Path(path)
    with locked(path):
        merged: dict[tuple, dict] = {}
        for r in read_rows(path):
            merged[key(r)] = r
        for r in rows:
            merged[key({c: "" if r.get(c) is None else str(_fmt(r.get(c))) for c in columns})] = r
        _write_atomic(path, columns, merged.values())
