"""Imagenette (fast.ai, a 10-class subset of ImageNet): ImageFolder layout, any resolution.

Layout: ``<data_dir>/imagenette*/train/<wnid>/*.JPEG`` and ``.../val/<wnid>/*.JPEG``; the ``val``
folder serves as the test split (a validation split is carved from ``train`` like every other
dataset's). When several copies exist (``imagenette2-64``, ``-160``, ``-320``, full size), the
smallest whose shorter side is at least the requested size is read.

Every image is decoded once, centre-cropped to a square and resized (bicubic, antialiased) to
``img_size`` (default 64, the size the reports use), and cached as uint8. The cache key hashes
each file's relative path, size and modification time, and the size. ``--download`` fetches
``imagenette2-160`` with torchvision's downloader.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.errors import DataError
from loaders.reader import DatasetReader, Located, MissingDataError, download_failed
from loaders.registries import DATASETS
from loaders.types import DataOptions

DEFAULT_SIZE = 64
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# Class names of the ten WordNet ids, as in torchvision.datasets.Imagenette.
WNID_NAMES: dict[str, str] = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
GET_HINT = ("get it with 'harness data prepare --dataset imagenette --download' (needs internet; fetches "
            "imagenette2-160) or copy an imagenette2*/ folder with train/ and val/ there")


def _folder_size(folder: Path) -> float:
    """The shorter side a copy's name promises (imagenette2-160 -> 160); full size is infinite."""
    m = re.search(r"-(\d+)(px)?$", folder.name)
    return float(m.group(1)) if m else float("inf")


def _list_images(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    wnids = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    items = []
    for label, wnid in enumerate(wnids):
        files = sorted(p for p in (split_dir / wnid).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        items += [(p, label) for p in files]
    return wnids, items


class ImagenetteReader(DatasetReader):
    """Reads an ImageFolder copy of Imagenette (see the module docstring)."""

    name = "imagenette"

    def locate(self, opts: DataOptions, data_dir: Path) -> Located:
        size = opts.img_size or DEFAULT_SIZE
        copies = [d for d in (sorted(data_dir.glob("imagenette*")) if data_dir.is_dir() else [])
                  if (d / "train").is_dir() and (d / "val").is_dir()]
        if not copies and opts.download:
            try:
                # torchvision is heavy: loaded when this runs, so importing this module stays light
                import torchvision

                torchvision.datasets.Imagenette(str(data_dir), split="train", size="160px", download=True)
            except Exception as e:  # noqa: BLE001 - any download failure is reported as one line
                raise download_failed(self.name, data_dir, e) from None
            return self.locate(opts.replace(download=False), data_dir)
        if not copies:
            raise MissingDataError(f"imagenette: no imagenette*/train and imagenette*/val folders under {data_dir}; "
                                   f"{GET_HINT}")
        big_enough = [d for d in copies if _folder_size(d) >= size]
        folder = min(big_enough, key=_folder_size) if big_enough else max(copies, key=_folder_size)
        try:
            wnids, train = _list_images(folder / "train")
            val_wnids, test = _list_images(folder / "val")
        except OSError as e:
            raise DataError(f"imagenette: cannot list {folder}: {e.strerror or e}") from None
        if wnids != val_wnids:
            raise DataError(f"imagenette: {folder}/train and {folder}/val hold different class folders")
        empty = [w for i, w in enumerate(wnids) if not any(lbl == i for _, lbl in train)]
        if not wnids or empty or not test:
            raise DataError(f"imagenette: {folder} has empty class folders ({', '.join(empty) or 'val'}); {GET_HINT}")
        # Stat-based fingerprint: hashing 13k JPEGs on every load would cost more than it saves.
        h = hashlib.sha256()
        for p, label in train + test:
            st = p.stat()
            h.update(f"{p.relative_to(folder)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        key = {"format": "imagefolder", "folder": folder.name, "files": h.hexdigest(), "size": size}
        return Located(folder, key, extra={"wnids": wnids, "train": train, "test": test, "size": size})

    def decode(self, found: Located, opts: DataOptions) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        size = found.extra["size"]
        arrays = {}
        for split in ("train", "test"):
            items = found.extra[split]
            arrays[f"{split}_x"] = decode_images([p for p, _ in items], size)
            arrays[f"{split}_y"] = np.array([lbl for _, lbl in items], dtype=np.int64)
        classes = [WNID_NAMES.get(w, w) for w in found.extra["wnids"]]
        # No copy is large enough: say so rather than hand out upsampled pixels silently.
        small = _folder_size(found.source) < size
        note = f"upsampled from {found.source.name} to {size}px" if small else ""
        return arrays, {"classes": classes, "note": note}


def load_square(path: Path, size: int) -> np.ndarray:
    """Decode one image to RGB, centre-crop the largest square, resize to ``size``; (3, size, size) uint8.

    Raises:
        DataError: the file cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when that still covers the target:
            # most of the decoding cost of large images for free.
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            im = im.resize((size, size), Image.Resampling.BICUBIC, box=box)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"replace the file or {GET_HINT}") from None


def decode_images(paths: list[Path], size: int) -> np.ndarray:
    """Decode ``paths`` with :func:`load_square` on a thread pool (PIL releases the GIL); (N, 3, size, size)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = load_square(paths[i], size)

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(one, range(len(paths))))
    return out


DATASETS.register("imagenette", ImagenetteReader())
