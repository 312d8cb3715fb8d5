"""What a run measures about itself besides accuracy: inference speed and peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
import time

import torch
from torch import nn


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def backend_flags(precision: str, deterministic: bool, device_type: str) -> dict[str, bool]:
    """The torch backend switches a run sets: cuDNN autotuning, TF32 and determinism.

    TF32 makes fp32 matmuls and convolutions run on tensor cores (Ampere and later) at a precision that
    is ample for training; deterministic runs keep full fp32 and disable autotuning.
    """
    cuda = device_type == "cuda"
    return {"cudnn_benchmark": cuda and not deterministic,
            "tf32": cuda and precision == "fp32" and not deterministic,
            "deterministic": deterministic}


def apply_backend_flags(flags: dict[str, bool]) -> None:
    """Set :func:`backend_flags` on torch (and ``CUBLAS_WORKSPACE_CONFIG``, which cuBLAS reads at init)."""
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
    torch.backends.cuda.matmul.allow_tf32 = flags["tf32"]
    torch.backends.cudnn.allow_tf32 = flags["tf32"]
    if flags["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def inference_img_per_s(model: nn.Module, shape: tuple[int, int, int], precision: str, channels_last: bool,
                        device: torch.device, iters: int = 10, warmup: int = 2) -> float:
    """Images/s of a forward pass at batch 256: the median of ``iters`` after ``warmup`` untimed ones.

    ``model`` is what the run trained through (compiled when ``--compile``), so the figure is the
    model as it would serve.
    """
    model.eval()
    times = []
    with torch.inference_mode(), autocast(precision, device):
        # Made in inference mode, as evaluation's batches are: a compiled model guards on the dispatch keys.
        x = torch.randn(256, *shape, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    times.sort()
    return 256 / times[len(times) // 2]


class DeviceTimer:
    """Seconds of device work between :meth:`start` and :meth:`stop`: CUDA events on a GPU (recorded on the
    stream, read after a synchronize, so queued work is counted and host overhead is not), the host clock
    elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._t0 = 0.0
        self._events: tuple | None = None

    def start(self) -> DeviceTimer:
        if self.cuda:
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        else:
            self._t0 = time.perf_counter()
        return self

    def stop(self) -> float:
        """The seconds since :meth:`start` (synchronises the device)."""
        if self.cuda and self._events is not None:
            self._events[1].record()
            self._events[1].synchronize()
            return self._events[0].elapsed_time(self._events[1]) / 1000
        return time.perf_counter() - self._t0
