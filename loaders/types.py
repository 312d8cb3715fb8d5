"""The data types of the Data contract (docs/DESIGN.md): options in, splits and metadata out.

``DataOptions`` says which dataset to load and how to shape it; ``load_splits`` turns it into
``Splits``: three ``SplitData`` (uint8 NCHW images, int64 labels) plus one ``DatasetMeta``.
``RawData`` is what a dataset reader hands to ``load_splits`` before any option is applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DataOptions:
    """Which dataset to load and how to shape it.

    Attributes:
        dataset: a name in ``DATASETS`` (cifar10, mnist, imagenette, synthetic).
        data_dir: data root; ``None`` means ``$HARNESS_DATA_DIR`` or ``./data``.
        grayscale: convert to one channel (ITU-R 601 luma, as torchvision's ``rgb_to_grayscale``).
        img_size: square output size. Imagenette is decoded at this size (default 64); other
            datasets are resized (bilinear, antialiased) when it differs from their native size.
        val_fraction: fraction of the training split held out for validation (stratified,
            seeded); 0 gives an empty validation split. Ignored when ``folds`` is set.
        subset: keep only the first N images of each class, in every split (quick runs).
        seed: seeds the validation carve-out / fold assignment.
        download: fetch missing files with torchvision's downloaders (needs internet).
        folds: K >= 2 for stratified K-fold on the training split instead of ``val_fraction``.
        fold: which fold (0 <= fold < folds) is the validation split.
        num_classes: class count of ``synthetic``; real datasets have their own (``len(meta.classes)``).
        synthetic_size: training images of ``synthetic`` (default 50000, CIFAR-like); the test
            split has a fifth as many.
    """

    dataset: str
    data_dir: str | None = None
    grayscale: bool = False
    img_size: int | None = None
    val_fraction: float = 0.1
    subset: int | None = None
    seed: int = 0
    download: bool = False
    folds: int = 0
    fold: int = 0
    num_classes: int = 10
    synthetic_size: int | None = None

    def replace(self, **changes: object) -> DataOptions:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@dataclass
class SplitData:
    """One split: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,), both on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 chars) of the images and labels: names derived files such as betons."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(repr((tuple(self.images.shape), str(self.images.dtype))).encode())
            h.update(self.images.contiguous().numpy().data)
            h.update(self.labels.to(torch.int64).contiguous().numpy().data)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


@dataclass(frozen=True)
class DatasetMeta:
    """What a model and a loader need to know about a loaded dataset.

    Attributes:
        name: the dataset's registry name.
        classes: class names, index = label.
        mean, std: per-channel statistics of the training split (after the validation carve-out,
            grayscale and resize), in [0, 1] pixel units; loaders normalise with
            ``(x / 255 - mean) / std``. One value per channel.
        shape: (C, H, W) of every image.
        source: where the files were found (a path), or ``synthetic``.
        note: anything a results row should carry (synthetic data, subset, folds).
        cache_dir: where derived files (decoded caches, FFCV betons) of this dataset live;
            an addition to the DESIGN.md contract, used as the default ``beton_dir``.
    """

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, int, int]
    source: str
    note: str = ""
    cache_dir: str = ""


@dataclass
class Splits:
    """The three splits of a dataset and its metadata."""

    train: SplitData
    val: SplitData
    test: SplitData
    meta: DatasetMeta


@dataclass
class RawData:
    """A dataset as its reader returns it: the official train and test splits, nothing applied.

    ``train_x``/``test_x`` are uint8 (N, C, H, W); ``train_y``/``test_y`` int64 (N,).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str
    note: str = ""
    cache_dir: str = ""
