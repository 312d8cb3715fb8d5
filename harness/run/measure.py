"""What a run measures about itself besides accuracy: inference speed and peak memory."""

from __future__ import annotations

import contextlib
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


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def inference_img_per_s(model: nn.Module, shape: tuple[int, int, int], precision: str, channels_last: bool,
                        device: torch.device) -> float:
    """Images/s of a forward pass at batch 256 (median of 3 after a warm-up)."""
    model.eval()
    x = torch.randn(256, *shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), autocast(precision, device):
        for i in range(4):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t)
    times.sort()
    return 256 / times[len(times) // 2]
