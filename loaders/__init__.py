"""Data: dataset readers with integrity checks, split carving, and three loader backends.

The contract (docs/DESIGN.md, "Data"):

    splits = load_splits(DataOptions("cifar10", data_dir="../shared/data"))
    loader = build_loader(splits.train, splits.meta, train=True, batch_size=512, augment="base")
    for images, labels in loader: ...   # float32 NCHW normalised, int64, on the device

Importing the package registers every dataset (``DATASETS``), backend (``BACKENDS``) and
augmentation preset (``AUGMENTATIONS``). Numba kernels and ffcv are imported only when used.
"""

from __future__ import annotations

# Registration order is import order; each module registers what it defines.
from loaders import augment as _augment  # noqa: F401
from loaders import cifar10 as _cifar10  # noqa: F401
from loaders import ffcv_loader as _ffcv_loader  # noqa: F401
from loaders import imagenette as _imagenette  # noqa: F401
from loaders import mnist as _mnist  # noqa: F401
from loaders import synthetic as _synthetic  # noqa: F401
from loaders import tensor_loader as _tensor_loader  # noqa: F401
from loaders import torchvision_loader as _torchvision_loader  # noqa: F401
from loaders.augment import AugmentSpec
from loaders.base import LoaderBase as Loader
from loaders.build import build_loader, choose_backend
from loaders.reader import MissingDataError, resolve_data_dir
from loaders.registries import AUGMENTATIONS, BACKENDS, DATASETS
from loaders.splits import load_splits
from loaders.types import DataOptions, DatasetMeta, SplitData, Splits

__all__ = [
    "AUGMENTATIONS", "BACKENDS", "DATASETS", "AugmentSpec", "DataOptions", "DatasetMeta", "Loader",
    "MissingDataError", "SplitData", "Splits", "build_loader", "choose_backend", "load_splits",
    "resolve_data_dir",
]
