"""Dataset-level uint8 transforms applied once at load time: grayscale, resize, and channel statistics.

They run in chunks so that CIFAR-10 at 64x64 never needs a 2 GB float copy of the whole split.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CHUNK_ELEMS = 1 << 22  # values per chunk: a 16-32 MB float temporary


def _chunk(x: torch.Tensor) -> int:
    """Images per chunk for ``x`` (N, C, H, W)."""
    return max(1, CHUNK_ELEMS // max(1, math.prod(x.shape[1:])))

# ITU-R 601-2 luma, the weights of torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 1, H, W) uint8 (rounded luma); one-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    out = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.uint8)
    w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    k = _chunk(x)
    for i in range(0, x.shape[0], k):
        c = x[i:i + k].to(torch.float32)
        out[i:i + k] = (c * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing; a no-op at the same size."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    k = max(1, _chunk(x) * x.shape[2] * x.shape[3] // (size * size))
    for i in range(0, x.shape[0], k):
        c = x[i:i + k].to(torch.float32)
        r = F.interpolate(c, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + k] = r.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W), in [0, 1] units.

    Computed exactly from a per-channel histogram (a numba kernel: 45,000 CIFAR images in about
    0.1 s, where float64 reductions took a second). A constant channel gets std 1/255 rather
    than 0, so normalising never divides by zero.
    """
    # numba is heavy: imported when a kernel runs
    from loaders.kernels import channel_histogram, torch_threads_kept

    with torch_threads_kept():
        hist = channel_histogram(x.contiguous().numpy(), 64).astype(np.float64)  # (C, 256)
    v = np.arange(256, dtype=np.float64)
    count = hist.sum(1)
    mean = (hist * v).sum(1) / count
    var = np.maximum((hist * (v - mean[:, None]) ** 2).sum(1) / count, 0.0)
    std = np.maximum(np.sqrt(var), 1.0)
    return tuple(float(m / 255) for m in mean), tuple(float(s / 255) for s in std)
