"""``LoaderBase``: what every loader backend shares (options, shard, epoch, length, normalisation).

The ``Loader`` contract of docs/DESIGN.md: iterating yields ``(images, labels)`` on the target
device, images float32 NCHW normalised with ``meta.mean``/``meta.std``, labels int64; ``len()``
is batches per epoch on this rank, ``num_samples`` samples per epoch on this rank,
``set_epoch(e)`` selects the permutation and augmentation draws, ``backend`` is the registry name.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

from harness.errors import HarnessError
from loaders.augment import NONE, AugmentSpec, refuse_unsupported
from loaders.registries import AUGMENTATIONS
from loaders.sampler import epoch_indices, shard_size
from loaders.types import DatasetMeta, SplitData


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; a CUDA device without CUDA is an error, not a silent CPU."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"device {device} requested but CUDA is not available")
    return dev


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by its Ray CPU share when in a Ray worker.

    The affinity mask is what ``taskset``, cgroup cpusets and schedulers that pin processes set.
    Ray does not pin its workers by default; inside a Ray task or actor its assigned ``CPU``
    resources are the share it was scheduled with, so they cap the count as well.
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ray = sys.modules.get("ray")  # only if this process already uses Ray: never import it here
    if ray is not None:
        try:
            share = ray.get_runtime_context().get_assigned_resources().get("CPU") if ray.is_initialized() else None
        except Exception:  # noqa: BLE001 - the driver, or a Ray without this API: no share to apply
            share = None
        if share:
            n = min(n, max(1, int(share)))
    return n


def default_workers(cpus: int) -> int:
    """DataLoader workers for a process that may use ``cpus`` CPUs: one CPU stays with the process
    (it runs the model and the batched device work), the rest load; 0 (load in-process) on one CPU."""
    return max(0, int(cpus) - 1)


class LoaderBase:
    """What every backend shares: options, the shard, the epoch, ``len`` and ``num_samples``.

    Subclasses implement ``__iter__`` yielding ``(images, labels)`` on ``self.device``: images
    float32 (N, C, H, W) normalised with ``meta.mean``/``meta.std`` (channels_last if asked),
    labels int64.
    """

    backend = ""
    #: which of the speed-track augmentation options the backend has (:meth:`check_spec` reads them)
    reflect_pad = False
    alternating_flip = False

    @classmethod
    def check_spec(cls, spec: AugmentSpec) -> None:
        """One-line error where this backend cannot do what ``spec`` asks (also called before any data loads).

        Raises:
            HarnessError: reflect padding or alternating flip on a backend without it.
        """
        refuse_unsupported(spec, cls.backend, reflect=cls.reflect_pad, alternating=cls.alternating_flip)

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str | AugmentSpec = "none",
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, seed: int = 0,
                 drop_last: bool | None = None, channels_last: bool = False) -> None:
        if batch_size < 1:
            raise HarnessError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise HarnessError(f"rank {rank} is not in [0, world_size={world_size})")
        # A spec (a preset with the config's flip/translate options applied) or a preset's name.
        spec: AugmentSpec = augment if isinstance(augment, AugmentSpec) else AUGMENTATIONS.get(augment)
        self.split, self.meta = split, meta
        self.train = train
        # Evaluation never augments: the preset describes training only.
        self.spec = spec if train else NONE
        self.check_spec(self.spec)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        # numpy's SeedSequence takes non-negative integers only.
        self.rank, self.world_size, self.seed = rank, world_size, int(seed) % (1 << 63)
        self.drop_last = (train and world_size > 1) if drop_last is None else bool(drop_last)
        self.even = self.drop_last and world_size > 1
        self.channels_last = channels_last
        self.epoch = 0
        self.n = len(split)
        self._shard = shard_size(self.n, rank, world_size, self.even)
        c = len(meta.mean)
        if c != split.images.shape[1]:
            raise HarnessError(f"meta has {c} channel statistics but the images have {split.images.shape[1]} channels")
        self.mean = torch.tensor(meta.mean, dtype=torch.float32).view(1, c, 1, 1).to(self.device)
        self.std = torch.tensor(meta.std, dtype=torch.float32).view(1, c, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: its permutation and its augmentation draws."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, in visiting order."""
        return epoch_indices(self.n, epoch=self.epoch, seed=self.seed, shuffle=self.train, rank=self.rank,
                             world_size=self.world_size, even=self.even)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._shard // self.batch_size if self.drop_last else math.ceil(self._shard / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (after dropping the incomplete last batch, if any)."""
        return len(self) * self.batch_size if self.drop_last else self._shard

    def aug_generator(self) -> np.random.Generator:
        """The host generator of this epoch's augmentation draws (differs per rank and epoch)."""
        return np.random.default_rng([self.seed, self.epoch, self.rank, 0xA06])

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.meta.name}, n={self.n}, batch_size={self.batch_size}, "
                f"augment={self.spec.name}, device={self.device}, rank={self.rank}/{self.world_size})")
