"""The ``tensor`` backend: the whole split as one uint8 tensor, augmented a batch at a time.

After airbench: the data sits on the target device (CPU or GPU) as uint8, each epoch draws a
seeded permutation, and every batch is gathered and augmented with batched ops, never with
per-sample Python. On the CPU every stage of a preset is one fused numba kernel
(:mod:`loaders.kernels`); on a GPU the same stages run as torch ops on the device
(:func:`loaders.augment.augment_batch`). Both draw the random parameters from the same host
generator, so they give the same batches.

Per epoch, not per batch: the permutation and every random-parameter array are drawn once for the
whole epoch (one numpy call per array) and, on a GPU, uploaded once each (pinned,
``non_blocking``); a batch then takes device-side slices. Uploading each batch's few parameter
arrays from pageable memory cost 3 to 11 blocking host-to-device copies per batch, and every one
of them stalls the host thread that has to keep the GPU fed. On a CPU the upload is
``torch.from_numpy`` (no copy), and the numba kernel reads numpy slices directly.

``layout="airbench"`` (opt-in; presets without float stages: ``none``, ``base``): airbench's own
recipe for a GPU. The split is converted and normalised once, when the loader is built, into a
bf16 (fp16 where bf16 is not native; fp32 on a CPU) channels_last tensor already zero-padded by
``crop_pad`` with the normalised value of a black pixel. A batch is then one gather from it: the
random crop is a shift of each image's row and column indices inside its padding (the flip folded
into the column indices), so there is no per-batch conversion, normalisation or validity mask,
and half the bytes of fp32 move. The values are the uint8 layout's, rounded once to the storage
dtype (bit-identical in fp32). Batches come out in the storage dtype, so the model must run in it
(autocast or a bf16/fp16 model); rotation and colour jitter need [0, 1] pixels before the
normalisation, so presets with them are refused rather than silently changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from loaders.augment import (
    BatchParams,
    alternating_flips,
    augment_batch,
    erase_,
    normalize_,
    sample_params,
    to_unit,
    upload,
)
from loaders.base import LoaderBase
from loaders.registries import BACKENDS
from loaders.types import DatasetMeta, SplitData

LAYOUTS = ("uint8", "airbench")


def airbench_dtype(device: torch.device) -> torch.dtype:
    """The storage dtype of ``layout="airbench"``: bf16 where CUDA has it natively, else fp16; fp32 on a CPU
    (CPUs have no fast half-precision convolutions)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def normalized_padded_split(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, pad: int,
                            dtype: torch.dtype, device: torch.device, chunk: int = 4096,
                            pad_mode: str = "zeros") -> torch.Tensor:
    """uint8 (N, C, H, W) on the host -> normalised (N, C, H + 2 pad, W + 2 pad) ``dtype`` channels_last on ``device``.

    The border holds a black pixel's normalised value (``pad_mode="reflect"``: the mirrored image), so a
    padded crop is a pure index shift.
    Built ``chunk`` images at a time: never a float32 copy of the whole split. Each value is the
    uint8 path's (``to_unit`` then ``normalize_``, float32), rounded once to ``dtype``.
    """
    n, c, h, w = images.shape
    out = torch.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=dtype, device=device,
                      memory_format=torch.channels_last)
    if pad:
        black = normalize_(to_unit(torch.zeros((1, c, 1, 1), dtype=torch.uint8, device=device)), mean, std)
        out.copy_(black.to(dtype).expand_as(out))
    for i in range(0, n, chunk):
        x = normalize_(to_unit(images[i:i + chunk].to(device)), mean, std)
        if pad and pad_mode == "reflect":
            out[i:i + chunk] = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect").to(dtype)
        else:
            out[i:i + chunk, :, pad:pad + h, pad:pad + w] = x.to(dtype)
    return out


def crop_flip_padded(padded: torch.Tensor, bi: torch.Tensor, p: BatchParams, h: int, w: int,
                     geometric: bool) -> torch.Tensor:
    """Batch ``bi`` of a :func:`normalized_padded_split`, cropped at ``p.dy``/``p.dx`` and flipped: one gather.

    Every image's output rows are ``dy + arange(h)`` of its padded image and its columns
    ``dx + arange(w)`` (reversed where flipped): the crop of the zero-padded image, then the flip,
    exactly as :func:`loaders.augment.crop_flip` does it, but with the padding already in memory.
    Returns an NCHW-shaped channels_last tensor.
    """
    if not geometric:
        return padded[bi]
    b, dev = bi.shape[0], padded.device
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = p.dy.view(b, 1) + ar_h.view(1, h)  # type: ignore[union-attr]
    cols = torch.where(p.flip.view(b, 1), (w - 1 - ar_w).view(1, w), ar_w.view(1, w)) + p.dx.view(b, 1)  # type: ignore[union-attr]
    # Advanced indices on dims 0, 2, 3 around a slice: the result is (B, h, w, C), i.e. channels_last.
    out = padded[bi.view(b, 1, 1), :, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2)


