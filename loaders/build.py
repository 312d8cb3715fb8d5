"""``build_loader``: one entry point for every backend, and the ``auto`` choice between them.

``auto`` picks ``ffcv`` when ffcv imports, the device is CUDA and the split's beton exists
(FFCV's win is JPEG decoding and host-to-GPU overlap; on a CPU the tensor backend is faster);
otherwise ``tensor``. It prints its choice and the reason once per process on stderr, e.g.
``loader: tensor (ffcv not installed)``: a fallback is never silent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from loaders.base import LoaderBase, resolve_device
from loaders.cache import notice
from loaders.registries import AUGMENTATIONS, BACKENDS
from loaders.types import DatasetMeta, SplitData

_announced: set[str] = set()


def choose_backend(split: SplitData, meta: DatasetMeta, device: str | torch.device,
                   beton_dir: str | Path | None = None) -> tuple[str, str]:
    """The backend ``auto`` resolves to, and why."""
    from loaders.ffcv_loader import beton_path, ffcv_import_error

    if importlib.util.find_spec("ffcv") is None:
        return "tensor", "ffcv not installed"
    if resolve_device(device).type != "cuda":
        return "tensor", "no CUDA device; ffcv only pays off feeding a GPU"
    why = ffcv_import_error()
    if why:
        return "tensor", f"ffcv does not import: {why}"
    path = beton_path(split, meta, beton_dir)
    if not path.exists():
        return "tensor", f"no beton {path}; write it with 'harness data prepare --ffcv'"
    return "ffcv", f"betons in {path.parent}"


def _announce(msg: str) -> None:
    if msg not in _announced:
        _announced.add(msg)
        notice(msg)


def build_loader(split: SplitData, meta: DatasetMeta, *, backend: str = "auto", train: bool, batch_size: int,
                 augment: str = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None) -> LoaderBase:
    """Build a loader over ``split`` (see the ``Loader`` contract in docs/DESIGN.md).

    Args:
        split: the split to iterate.
        meta: its dataset's metadata (mean/std normalise the images).
        backend: a name in ``BACKENDS`` (``auto``, ``tensor``, ``torchvision``, ``ffcv``).
        train: shuffle each epoch and apply ``augment``; evaluation loaders do neither.
        batch_size: samples per batch on this rank.
        augment: a name in ``AUGMENTATIONS``.
        device: where batches are delivered (and, for ``tensor``, where the split lives).
        rank, world_size: this process's DDP shard.
        seed: seeds the permutations and augmentation draws.
        drop_last: drop the last incomplete batch (and, under DDP, the < world_size tail, so all
            ranks take the same number of steps); default True for training under DDP, else False.
        channels_last: deliver images in channels_last memory format.
        num_workers: worker processes (``torchvision``) or threads (``ffcv``); default by backend.
        beton_dir: where ``ffcv`` betons live; default ``<cache>/ffcv``.

    Returns:
        The loader; ``loader.backend`` names the backend actually used.

    Raises:
        HarnessError: unknown backend or preset, impossible options, or ffcv not importable
            when asked for explicitly.
    """
    AUGMENTATIONS.get(augment)  # fail on a typo before any work
    BACKENDS.get(backend)
    if backend == "auto":
        backend, reason = choose_backend(split, meta, device, beton_dir)
        _announce(f"loader: {backend} ({reason})")
    cls = BACKENDS.get(backend)
    return cls(split, meta, train=train, batch_size=batch_size, augment=augment, device=device, rank=rank,
               world_size=world_size, seed=seed, drop_last=drop_last, channels_last=channels_last,
               num_workers=num_workers, beton_dir=beton_dir)


def auto_loader(split: SplitData, meta: DatasetMeta, **kwargs: object) -> LoaderBase:
    """The ``auto`` registry entry: resolve the backend (see :func:`choose_backend`) and build it."""
    return build_loader(split, meta, backend="auto", **kwargs)  # type: ignore[arg-type]


BACKENDS.register("auto", auto_loader)
