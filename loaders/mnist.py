"""MNIST (LeCun et al., 1998): 60,000 training and 10,000 test digits, 28x28 grayscale, 10 classes.

Read from torchvision's layout, ``MNIST/raw/*-ubyte.gz`` (the official IDX files, gzip
compressed); each file's md5 is checked against the official table on every load, and the IDX
headers (magic number, dimensions, payload length) are checked when decoding. ``--download``
fetches the files with torchvision's downloader.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from loaders.integrity import check_md5, reading
from loaders.reader import DatasetReader, Located, MissingDataError, download_failed
from loaders.registries import DATASETS
from loaders.types import DataOptions

CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
           "7 - seven", "8 - eight", "9 - nine")
RAW_DIR = "MNIST/raw"
# The official md5s, as in torchvision.datasets.MNIST.resources (checked by tests/test_datasets.py).
FILES_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
GET_HINT = ("get them with 'harness data prepare --dataset mnist --download' (needs internet) or copy "
            "MNIST/raw/*-ubyte.gz there")
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes


class MnistReader(DatasetReader):
    """Reads the gzipped IDX files of torchvision's layout."""

    name = "mnist"

    def locate(self, opts: DataOptions, data_dir: Path) -> Located:
        raw = data_dir / RAW_DIR
        missing = [n for n in FILES_MD5 if not (raw / n).is_file()]
        if missing and opts.download:
            try:
                # torchvision is heavy: loaded when this runs, so importing this module stays light
                import torchvision

                torchvision.datasets.MNIST(str(data_dir), train=True, download=True)
            except Exception as e:  # noqa: BLE001 - any download failure is reported as one line
                raise download_failed(self.name, data_dir, e) from None
            return self.locate(opts.replace(download=False), data_dir)
        if missing:
            raise MissingDataError(f"mnist: {raw} lacks {', '.join(missing)}; {GET_HINT}")
        for n, md5 in FILES_MD5.items():
            check_md5(raw / n, md5, f"delete it and {GET_HINT}")
        return Located(raw, {"format": "idx.gz", "md5": FILES_MD5}, files={"raw": raw})

    def decode(self, found: Located, opts: DataOptions) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raw = found.files["raw"]
        arrays = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            x = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
            y = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
            if len(x) != len(y):
                raise DataError(f"{raw}: {prefix} has {len(x)} images but {len(y)} labels")
            arrays[f"{split}_x"] = x[:, None]  # (N, 1, 28, 28)
            arrays[f"{split}_y"] = y.astype(np.int64)
        return arrays, {"classes": list(CLASSES)}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with ``ndim`` dimensions.

    Raises:
        DataError: unreadable gzip, a wrong magic number, or a payload that does not fill the
            dimensions its header states (a truncated file).
    """
    with reading(path, f"delete it and {GET_HINT}"), gzip.open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 + 4 * ndim or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad header); delete it and {GET_HINT}")
    if data[2] != IDX_UBYTE or data[3] != ndim:
        raise DataError(f"{path}: IDX type {data[2]:#x} with {data[3]} dims, expected unsigned bytes with {ndim}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {payload.size} bytes "
                        f"(truncated or corrupt); delete it and {GET_HINT}")
    return payload.reshape(dims)


DATASETS.register("mnist", MnistReader())
