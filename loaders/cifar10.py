"""CIFAR-10 (Krizhevsky, 2009): 50,000 training and 10,000 test images, 32x32 RGB, 10 classes.

Two on-disk forms are read, in this order of preference:

* ``cifar-10-batches-py/`` (the official Python pickles, torchvision's layout): each file's md5
  is checked against the official table on every load;
* ``cifar10/cifar10.npz`` (also ``cifar10.npz`` directly under the data directory): arrays
  ``x_train`` (50000, 32, 32, 3) uint8, ``y_train``, ``x_test``, ``y_test``, the form of the shared
  data folder. Its members are LZMA-compressed (about 15 s to decode), so the decoded arrays are
  cached; each array's SHA-256 is checked against the table in the shared folder's README.

``--download`` fetches the pickles with torchvision's downloader.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from loaders.integrity import array_sha256, check_md5, expect_array, file_digest, reading
from loaders.reader import DatasetReader, Located, MissingDataError, download_failed
from loaders.registries import DATASETS
from loaders.types import DataOptions

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

PICKLE_DIR = "cifar-10-batches-py"
# The official md5s, as in torchvision.datasets.CIFAR10.train_list / test_list / meta
# (tests/test_datasets.py checks that they still agree).
PICKLE_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TRAIN_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")

NPZ_NAMES = ("cifar10/cifar10.npz", "cifar10.npz")
# SHA-256 of each array's raw C-order bytes, from the README next to the shared cifar10.npz.
NPZ_SHA256: dict[str, str] = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}
INT_DTYPES = ("uint8", "int16", "int32", "int64")

GET_HINT = ("get it with 'harness data prepare --dataset cifar10 --download' (needs internet) or copy "
            "cifar-10-batches-py/ or cifar10/cifar10.npz there")


class Cifar10Reader(DatasetReader):
    """Reads the official pickles or the shared npz (see the module docstring)."""

    name = "cifar10"

    def locate(self, opts: DataOptions, data_dir: Path) -> Located:
        pickle_dir = data_dir / PICKLE_DIR
        if pickle_dir.is_dir():
            missing = [n for n in PICKLE_MD5 if not (pickle_dir / n).is_file()]
            if missing:
                raise MissingDataError(f"cifar10: {pickle_dir} lacks {', '.join(missing)}; {GET_HINT}")
            for n, md5 in PICKLE_MD5.items():
                check_md5(pickle_dir / n, md5, f"delete it and {GET_HINT}")
            return Located(pickle_dir, {"format": "pickle", "md5": PICKLE_MD5}, files={"dir": pickle_dir})
        for rel in NPZ_NAMES:
            npz = data_dir / rel
            if npz.is_file():
                # The npz's own hash keys the cache (0.1 s for 140 MB): a replaced file misses it.
                return Located(npz, {"format": "npz", "sha256": file_digest(npz, "sha256")}, files={"npz": npz})
        if opts.download:
            try:
                # torchvision is heavy: loaded when this runs, so importing this module stays light
                import torchvision

                torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
            except Exception as e:  # noqa: BLE001 - any download failure is reported as one line
                raise download_failed(self.name, data_dir, e) from None
            return self.locate(opts.replace(download=False), data_dir)
        where = "does not exist" if not data_dir.exists() else "has neither"
        raise MissingDataError(f"cifar10: no CIFAR-10 files: {data_dir} {where} {PICKLE_DIR}/ "
                               f"({', '.join(PICKLE_MD5)}) nor {' or '.join(NPZ_NAMES)}; {GET_HINT}")

    def decode(self, found: Located, opts: DataOptions) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if "npz" in found.files:
            return _decode_npz(found.files["npz"]), {"classes": list(CLASSES)}
        return _decode_pickles(found.files["dir"])


def _load_pickle(path: Path) -> dict:
    with reading(path, f"delete it and {GET_HINT}"), open(path, "rb") as fh:
        d = pickle.load(fh, encoding="latin1")
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (holds a {type(d).__name__}, not a dict)")
    return d


def _decode_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path}: not a CIFAR-10 batch (keys {sorted(d)}; expected 'data' and 'labels')")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"])
    expect_array(path, "data", x, (None, 3 * 32 * 32), "uint8")
    expect_array(path, "labels", y, (x.shape[0],), INT_DTYPES)
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _decode_pickles(pickle_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    train = [_decode_batch(pickle_dir / b) for b in TRAIN_BATCHES]
    test_x, test_y = _decode_batch(pickle_dir / "test_batch")
    meta = _load_pickle(pickle_dir / "batches.meta")
    classes = [str(c) for c in meta.get("label_names", CLASSES)]
    arrays = {
        "train_x": np.concatenate([x for x, _ in train]),
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": test_x,
        "test_y": test_y,
    }
    return arrays, {"classes": classes}


def _decode_npz(npz: Path) -> dict[str, np.ndarray]:
    hint = f"replace it with a good copy or {GET_HINT}"
    with reading(npz, hint), np.load(npz, allow_pickle=False) as z:
        missing = [k for k in NPZ_SHA256 if k not in z.files]
        if missing:
            raise DataError(f"{npz}: lacks the arrays {', '.join(missing)} (has {', '.join(z.files)})")
        arrays = {k: z[k] for k in NPZ_SHA256}
    for k in ("x_train", "x_test"):
        expect_array(npz, k, arrays[k], (None, 32, 32, 3), "uint8")
    for k in ("y_train", "y_test"):
        expect_array(npz, k, arrays[k], (arrays["x" + k[1:]].shape[0],), INT_DTYPES)
    for k, want in NPZ_SHA256.items():
        got = array_sha256(arrays[k])
        if got != want:
            raise DataError(f"{npz}: array '{k}' has sha256 {got[:12]}..., not the official {want[:12]}... "
                            f"(corrupt or a different dataset); {hint}")
    # HWC -> CHW once here, so every later load reads the layout the loaders use.
    return {
        "train_x": np.ascontiguousarray(arrays["x_train"].transpose(0, 3, 1, 2)),
        "train_y": arrays["y_train"].astype(np.int64),
        "test_x": np.ascontiguousarray(arrays["x_test"].transpose(0, 3, 1, 2)),
        "test_y": arrays["y_test"].astype(np.int64),
    }


DATASETS.register("cifar10", Cifar10Reader())
