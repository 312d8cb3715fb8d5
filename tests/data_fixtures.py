"""Tiny datasets written in the real on-disk formats, for the data tests.

Each ``make_*`` writes files the way the official sources lay them out (CIFAR-10's pickled batches,
an npz with LZMA-compressed members like the shared copy, MNIST's gzipped IDX files, an ImageFolder
of JPEGs of assorted sizes) and returns the checksum table the reader must be given for them,
the way the official tables describe the real files. Pixel values encode the sample index
(``image[i, 0, 0, 0] == i % 251``) so order and identity can be checked.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
WNIDS = ["n01440764", "n02102040", "n02979186"]


def md5(path: Path) -> str:
    """md5 of a file."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def images_hwc(n: int, size: int, channels: int, start: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (n, size, size, channels) images with balanced labels (0..9 repeating) and index-coded pixels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    x[:, 0, 0, 0] = (np.arange(start, start + n) % 251).astype(np.uint8)
    y = (np.arange(start, start + n) % 10).astype(np.int64)
    return x, y


def make_cifar_pickles(root: Path, per_batch: int = 30, n_test: int = 40) -> dict[str, str]:
    """Write ``root/cifar-10-batches-py`` (5 train batches, test batch, batches.meta); return its md5 table.

    Batches are dicts with ``batch_label``, ``labels`` (list of int), ``data`` (uint8 (N, 3072),
    CHW rows) and ``filenames``, pickled with protocol 2 like the official files.
    """
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        start = 0 if name == "test_batch" else (k * per_batch)
        x, y = images_hwc(n, 32, 3, start, seed=k)
        batch = {
            "batch_label": f"{name} of 6",
            "labels": [int(v) for v in y],
            "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(n, 3072),
            "filenames": [f"img_{start + i}.png" for i in range(n)],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR_CLASSES, "num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {n: md5(d / n) for n in [*names, "batches.meta"]}


def cifar_arrays(n_train: int = 200, n_test: int = 50) -> dict[str, np.ndarray]:
    """The four arrays of a CIFAR-style npz: x_* uint8 (N, 32, 32, 3), y_* uint8 (N,)."""
    x_train, y_train = images_hwc(n_train, 32, 3, 0, seed=1)
    x_test, y_test = images_hwc(n_test, 32, 3, 0, seed=2)
    return {"x_train": x_train, "y_train": y_train.astype(np.uint8), "x_test": x_test,
            "y_test": y_test.astype(np.uint8)}


def write_npz_lzma(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` whose ``.npy`` members are LZMA-compressed, as in the shared cifar10.npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as zf:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, a, allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())


def make_cifar_npz(root: Path, n_train: int = 200, n_test: int = 50) -> dict[str, str]:
    """Write ``root/cifar10/cifar10.npz``; return the SHA-256 table of its arrays (raw C-order bytes)."""
    arrays = cifar_arrays(n_train, n_test)
    write_npz_lzma(Path(root) / "cifar10" / "cifar10.npz", arrays)
    return {k: hashlib.sha256(np.ascontiguousarray(a).data).hexdigest() for k, a in arrays.items()}


def _idx_bytes(a: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + b"".join(struct.pack(">I", s) for s in a.shape)
    return header + np.ascontiguousarray(a, dtype=np.uint8).tobytes()


def make_mnist(root: Path, n_train: int = 200, n_test: int = 50) -> dict[str, str]:
    """Write ``root/MNIST/raw/*-ubyte.gz`` (gzipped IDX); return their md5 table."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 3), ("t10k", n_test, 4)):
        x, y = images_hwc(n, 28, 1, 0, seed)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x[..., 0])))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y.astype(np.uint8))))
    return {p.name: md5(p) for p in sorted(raw.glob("*.gz"))}


def make_imagefolder(root: Path, name: str = "imagenette2-64", n_train: int = 6, n_val: int = 3) -> Path:
    """Write an Imagenette-style ImageFolder of JPEGs of assorted sizes (3 classes); return its folder."""
    folder = Path(root) / name
    rng = np.random.default_rng(5)
    sizes = [(64, 64), (85, 64), (64, 96), (120, 90), (48, 40)]
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(WNIDS):
            d = folder / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[(i + c) % len(sizes)]
                colour = np.array([40 + 80 * c, 200 - 60 * c, 30 + 50 * i % 200], dtype=np.int16)
                img = np.clip(colour + rng.integers(-20, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"ILSVRC_{split}_{c}_{i:04d}.JPEG", quality=90)
    # One grayscale JPEG, as the original Imagenette has: it must come out as RGB.
    Image.fromarray(rng.integers(0, 256, size=(70, 70), dtype=np.uint8)).save(
        folder / "train" / WNIDS[0] / "ILSVRC_gray.JPEG")
    return folder
