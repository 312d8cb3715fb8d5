"""Numba kernels of the CPU tensor backend.

On a CPU, gathering a batch, cropping, flipping and normalising as separate torch ops walks the
batch four times and allocates three temporaries; this kernel does it in one parallel pass from
the uint8 dataset straight into the float32 output (airbench's GPU recipe, fused for a CPU).
The arithmetic is torchvision's, in float32 and in the same order (``x * (1/255)``, then
``- mean``, then ``/ std``), so its output is bit-identical to ``ToDtype`` + ``Normalize``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba
import numpy as np
import torch


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run numba kernels with torch's intra-op thread count, and leave torch's count as it was.

    numba's OpenMP layer, starting its thread pool on the first parallel kernel, sets the calling
    thread's OpenMP thread count to NUMBA_NUM_THREADS (all cores). torch's intra-op count is that same
    OpenMP setting, so a sweep trial that Ray gave one CPU went on training with two threads after its
    data loaded: with two such trials on two cores, each ran 8x slower (measured: 500 against 4,400 img/s).
    """
    n = torch.get_num_threads()
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, n)))
    try:
        yield
    finally:
        torch.set_num_threads(n)


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


@numba.njit(parallel=True, cache=True, nogil=True, fastmath=False)
def gather_augment(src: np.ndarray, idx: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray, pad: int,
                   theta: np.ndarray, use_theta: bool, jitter: np.ndarray, use_jitter: np.ndarray,
                   erase: np.ndarray, scale: np.float32, mean: np.ndarray, std: np.ndarray,
                   out: np.ndarray) -> None:  # pragma: no cover - jitted
    """Every stage of a preset in one kernel: crop + flip, warp (nearest), colour jitter, normalise, cutout.

    The semantics are those of :func:`loaders.augment.augment_batch` (crop and flip first, then
    the warp samples the cropped image, then brightness, contrast, saturation, then normalisation,
    then cutout); composing the index maps means no intermediate image is ever materialised.
    On a CPU this replaces some twenty batch-sized torch ops, whose OpenMP barriers stall badly
    when other processes share the cores.

    Args:
        src, idx, dy, dx, flip, pad, scale, mean, std, out: as for :func:`gather_crop_flip_normalize`.
        theta: float32 (B, 2, 3) output -> input maps in ``affine_grid``'s normalised coordinates.
        use_theta: whether to warp at all.
        jitter: float32 (3, B) brightness, contrast, saturation factors.
        use_jitter: bool (3,) which of the three are on.
        erase: int64 (4, B) top, left, height, width of the cutout; height 0 = none.
    """
    n_b = idx.shape[0]
    n_c, h, w = src.shape[1], src.shape[2], src.shape[3]
    hw = h * w
    one = np.float32(1.0)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    hf = np.float32(h)
    wf = np.float32(w)
    # affine_grid's base grid for align_corners=False: pixel centres in [-1, 1].
    xn = np.empty(w, np.float32)
    yn = np.empty(h, np.float32)
    for x in range(w):
        xn[x] = np.float32((2 * x + 1) / w - 1)
    for y in range(h):
        yn[y] = np.float32((2 * y + 1) / h - 1)
    lw = np.empty(n_c, np.float32)
    if n_c == 3:
        lw[0], lw[1], lw[2] = 0.2989, 0.587, 0.114
    else:
        lw[:] = 1.0
    do_b, do_c, do_s = use_jitter[0], use_jitter[1], use_jitter[2] and n_c == 3
    flat_src = src.reshape(src.shape[0], n_c, hw)
    flat_out = out.reshape(n_b, n_c, hw)
    for b in numba.prange(n_b):
        i = idx[b]
        oy = dy[b] - pad
        ox = dx[b] - pad
        f = flip[b]
        t00, t01, t02 = theta[b, 0, 0], theta[b, 0, 1], theta[b, 0, 2]
        t10, t11, t12 = theta[b, 1, 0], theta[b, 1, 1], theta[b, 1, 2]
        # 1. Where each output pixel comes from (-1: outside): warp, then flip and crop, composed.
        off = np.empty(hw, np.int64)
        for y in range(h):
            for x in range(w):
                u = y
                v = x
                ok = True
                if use_theta:
                    gx = t00 * xn[x] + t01 * yn[y] + t02
                    gy = t10 * xn[x] + t11 * yn[y] + t12
                    fu = np.rint(((gy + one) * hf - one) * half)  # grid_sample nearest: round half to even
                    fv = np.rint(((gx + one) * wf - one) * half)
                    ok = zero <= fu < hf and zero <= fv < wf
                    if ok:
                        u = int(fu)
                        v = int(fv)
                sy = u + oy
                sx = (w - 1 - v if f else v) + ox
                off[y * w + x] = sy * w + sx if ok and 0 <= sy < h and 0 <= sx < w else -1
        # 2. Gather into [0, 1] floats, with brightness.
        fb = jitter[0, b]
        for c in range(n_c):
            o = flat_out[b, c]
            s = flat_src[i, c]
            for k in range(hw):
                val = np.float32(s[off[k]]) * scale if off[k] >= 0 else zero
                o[k] = min(max(val * fb, zero), one) if do_b else val
        # 3. Contrast: blend with the image's mean grey.
        if do_c:
            fc = jitter[1, b]
            total = 0.0
            for c in range(n_c):
                o = flat_out[b, c]
                part = zero
                for k in range(hw):
                    part += o[k]
                total += lw[c] * part
            m = np.float32(total / hw)
            for c in range(n_c):
                o = flat_out[b, c]
                for k in range(hw):
                    o[k] = min(max(fc * o[k] + (one - fc) * m, zero), one)
        # 4. Saturation: blend each pixel with its grey.
        if do_s:
            fs = jitter[2, b]
            r, g, bl = flat_out[b, 0], flat_out[b, 1], flat_out[b, 2]
            for k in range(hw):
                gr = lw[0] * r[k] + lw[1] * g[k] + lw[2] * bl[k]
                r[k] = min(max(fs * r[k] + (one - fs) * gr, zero), one)
                g[k] = min(max(fs * g[k] + (one - fs) * gr, zero), one)
                bl[k] = min(max(fs * bl[k] + (one - fs) * gr, zero), one)
        # 5. Normalise, then cutout (zero = the mean colour after normalisation).
        for c in range(n_c):
            o = flat_out[b, c]
            mc, sc = mean[c], std[c]
            for k in range(hw):
                o[k] = (o[k] - mc) / sc
        top, left, eh, ew = erase[0, b], erase[1, b], erase[2, b], erase[3, b]
        for c in range(n_c):
            for y in range(top, top + eh):
                for x in range(left, left + ew):
                    out[b, c, y, x] = zero
