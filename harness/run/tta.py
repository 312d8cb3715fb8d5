"""Test-time augmentation: the logits of an evaluation batch averaged over flipped and shifted views.

After airbench (arXiv 2404.00498, section 3.7): ``flip`` averages the image and its mirror (2 views);
``flip_translate`` gives that pair half the weight and the same pair shifted by one pixel up-left and
down-right (reflect padding) the other half (6 views). Applied to validation and test alike, so the epoch
that validation selects is scored the way the test split is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: forward passes per image of each mode
TTA_VIEWS = {"none": 1, "flip": 2, "flip_translate": 6}


def keep_layout(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` made contiguous in ``like``'s memory format (channels_last stays channels_last: a view or a
    copy in the other format would send the model a layout it was not run with)."""
    cl = like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    return y.contiguous(memory_format=torch.channels_last) if cl else y.contiguous()


def _flip_pair(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(x) + model(x.flip(-1)))


def tta_logits(model: nn.Module, x: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Logits of batch ``x`` (N, C, H, W) under test-time augmentation ``mode`` (see the module docstring).

    Raises:
        ValueError: an unknown mode (the config's choices check it first).
    """
    if mode == "none":
        return model(x)
    if mode == "flip":
        return _flip_pair(model, x)
    if mode != "flip_translate":
        raise ValueError(f"unknown TTA mode {mode!r} (valid: {', '.join(TTA_VIEWS)})")
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [keep_layout(s, x) for s in (padded[..., :h, :w], padded[..., 2:, 2:])]
    return 0.5 * _flip_pair(model, x) + 0.25 * sum(_flip_pair(model, s) for s in shifted)
