"""Integrity checks on data files: checksums, and one-line errors instead of reader tracebacks.

A corrupt download or a truncated copy otherwise surfaces as a ``zlib.error`` or a numpy
reshape failure deep inside a training job; here every such failure becomes a ``DataError``
that names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import pickle
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from harness.errors import DataError

# What reading a damaged file raises, across pickle, gzip, zipfile, lzma and numpy.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, zipfile.BadZipFile, lzma.LZMAError, zlib.error,
    pickle.UnpicklingError, KeyError, IndexError, TypeError, AttributeError,
)


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 22) -> str:
    """Hex digest of a file's bytes.

    Raises:
        DataError: the file cannot be read.
    """
    h = hashlib.new(algorithm)
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's raw bytes in C order (the form the shared data READMEs list)."""
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def check_md5(path: Path, expected: str, hint: str) -> None:
    """Compare a file's md5 with ``expected``.

    Raises:
        DataError: mismatch; the message names the file and repeats ``hint`` (how to re-fetch it).
    """
    got = file_digest(path, "md5")
    if got != expected:
        raise DataError(f"{path}: md5 {got} does not match the expected {expected} "
                        f"(corrupt or truncated file); {hint}")


@contextlib.contextmanager
def reading(path: Path, hint: str) -> Iterator[None]:
    """Turn any error raised while decoding ``path`` into one ``DataError`` naming it.

    ``DataError`` raised inside passes through unchanged.
    """
    try:
        yield
    except DataError:
        raise
    except READ_ERRORS as e:
        what = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot decode ({type(e).__name__}: {what}); "
                        f"the file is corrupt or truncated; {hint}") from None


def expect_array(
    path: Path, name: str, a: np.ndarray, shape: tuple[int | None, ...], dtype: str | tuple[str, ...]
) -> None:
    """Check an array read from ``path`` has ``shape`` (None = any length) and one of ``dtype``.

    Raises:
        DataError: wrong rank, shape or dtype.
    """
    ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape, strict=False))
    dtypes = (dtype,) if isinstance(dtype, str) else dtype
    if not ok or a.dtype not in [np.dtype(d) for d in dtypes]:
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ") " + " or ".join(dtypes)
        raise DataError(f"{path}: '{name}' is {tuple(a.shape)} {a.dtype}, expected {want}")
