"""Numba kernels of the CPU tensor backend.

On a CPU, gathering a batch, cropping, flipping and normalising as separate torch ops walks the
batch four times and allocates three temporaries; this kernel does it in one parallel pass from
the uint8 dataset straight into the float32 output (airbench's GPU recipe, fused for a CPU).
The arithmetic is torchvision's, in float32 and in the same order (``x * (1/255)``, then
``- mean``, then ``/ std``), so its output is bit-identical to ``ToDtype`` + ``Normalize``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=False)
def gather_crop_flip_normalize(src: np.ndarray, idx: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                               flip: np.ndarray, pad: int, scale: np.float32, mean: np.ndarray,
                               std: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jitted
    """``out[b] = normalise(flip?(crop(pad(src[idx[b]]))))`` for every b, in parallel over b.

    Args:
        src: uint8 (N, C, H, W) dataset.
        idx: int64 (B,) dataset indices of the batch.
        dy, dx: int64 (B,) crop offsets in the zero-padded image, 0..2*pad (pad = no shift).
        flip: bool (B,) horizontal flip after the crop.
        pad: the zero padding of the crop.
        scale: float32 1/255.
        mean, std: float32 (C,); use 0 and 1 for [0, 1] output.
        out: float32 (B, C, H, W), written completely.
    """
    n_b = idx.shape[0]
    n_c, h, w = src.shape[1], src.shape[2], src.shape[3]
    for b in numba.prange(n_b):
        i = idx[b]
        oy = dy[b] - pad
        ox = dx[b] - pad
        f = flip[b]
        for c in range(n_c):
            m = mean[c]
            s = std[c]
            zero = (np.float32(0.0) * scale - m) / s  # a padded pixel, normalised
            for y in range(h):
                sy = y + oy
                if sy < 0 or sy >= h:
                    for x in range(w):
                        out[b, c, y, x] = zero
                    continue
                for x in range(w):
                    sx = (w - 1 - x if f else x) + ox
                    if sx < 0 or sx >= w:
                        out[b, c, y, x] = zero
                    else:
                        out[b, c, y, x] = (np.float32(src[i, c, sy, sx]) * scale - m) / s


@numba.njit(parallel=True, cache=True, nogil=True)
def channel_histogram(x: np.ndarray, n_chunks: int) -> np.ndarray:  # pragma: no cover - jitted
    """Per-channel histogram of uint8 images (N, C, H, W): int64 (C, 256), exact.

    Each of ``n_chunks`` image ranges fills its own histogram (no shared counters between
    threads); they are summed at the end. One pass over the bytes, no float copy of the data.
    """
    n, n_c, h, w = x.shape
    part = np.zeros((n_chunks, n_c, 256), dtype=np.int64)
    step = (n + n_chunks - 1) // n_chunks
    for k in numba.prange(n_chunks):
        for i in range(k * step, min(n, (k + 1) * step)):
            for c in range(n_c):
                for y in range(h):
                    for v in x[i, c, y]:
                        part[k, c, v] += 1
    return part.sum(axis=0)