class TensorLoader(LoaderBase):
    """Device-resident uint8 split, batched augmentation; see the module docstring.

    ``num_workers`` and ``beton_dir`` are accepted for a uniform signature and ignored: the work
    runs in the calling process (numba threads on a CPU). ``layout`` is ``uint8`` (the default)
    or ``airbench`` (see the module docstring), ``layout_dtype`` the latter's storage dtype
    (default :func:`airbench_dtype`).
    """

    backend = "tensor"
    reflect_pad = alternating_flip = True

    def __init__(self, split: SplitData, meta: DatasetMeta, *, train: bool, batch_size: int,
                 augment: str = "none", device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 num_workers: int | None = None, beton_dir: str | Path | None = None, layout: str = "uint8",
                 layout_dtype: torch.dtype | None = None) -> None:
        super().__init__(split, meta, train=train, batch_size=batch_size, augment=augment, device=device,
                         rank=rank, world_size=world_size, seed=seed, drop_last=drop_last,
                         channels_last=channels_last)
        if layout not in LAYOUTS:
            raise HarnessError(f"tensor loader layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.layout = layout
        self.labels = split.labels.to(self.device, torch.int64)
        self.padded: torch.Tensor | None = None
        if layout == "airbench":
            if self.spec.float_stage:
                raise HarnessError(f"layout airbench normalises the split once, so it takes presets without "
                                   f"rotation, affine or colour jitter (none, base); {self.spec.name} has them")
            self.padded = normalized_padded_split(split.images, self.mean, self.std, self.spec.crop_pad,
                                                  layout_dtype or airbench_dtype(self.device), self.device,
                                                  pad_mode=self.spec.pad_mode)
            self.images = None  # the uint8 copy is not needed on the device
        else:
            self.images = split.images.to(self.device).contiguous()
        #: fused numba kernel on the CPU; tests switch it off to compare with the torch-op path
        # (presets with a resized crop, hue or reflect padding take the torch ops: the kernel has none of them)
        self.use_kernel = self.device.type == "cpu" and layout == "uint8" and self.spec.fused
        self._mean_np = np.asarray(meta.mean, dtype=np.float32)
        self._std_np = np.asarray(meta.std, dtype=np.float32)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _, _, h, w = self.split.images.shape
        bs = self.batch_size
        n_batches = len(self)
        idx = self.indices()[: n_batches * bs]  # the samples this epoch visits (drop_last cuts the tail)
        # The whole epoch's random parameters in one draw per array: the same numbers, batch by
        # batch, on every device (see the module docstring).
        params = sample_params(self.spec, len(idx), h, w, self.aug_generator())
        if self.spec.flip and self.spec.flip_mode == "alternating":
            params.flip = alternating_flips(self.n, idx, self.epoch, self.seed)
        if self.use_kernel:
            # numba is heavy: imported when a kernel runs
            from loaders.kernels import torch_threads_kept

            labels = self.labels[torch.from_numpy(idx)]
            for k in range(n_batches):
                sl = slice(k * bs, (k + 1) * bs)
                # As many kernel threads as torch's intra-op threads (which Ray / DDP launchers set per
                # worker), and torch's count intact for the step that follows (see torch_threads_kept).
                with torch_threads_kept():
                    x = self._kernel_batch(idx[sl], params.slice(sl))
                yield self._finish(x), labels[sl]
            return
        # One upload per array per epoch (none at all on a CPU); batches slice on the device.
        idx_dev = upload(idx, self.device)
        p_dev = params.to(self.device, self.spec)
        spec = self.spec
        for k in range(n_batches):
            sl = slice(k * bs, (k + 1) * bs)
            bi = idx_dev[sl]
            if self.padded is not None:
                p = p_dev.slice(sl)
                x = erase_(crop_flip_padded(self.padded, bi, p, h, w, bool(spec.crop_pad or spec.flip)), p)
                yield (x if self.channels_last else x.contiguous()), self.labels[bi]
            else:
                x = augment_batch(self.images[bi], spec, p_dev.slice(sl), self.mean, self.std)
                yield self._finish(x), self.labels[bi]

    def _kernel_batch(self, bi: np.ndarray, p: BatchParams) -> torch.Tensor:
        # numba is heavy: imported when a kernel runs
        from loaders.kernels import gather_augment, gather_crop_flip_normalize

        spec = self.spec
        b = len(bi)
        _, c, h, w = self.images.shape
        out = torch.empty((b, c, h, w), dtype=torch.float32)
        common = (self.images.numpy(), bi, p.dy, p.dx, p.flip, spec.crop_pad)
        if not (spec.float_stage or p.erase is not None):
            # none / base: torchvision's exact arithmetic (bit-identical to ToDtype + Normalize).
            gather_crop_flip_normalize(*common, np.float32(1.0 / 255), self._mean_np, self._std_np, out.numpy())
            return out
        # (3, B) and (4, B) slices of the epoch's arrays are strided; the kernel was compiled for
        # C-contiguous arrays (a strided one would cost a second compilation), so copy these few numbers.
        theta = p.theta if p.theta is not None else np.zeros((b, 2, 3), np.float32)
        jitter = np.ascontiguousarray(p.jitter) if p.jitter is not None else np.ones((3, b), np.float32)
        erase = np.ascontiguousarray(p.erase) if p.erase is not None else np.zeros((4, b), np.int64)
        use_jitter = np.array([m > 0 for m in spec.jitter], dtype=np.bool_)
        gather_augment(*common, theta, p.theta is not None, jitter, use_jitter, erase, np.float32(1.0 / 255),
                       self._mean_np, self._std_np, out.numpy())
        return out


BACKENDS.register("tensor", TensorLoader)
