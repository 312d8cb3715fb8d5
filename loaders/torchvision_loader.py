"""The ``torchvision`` backend: ``DataLoader`` + per-sample ``transforms.v2``, the fallback everyone knows.

A ``Dataset`` over the split's uint8 tensor returns one ``tv_tensors.Image`` at a time through the
preset's uint8 v2 ops (:func:`loaders.augment.torchvision_uint8_transform`: crop, flip, rotation,
affine, colour jitter); ``DataLoader`` workers run them in parallel and collate **uint8** batches.
The conversion to float, the normalisation and the cutout run batched on the target device
(:func:`loaders.augment.to_unit`, ``normalize_``, ``erase_``), so a CUDA run copies a quarter of
fp32's bytes to the GPU (from pinned memory, ``non_blocking``) and the workers do no float work at
all. The sampler is :class:`loaders.sampler.ShardSampler`, which yields the tensor backend's
permutation and does DistributedSampler's job under DDP without padding.

Defaults: ``num_workers`` = the CPUs this process may use (its affinity mask, capped by its Ray
CPU share), minus one for the process itself, which runs the model; at least 0
(:func:`loaders.base.usable_cpus`, :func:`loaders.base.default_workers`). ``pin_memory`` only when
the target is a CUDA device; persistent workers (no re-fork per epoch).
Augmentation randomness of the per-sample ops comes from torch's per-worker seeds, derived from a
generator seeded with ``seed`` (with ``num_workers=0``, from the global torch RNG); the cutout
rectangles are drawn per epoch from the loader's numpy generator, as in the tensor backend, and
uploaded once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from harness.errors import HarnessError
from loaders.augment import (
    AugmentSpec,
    erase_,
    erase_only,
    normalize_,
    sample_params,
    to_unit,
    torchvision_uint8_transform,
)
from loaders.base import LoaderBase, default_workers, usable_cpus
from loaders.registries import BACKENDS
from loaders.sampler import ShardSampler
from loaders.types import DatasetMeta, SplitData


class TransformedImages(Dataset):
    """``(transform(Image(images[i])), labels[i])`` over uint8 (N, C, H, W) tensors; uint8 out.

    ``transform=None`` returns the stored image as it is (the ``none`` preset and evaluation).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: torch.nn.Module | None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            return self.images[i], self.labels[i]
        # torchvision is heavy: loaded when this runs, so importing this module stays light
        from torchvision import tv_tensors

        x = self.transform(tv_tensors.Image(self.images[i]))
        return x.as_subclass(torch.Tensor), self.labels[i]


class TorchvisionLoader(LoaderBase):
    """``DataLoader`` over :class:`TransformedImages`; see the module docstring."""

    backend = "torchvision"
    reflect_pad = True  # RandomCrop's padding_mode; workers see one image, not its index: no alternating flip

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str | AugmentSpec = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None) -> None:
        super().__init__(split, meta, train=train, batch_size=batch_size, augment=augment, device=device,
                         rank=rank, world_size=world_size, seed=seed, drop_last=drop_last,
                         channels_last=channels_last)
        workers = default_workers(usable_cpus()) if num_workers is None else num_workers
        if workers < 0:
            raise HarnessError(f"num_workers must be >= 0, got {workers}")
        self.num_workers = workers
        per_sample = self.spec.crop_pad or self.spec.flip or self.spec.float_stage
        transform = torchvision_uint8_transform(self.spec, tuple(split.images.shape[2:])) if per_sample else None
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
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        p_dev = None
        if self.spec.erase_p:  # the epoch's cutout rectangles: one draw, one upload
            _, _, h, w = self.split.images.shape
            rest = erase_only(self.spec)
            p_dev = sample_params(rest, self.num_samples, h, w, self.aug_generator()).to(self.device, rest)
        bs = self.batch_size
        for k, (x, y) in enumerate(self.loader):
            # uint8 from the (pinned) collate buffer; float conversion and normalisation on the device,
            # with the tensor backend's ops (so `none` gives its very batches).
            x = normalize_(to_unit(x.to(self.device, non_blocking=cuda), fmt), self.mean, self.std)
            if p_dev is not None:
                x = erase_(x, p_dev.slice(slice(k * bs, k * bs + x.shape[0])))
            yield self._finish(x), y.to(self.device, non_blocking=cuda)


BACKENDS.register("torchvision", TorchvisionLoader)
