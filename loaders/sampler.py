"""The epoch order and the DDP shard of every backend.

One function, :func:`epoch_indices`, decides which samples a rank sees in which order, and every
backend takes its order from it; that is why ``tensor`` and ``torchvision`` give the same images
in the same order under the ``none`` preset, and why sharding has one definition:

* the order is a seeded permutation per epoch (identity when not shuffling);
* a rank takes every ``world_size``-th element starting at ``rank`` (DistributedSampler's
  striding), so every index is seen exactly once per epoch across ranks, with no padding;
* with ``even=True`` (training under DDP with drop_last) the tail that does not divide by
  ``world_size`` is dropped first, so all ranks get the same number of samples and steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def epoch_indices(n: int, *, epoch: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                  even: bool = False) -> np.ndarray:
    """The dataset indices rank ``rank`` visits in ``epoch``, in order (int64)."""
    order = np.random.default_rng([seed, epoch, 0x0DE5]).permutation(n) if shuffle else np.arange(n)
    if even:
        order = order[: (n // world_size) * world_size]
    return order[rank::world_size].astype(np.int64)


def shard_size(n: int, rank: int, world_size: int, even: bool) -> int:
    """How many indices :func:`epoch_indices` gives rank ``rank``."""
    if even:
        return n // world_size
    return len(range(rank, n, world_size))


class ShardSampler(torch.utils.data.Sampler):
    """A ``Sampler`` yielding :func:`epoch_indices`: DistributedSampler's role, without its padding.

    DistributedSampler pads the last round with repeated indices (evaluation would count some
    samples twice) and draws its own permutation; this one shares the tensor backend's order.
    """

    def __init__(self, n: int, *, seed: int, shuffle: bool, rank: int, world_size: int, even: bool) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.even = rank, world_size, even
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        idx = epoch_indices(self.n, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank,
                            world_size=self.world_size, even=self.even)
        return iter(idx.tolist())

    def __len__(self) -> int:
        return shard_size(self.n, self.rank, self.world_size, self.even)
