"""Whitening init of a patch-whitening conv from the training split (airbench94, arXiv 2404.00498 sec. 3.3).

At setup, from the first :data:`WHITEN_IMAGES` training images as the loop has them (normalised, not
augmented): the conv's filters become :func:`architectures.airbench.whitening_weights` and are frozen; its
bias starts at zero and trains for ``model.whiten_bias_epochs`` epochs, then is frozen too
(:func:`freeze_whiten_bias`). The init is part of the timed work (``RunSummary.whiten_s``).
"""

from __future__ import annotations

import time
import weakref

import torch
from torch import nn

from harness.errors import ConfigError

#: training images whose patches estimate the covariance (airbench uses 5,000)
WHITEN_IMAGES = 5000


def whiten_layer(model: nn.Module, arch: str) -> nn.Conv2d:
    """The model's patch-whitening conv: a top-level ``whiten`` Conv2d with 2 x (in x k x k) filters.

    Raises:
        ConfigError: the model has none (one line naming the model).
    """
    conv = getattr(model, "whiten", None)
    if not isinstance(conv, nn.Conv2d) or conv.out_channels != 2 * conv.in_channels * conv.kernel_size[0] ** 2:
        raise ConfigError(f"model.whiten: {arch} has no patch-whitening conv (a top-level `whiten` Conv2d with "
                          "2 x in x k x k filters, as airbench94 has)")
    return conv


def init_whitening(model: nn.Module, arch: str, images: torch.Tensor, mean: tuple[float, ...],
                   std: tuple[float, ...], device: torch.device, freeze_bias: bool) -> float:
    """Whiten ``model``'s ``whiten`` conv from uint8 training ``images`` (N, C, H, W); returns the seconds.

    Timed with the device synchronised (CUDA events would time the same span).
    """
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures.airbench import whitening_weights

    conv = whiten_layer(model, arch)
    t = time.perf_counter()
    x = images[:WHITEN_IMAGES].to(device, torch.float32) / 255
    c = x.shape[1]
    x = (x - torch.tensor(mean, device=device).view(1, c, 1, 1)) / torch.tensor(std, device=device).view(1, c, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(whitening_weights(x, conv.kernel_size[0]).to(conv.weight.dtype))
        if conv.bias is not None:
            conv.bias.zero_()
    conv.weight.requires_grad_(False)
    if freeze_bias and conv.bias is not None:
        conv.bias.requires_grad_(False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def freeze_whiten_bias(model: nn.Module, arch: str) -> None:
    """Freeze the whitening conv's bias (after ``model.whiten_bias_epochs``): it gets no more gradients, so
    the optimizer leaves it where it is (optimizers and gradient clipping skip a parameter whose grad is None).

    The gradient is dropped as backward accumulates it, not by ``requires_grad_(False)``: dynamo guards every
    parameter's ``requires_grad``, so under --compile that flip recompiled the training graph at the first
    step of the next epoch, inside its timed span (issue 21). Calling it again changes nothing.
    """
    bias = whiten_layer(model, arch).bias
    if bias is None or (id(bias) in _FROZEN and _FROZEN[id(bias)]() is bias):
        return
    bias.register_post_accumulate_grad_hook(_drop_grad)
    bias.grad = None
    _FROZEN[id(bias)] = weakref.ref(bias)


#: the biases :func:`freeze_whiten_bias` froze, by id and held weakly (a WeakSet would compare tensors with ==)
_FROZEN: dict[int, weakref.ref] = {}


def _drop_grad(p: torch.Tensor) -> None:
    p.grad = None
