"""``build_loader``: one entry point for every backend, and the ``auto`` choice between them.

``auto`` (:func:`auto_backend`, a pure function of what it is told; :func:`choose_backend` gathers
the facts) picks ``tensor`` whenever the split can live on the device: always on a CPU, and on
CUDA when the uint8 split takes at most :data:`DEVICE_MEMORY_FRACTION` of the free device memory.
The betons hold raw uint8, so FFCV has no decoding to take off the GPU's critical path, and a
device-resident split needs no host-to-device traffic at all: nothing FFCV does can beat that.
Only a split too large for the device goes elsewhere: ``ffcv`` when it imports and the beton
exists (its pinned, overlapped uploads), else ``torchvision`` (the tensor backend would run out of
device memory). It prints its choice and the reason once per process on stderr, e.g.
``loader: tensor (no CUDA device; ...)``: a fallback is never silent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from harness.errors import HarnessError
from loaders.augment import AugmentSpec
from loaders.base import LoaderBase, resolve_device
from loaders.cache import notice
from loaders.ffcv_loader import beton_path, ffcv_import_error
from loaders.registries import AUGMENTATIONS, BACKENDS
from loaders.types import DatasetMeta, SplitData

_announced: set[str] = set()


#: The share of the free device memory a device-resident split may take; the rest is for the
#: model, its activations and optimiser state, the augmentation temporaries and the allocator's slack.
DEVICE_MEMORY_FRACTION = 0.5


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def auto_backend(device_type: str, split_bytes: int, free_bytes: int | None, ffcv_available: bool,
                 betons_present: bool) -> tuple[str, str]:
    """The backend ``auto`` resolves to, and why: a pure function (see the module docstring).

    Args:
        device_type: ``torch.device.type`` of the target (``cpu``, ``cuda``, ...).
        split_bytes: bytes of the split's uint8 images.
        free_bytes: free device memory (``torch.cuda.mem_get_info()[0]``); None off CUDA.
        ffcv_available: ffcv imports.
        betons_present: the split's beton exists.
    """
    if device_type != "cuda":
        return "tensor", "no CUDA device; the split stays in host memory and ffcv only pays off feeding a GPU"
    if free_bytes is not None and split_bytes <= DEVICE_MEMORY_FRACTION * free_bytes:
        return "tensor", (f"the uint8 split ({_gib(split_bytes)}) fits in device memory ({_gib(free_bytes)} free); "
                          "betons hold raw uint8, so ffcv has nothing to decode")
    where = (f"the uint8 split ({_gib(split_bytes)}) exceeds {DEVICE_MEMORY_FRACTION:.0%} of free device memory"
             f" ({_gib(free_bytes or 0)})")
    if ffcv_available and betons_present:
        return "ffcv", f"{where}; streaming it from betons"
    missing = "ffcv does not import" if not ffcv_available else "no beton (write it with 'harness data prepare --ffcv')"
    return "torchvision", f"{where} and {missing}; streaming it with DataLoader workers"


def choose_backend(split: SplitData, meta: DatasetMeta, device: str | torch.device,
                   beton_dir: str | Path | None = None) -> tuple[str, str]:
    """The backend ``auto`` resolves to, and why: the facts for :func:`auto_backend`.

    Free memory is read only on CUDA, and ffcv is imported and the beton looked for only when the
    split does not fit (importing ffcv takes seconds).
    """
    dev = resolve_device(device)
    split_bytes = split.images.numel() * split.images.element_size()
    free = None
    ffcv_ok = betons = False
    if dev.type == "cuda":
        free = int(torch.cuda.mem_get_info(dev)[0])
        if split_bytes > DEVICE_MEMORY_FRACTION * free and importlib.util.find_spec("ffcv") is not None:
            ffcv_ok = ffcv_import_error() is None
            betons = beton_path(split, meta, beton_dir).exists()
    return auto_backend(dev.type, split_bytes, free, ffcv_ok, betons)


def _announce(msg: str) -> None:
    if msg not in _announced:
        _announced.add(msg)
        notice(msg)


def build_loader(split: SplitData, meta: DatasetMeta, *, backend: str = "auto", train: bool, batch_size: int,
                 augment: str | AugmentSpec = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None,
                 layout: str = "uint8") -> LoaderBase:
    """Build a loader over ``split`` (see the ``Loader`` contract in docs/DESIGN.md).

    Args:
        split: the split to iterate.
        meta: its dataset's metadata (mean/std normalise the images).
        backend: a name in ``BACKENDS`` (``auto``, ``tensor``, ``torchvision``, ``ffcv``).
        train: shuffle each epoch and apply ``augment``; evaluation loaders do neither.
        batch_size: samples per batch on this rank.
        augment: a name in ``AUGMENTATIONS``, or an :class:`~loaders.augment.AugmentSpec` (a preset with
            options applied, :func:`loaders.augment.with_options`).
        device: where batches are delivered (and, for ``tensor``, where the split lives).
        rank, world_size: this process's DDP shard.
        seed: seeds the permutations and augmentation draws.
        drop_last: drop the last incomplete batch (and, under DDP, the < world_size tail, so all
            ranks take the same number of steps); default True for training under DDP, else False.
        channels_last: deliver images in channels_last memory format.
        num_workers: worker processes (``torchvision``) or threads (``ffcv``); default by backend.
        beton_dir: where ``ffcv`` betons live; default ``<cache>/ffcv``.
        layout: ``tensor`` backend only: ``uint8`` (default) or ``airbench`` (the split normalised
            once on the device in bf16/fp16 channels_last; batches come in that dtype, not float32;
            see :mod:`loaders.tensor_loader`).

    Returns:
        The loader; ``loader.backend`` names the backend actually used.

    Raises:
        HarnessError: unknown backend or preset, impossible options, or ffcv not importable
            when asked for explicitly.
    """
    if not isinstance(augment, AugmentSpec):
        AUGMENTATIONS.get(augment)  # fail on a typo before any work
    BACKENDS.get(backend)
    if backend == "auto":
        backend, reason = choose_backend(split, meta, device, beton_dir)
        _announce(f"loader: {backend} ({reason})")
    cls = BACKENDS.get(backend)
    extra: dict[str, object] = {}
    if layout != "uint8":
        if backend != "tensor":
            raise HarnessError(f"layout {layout} is an option of the tensor backend, not of {backend}")
        extra["layout"] = layout
    return cls(split, meta, train=train, batch_size=batch_size, augment=augment, device=device, rank=rank,
               world_size=world_size, seed=seed, drop_last=drop_last, channels_last=channels_last,
               num_workers=num_workers, beton_dir=beton_dir, **extra)


def auto_loader(split: SplitData, meta: DatasetMeta, **kwargs: object) -> LoaderBase:
    """The ``auto`` registry entry: resolve the backend (see :func:`choose_backend`) and build it."""
    return build_loader(split, meta, backend="auto", **kwargs)  # type: ignore[arg-type]


BACKENDS.register("auto", auto_loader)
