"""The ``tensor`` backend: the whole split as one uint8 tensor, augmented a batch at a time.

After airbench: the data sits on the target device (CPU or GPU) as uint8, each epoch draws a
seeded permutation, and every batch is gathered and augmented with batched ops, never with
per-sample Python. On the CPU every stage of a preset is one fused numba kernel
(:mod:`loaders.kernels`); on a GPU the same stages run as torch ops on the device
(:func:`loaders.augment.augment_batch`). Both draw the batch's random parameters from the same
host generator, so they give the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from loaders.augment import BatchParams, augment_batch, sample_params
from loaders.base import LoaderBase
from loaders.registries import BACKENDS
from loaders.types import DatasetMeta, SplitData


class TensorLoader(LoaderBase):
    """Device-resident uint8 split, batched augmentation; see the module docstring.

    ``num_workers`` and ``beton_dir`` are accepted for a uniform signature and ignored: the work
    runs in the calling process (numba threads on a CPU).
    """

    backend = "tensor"

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None) -> None:
        super().__init__(split, meta, train=train, batch_size=batch_size, augment=augment, device=device,
                         rank=rank, world_size=world_size, seed=seed, drop_last=drop_last,
                         channels_last=channels_last)
        self.images = split.images.to(self.device).contiguous()
        self.labels = split.labels.to(self.device, torch.int64)
        #: fused numba kernel on the CPU; tests switch it off to compare with the torch-op path
        self.use_kernel = self.device.type == "cpu"
        self._mean_np = np.asarray(meta.mean, dtype=np.float32)
        self._std_np = np.asarray(meta.std, dtype=np.float32)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.use_kernel:
            import numba

            # As many kernel threads as torch's intra-op threads (which Ray / DDP launchers set per
            # worker), so two ranks on two cores do not each start two numba threads.
            numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads())))
        idx = torch.from_numpy(self.indices())
        idx_dev = idx.to(self.device)
        gen = self.aug_generator()
        _, _, h, w = self.images.shape
        bs = self.batch_size
        for k in range(len(self)):
            sl = slice(k * bs, (k + 1) * bs)
            bi = idx[sl]
            p = sample_params(self.spec, len(bi), h, w, gen)
            if self.use_kernel:
                x = self._kernel_batch(bi, p)
            else:
                x = augment_batch(self.images[idx_dev[sl]], self.spec, p, self.mean, self.std)
            yield self._finish(x), self.labels[idx_dev[sl]]

    def _kernel_batch(self, bi: torch.Tensor, p: BatchParams) -> torch.Tensor:
        from loaders.kernels import gather_augment, gather_crop_flip_normalize

        spec = self.spec
        b = len(bi)
        _, c, h, w = self.images.shape
        out = torch.empty((b, c, h, w), dtype=torch.float32)
        common = (self.images.numpy(), bi.numpy(), p.dy, p.dx, p.flip, spec.crop_pad)
        if not (spec.float_stage or p.erase is not None):
            # none / base: torchvision's exact arithmetic (bit-identical to ToDtype + Normalize).
            gather_crop_flip_normalize(*common, np.float32(1.0 / 255), self._mean_np, self._std_np, out.numpy())
            return out
        theta = p.theta if p.theta is not None else np.zeros((b, 2, 3), np.float32)
        jitter = p.jitter if p.jitter is not None else np.ones((3, b), np.float32)
        erase = p.erase if p.erase is not None else np.zeros((4, b), np.int64)
        use_jitter = np.array([m > 0 for m in spec.jitter], dtype=np.bool_)
        gather_augment(*common, theta, p.theta is not None, jitter, use_jitter, erase, np.float32(1.0 / 255),
                       self._mean_np, self._std_np, out.numpy())
        return out


BACKENDS.register("tensor", TensorLoader)
