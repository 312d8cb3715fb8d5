"""The ``torchvision`` backend: ``DataLoader`` + per-sample ``transforms.v2``, the fallback everyone knows.

A ``Dataset`` over the split's uint8 tensor returns one ``tv_tensors.Image`` at a time through the
preset's v2 pipeline (:func:`loaders.augment.torchvision_transform`); ``DataLoader`` workers run
it in parallel and collate. The sampler is :class:`loaders.sampler.ShardSampler`, which yields the
tensor backend's permutation and does DistributedSampler's job under DDP without padding.

Defaults: ``num_workers`` = half the CPU cores per rank (at least 1; the rest run the model),
``pin_memory`` only when the target is a CUDA device, persistent workers (no re-fork per epoch).
Augmentation randomness in workers comes from torch's per-worker seeds, derived from a
generator seeded with ``seed``; with ``num_workers=0`` it comes from the global torch RNG.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from harness.errors import HarnessError
from loaders.augment import torchvision_transform
from loaders.base import LoaderBase
from loaders.registries import BACKENDS
from loaders.sampler import ShardSampler
from loaders.types import DatasetMeta, SplitData


class TransformedImages(Dataset):
    """``(transform(Image(images[i])), labels[i])`` over uint8 (N, C, H, W) tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: torch.nn.Module) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        x = self.transform(tv_tensors.Image(self.images[i]))
        return x.as_subclass(torch.Tensor), self.labels[i]


def default_workers(world_size: int) -> int:
    """Half the CPU cores per rank, at least 1."""
    return max(1, (os.cpu_count() or 2) // (2 * world_size))


class TorchvisionLoader(LoaderBase):
    """``DataLoader`` over :class:`TransformedImages`; see the module docstring."""

    backend = "torchvision"

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None) -> None:
        super().__init__(split, meta, train=train, batch_size=batch_size, augment=augment, device=device,
                         rank=rank, world_size=world_size, seed=seed, drop_last=drop_last,
                         channels_last=channels_last)
        workers = default_workers(world_size) if num_workers is None else num_workers
        if workers < 0:
            raise HarnessError(f"num_workers must be >= 0, got {workers}")
        self.num_workers = workers
        transform = torchvision_transform(self.spec, tuple(split.images.shape[2:]), meta.mean, meta.std)
        self.sampler = ShardSampler(self.n, seed=self.seed, shuffle=train, rank=rank, world_size=world_size,
                                    even=self.even)
        self.loader = DataLoader(
            TransformedImages(split.images, split.labels.to(torch.int64), transform),
            batch_size=batch_size, sampler=self.sampler, drop_last=self.drop_last, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: its permutation (the sampler's) and, through the sampler, the order."""
        super().set_epoch(epoch)
        self.sampler.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cuda = self.device.type == "cuda"
        for x, y in self.loader:
            yield self._finish(x.to(self.device, non_blocking=cuda)), y.to(self.device, non_blocking=cuda)


BACKENDS.register("torchvision", TorchvisionLoader)
