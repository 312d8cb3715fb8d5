"""The dataset-reader interface, the data directory rule, and the cached read of a dataset.

A reader (one per dataset module, registered in ``DATASETS``) does two things:

* ``locate(opts, data_dir)`` finds the files, checks their checksums (cheap enough to do on
  every load, so a file damaged after the cache was built is still caught), and returns a
  ``Located`` whose ``key`` fingerprints the content and the decode options;
* ``decode(found, opts)`` turns the files into uint8 NCHW arrays; it runs only when the cache
  keyed by ``Located.key`` is absent or invalid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import DataError
from loaders.cache import ArrayCache, cache_root
from loaders.registries import DATASETS
from loaders.types import DataOptions, RawData

ARRAY_NAMES = ("train_x", "train_y", "test_x", "test_y")


class MissingDataError(DataError):
    """The dataset's files are absent (as opposed to present but corrupt)."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data root: ``data_dir`` if given, else ``$HARNESS_DATA_DIR``, else ``./data`` (made absolute)."""
    env = os.environ.get("HARNESS_DATA_DIR")
    chosen = Path(data_dir) if data_dir else Path(env) if env else Path("data")
    return Path(os.path.abspath(chosen.expanduser()))  # abspath also folds "..", unlike Path.absolute


@dataclass
class Located:
    """Where a dataset's files are, and the fingerprint that keys its decoded cache.

    Attributes:
        source: the file or folder the data comes from (shown by ``harness data info``).
        key: JSON-serialisable content fingerprint plus every option that changes the decoded arrays.
        files: reader-specific named paths.
        extra: reader-specific values found while locating (e.g. the class folders).
    """

    source: Path
    key: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class DatasetReader:
    """Base class of the registered dataset readers."""

    name: str = ""
    #: whether decoded arrays go to the on-disk cache (synthetic data is cheaper to regenerate)
    cacheable: bool = True

    def locate(self, opts: DataOptions, data_dir: Path) -> Located:
        """Find and checksum the files; download them when ``opts.download`` and they are missing.

        Raises:
            MissingDataError: the files are absent (the message says where to get them).
            DataError: a file is corrupt.
        """
        raise NotImplementedError

    def decode(self, found: Located, opts: DataOptions) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Decode the located files into ``train_x, train_y, test_x, test_y`` and an info dict.

        The info dict holds ``classes`` (list of names) and optionally ``note``.

        Raises:
            DataError: a file is truncated or holds the wrong shapes or dtypes.
        """
        raise NotImplementedError


def _check_raw(name: str, arrays: dict[str, np.ndarray], n_classes: int) -> None:
    """Shapes and label ranges every reader must deliver; a failure here is a reader bug or bad cache."""
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name}: decoded {split} split has images {x.shape} {x.dtype} and labels "
                            f"{y.shape}; expected (N, C, H, W) uint8 and (N,)")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DataError(f"{name}: {split} labels outside 0..{n_classes - 1}")


def read_raw(opts: DataOptions) -> RawData:
    """Locate, checksum and decode (through the cache) the dataset named by ``opts.dataset``.

    Raises:
        HarnessError: unknown dataset name.
        DataError: missing or corrupt files.
    """
    reader: DatasetReader = DATASETS.get(opts.dataset)
    data_dir = resolve_data_dir(opts.data_dir)
    found = reader.locate(opts, data_dir)
    root = cache_root(data_dir)
    if reader.cacheable:
        cache = ArrayCache(root, reader.name, found.key)
        arrays, info = cache.get_or_build(lambda: reader.decode(found, opts), str(found.source))
    else:
        arrays, info = reader.decode(found, opts)
    classes = tuple(info["classes"])
    _check_raw(reader.name, arrays, len(classes))
    # np.require copies only read-only or strided arrays (np.frombuffer views, for one).
    t = {k: torch.from_numpy(np.require(arrays[k], requirements=("C", "W"))) for k in ARRAY_NAMES}
    return RawData(
        train_x=t["train_x"], train_y=t["train_y"].to(torch.int64), test_x=t["test_x"],
        test_y=t["test_y"].to(torch.int64), classes=classes, source=str(found.source),
        note=str(info.get("note", "")), cache_dir=str(root),
    )


def download_failed(name: str, data_dir: Path, err: BaseException) -> DataError:
    """The one-line error for a failed ``--download``."""
    what = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"{name}: download into {data_dir} failed ({type(err).__name__}: {what}); "
                     "check the internet connection, or copy the files there by hand")
