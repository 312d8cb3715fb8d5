"""Decoded-data caches: uint8 arrays on disk, keyed by the source's content and the decode options.

Why: CIFAR-10's shared ``.npz`` has LZMA members (about 15 s to decode) and Imagenette is 13k
JPEGs; decoding once and reloading plain ``.npy`` files makes later loads take well under 2 s.

Where: ``$HARNESS_CACHE_DIR`` if set, else ``<data_dir>/.harness-cache`` when the data directory
is writable, else ``$XDG_CACHE_HOME/cnn-harness`` (``~/.cache/cnn-harness``). Shared data
directories are often read-only, and a cache must never be written into them.

Safety: a cache entry is a directory ``<name>-<key>`` whose key hashes the source fingerprint
(file checksums or sizes and times) and every option that changes the decoded arrays, plus a
format version. Its ``meta.json`` records each array's shape, dtype and SHA-256, checked on every
load: a corrupt entry is reported on stderr and rebuilt, never silently used. Entries are
written to a temporary directory and renamed into place, and builders hold a per-entry
``fcntl`` lock, so concurrent trials decode once and never read a half-written entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loaders.integrity import array_sha256

NOTICE_AFTER_S = 1.0  # announce a decode that is still running after this long
# Bump when the layout of cached arrays changes, so old entries are never read as new ones.
CACHE_FORMAT = 1


def _writable_dir(path: Path) -> bool:
    """Writable, and not read-only by intent: root passes ``os.access`` even on a mode-555 folder."""
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        return False
    return bool(path.stat().st_mode & 0o222)


def cache_root(data_dir: Path) -> Path:
    """Where caches for data under ``data_dir`` live (see the module docstring)."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if _writable_dir(data_dir):
        return data_dir / ".harness-cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cnn-harness"


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (JSON-serialisable) and the cache format version."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def notice(msg: str) -> None:
    """A one-line progress or warning message on stderr (stdout stays for command output)."""
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; without a writable place for it, hold none."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")  # noqa: SIM115 - closed in finally
    except OSError:
        yield
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # closing releases the lock


class ArrayCache:
    """One cache entry: a set of named numpy arrays plus a JSON ``info`` dict."""

    def __init__(self, root: Path, name: str, key_parts: dict[str, Any]) -> None:
        self.root = Path(root)
        self.key = cache_key({"name": name, **key_parts})
        self.key_parts = key_parts
        self.path = self.root / f"{name}-{self.key}"

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The cached arrays and info, or ``None`` when absent or invalid (then it is removed)."""
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            arrays = {}
            for name, want in meta["arrays"].items():
                a = np.load(self.path / f"{name}.npy", allow_pickle=False)
                if list(a.shape) != want["shape"] or str(a.dtype) != want["dtype"]:
                    raise ValueError(f"{name}.npy is {a.shape} {a.dtype}, meta says {want}")
                if array_sha256(a) != want["sha256"]:
                    raise ValueError(f"{name}.npy: sha256 mismatch")
                arrays[name] = a
            return arrays, meta["info"]
        except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
            notice(f"cache {self.path} is corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                   "rebuilding it")
            shutil.rmtree(self.path, ignore_errors=True)
            return None

    def save(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> bool:
        """Write the entry atomically; returns False (with a notice) when the root is not writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{self.path.name}."))
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        except OSError as e:
            notice(f"cannot write the cache under {self.root} ({e.strerror or e}); "
                   "set HARNESS_CACHE_DIR to a writable directory to keep decoded data")
            return False
        try:
            meta = {"key": self.key_parts, "info": info, "arrays": {}}
            for name, a in arrays.items():
                a = np.ascontiguousarray(a)
                np.save(tmp / f"{name}.npy", a, allow_pickle=False)
                meta["arrays"][name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": array_sha256(a)}
            # meta.json last: an entry without it is never read.
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            if self.path.exists():
                shutil.rmtree(self.path, ignore_errors=True)
            os.replace(tmp, self.path)
            return True
        except OSError as e:
            notice(f"cannot write the cache {self.path} ({e.strerror or e}); continuing without it")
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def get_or_build(
        self, build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]], what: str
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Load the entry, or build it with ``build()`` (once across processes) and save it.

        Args:
            build: decodes the source; returns (arrays, info).
            what: names the source in the progress notice.
        """
        hit = self.load()
        if hit is not None:
            return hit
        with _lock(self.root / f"{self.path.name}.lock"):
            hit = self.load()  # another process may have built it while we waited
            if hit is not None:
                return hit
            # Said only when decoding is slow enough to wonder about, so that a file that fails
            # at once (truncated archive) still gives exactly one line of output.
            timer = threading.Timer(NOTICE_AFTER_S, notice, [f"decoding {what} once; cache: {self.path}"])
            timer.daemon = True
            timer.start()
            try:
                arrays, info = build()
            finally:
                timer.cancel()
            self.save(arrays, info)
            return arrays, info
