"""Synthetic data: deterministic random images of any size and class count, for tests and benches.

Each class has a fixed random low-frequency template (4x4 cells, upsampled); an image is half its
class template plus half uniform noise, so a model can learn it but no one mistakes it for real
data. The content depends only on (size, classes, image size) and never on the split seed, so
every process generates the same images. It is never cached: generating it is cheaper than
reading it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from loaders.reader import DatasetReader, Located
from loaders.registries import DATASETS
from loaders.types import DataOptions

DEFAULT_TRAIN = 50_000
DEFAULT_SIZE = 32
_SEED = 0x5EED  # fixed: the images are part of the dataset's definition, not of a run


def make_split(n: int, num_classes: int, size: int, channels: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` balanced, shuffled images (uint8 (n, C, size, size)) and labels; deterministic per ``stream``."""
    g = torch.Generator().manual_seed(_SEED)
    cell = max(1, size // 4)
    coarse = torch.randint(0, 256, (num_classes, channels, 4, 4), dtype=torch.uint8, generator=g)
    templates = coarse.repeat_interleave(cell, 2).repeat_interleave(cell, 3)
    templates = torch.nn.functional.pad(templates, (0, size - templates.shape[3], 0, size - templates.shape[2]),
                                        mode="constant", value=128)
    g.manual_seed(_SEED + stream)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    noise = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    # uint8 halves sum to at most 254: no overflow, no int16 temporaries.
    images = templates[labels].div_(2, rounding_mode="floor").add_(noise.div_(2, rounding_mode="floor"))
    return images.numpy(), labels.numpy().astype(np.int64)


class SyntheticReader(DatasetReader):
    """Generates CIFAR-shaped (by default) random images; see the module docstring."""

    name = "synthetic"
    cacheable = False

    def locate(self, opts: DataOptions, data_dir: Path) -> Located:
        n = opts.synthetic_size or DEFAULT_TRAIN
        if opts.num_classes < 2 or n < opts.num_classes:
            raise HarnessError(f"synthetic: need num_classes >= 2 and synthetic_size >= num_classes "
                               f"(got {opts.num_classes} classes, {n} images)")
        size = opts.img_size or DEFAULT_SIZE
        return Located(Path("synthetic"), {"n": n, "classes": opts.num_classes, "size": size})

    def decode(self, found: Located, opts: DataOptions) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        n, k, size = found.key["n"], found.key["classes"], found.key["size"]
        train_x, train_y = make_split(n, k, size, 3, stream=1)
        test_x, test_y = make_split(max(n // 5, k), k, size, 3, stream=2)
        arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
        return arrays, {"classes": [f"class{i}" for i in range(k)],
                        "note": f"synthetic {n} train images, {k} classes"}


DATASETS.register("synthetic", SyntheticReader())
