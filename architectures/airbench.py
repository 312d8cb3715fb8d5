"""airbench94: Keller Jordan's CIFAR-10 speed-record network (arXiv 2404.00498, "94% on CIFAR-10 in 3.29
seconds on a single GPU", section 3 and figure 2), written here from the paper's description.

- ``whiten``: a 2x2 convolution without padding whose 2 x (in_chans x 2 x 2) filters are, after the
  whitening init (:func:`whitening_weights`, ``model.whiten``), the eigenvectors of the training patches'
  covariance scaled by their inverse square-root eigenvalues, positive and negated; then GELU.
- three groups of 64, 256, 256 channels: conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU.
  Convolutions have no bias; BatchNorm weights are frozen at 1 (only the biases train) with the paper's
  momentum 0.6 in its convention (torch's ``momentum=0.4``) and eps 1e-12.
- global max-pool and a bias-free linear head whose logits are scaled by 1/9.

1,972,792 parameters at 3 x 32 x 32 and 10 classes (the frozen BatchNorm weights included).
Top-level children are ``whiten``, ``layer1``..``layer3`` and ``head``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from architectures.layers import check_positive
from architectures.registry import register_model
from harness.errors import HarnessError

_SOURCE = "Jordan 2024, arXiv 2404.00498 (airbench94), fig. 2"


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with its weight frozen at 1: only the bias (a per-channel shift) trains, as in airbench."""

    def __init__(self, channels: int, momentum: float = 0.6, eps: float = 1e-12) -> None:
        # The paper's momentum is the running average's decay; torch's is 1 - that.
        super().__init__(channels, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Sequential):
    """conv 3x3, max-pool 2, BN, GELU, conv 3x3, BN, GELU."""

    def __init__(self, in_chs: int, out_chs: int, bn_momentum: float) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False), nn.MaxPool2d(2), _BatchNorm(out_chs, bn_momentum),
            nn.GELU(), nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False), _BatchNorm(out_chs, bn_momentum),
            nn.GELU())


class Airbench94(nn.Module):
    """See the module docstring."""

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, int, int] = (64, 256, 256),
                 logit_scale: float = 1 / 9, bn_momentum: float = 0.6) -> None:
        super().__init__()
        whiten_width = 2 * in_chans * 2 * 2  # every eigenvector of a 2x2 patch, and its negation
        self.whiten = nn.Conv2d(in_chans, whiten_width, 2, padding=0, bias=True)
        chs = (whiten_width, *widths)
        self.layer1 = ConvGroup(chs[0], chs[1], bn_momentum)
        self.layer2 = ConvGroup(chs[1], chs[2], bn_momentum)
        self.layer3 = ConvGroup(chs[2], chs[3], bn_momentum)
        self.head = nn.Linear(chs[3], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the last group's feature map."""
        x = F.gelu(self.whiten(x))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> scaled logits (global max-pool, linear)."""
        return self.head(x.amax(dim=(2, 3))) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def patch_second_moment(images: torch.Tensor, k: int) -> torch.Tensor:
    """The (uncentred) covariance of every ``k`` x ``k`` patch of a normalised float batch (N, C, H, W).

    Returns:
        (C k k, C k k) float64, patch vectors flattened in (channel, row, column) order: a conv weight's.
    """
    c = images.shape[1]
    patches = images.unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
    return flat.T @ flat / flat.shape[0]


def whitening_weights(images: torch.Tensor, k: int = 2, eps: float = 5e-4) -> torch.Tensor:
    """Filters that whiten ``k`` x ``k`` patches of ``images``: (2 C k k, C, k, k), as in airbench.

    Each eigenvector of the patch covariance, divided by the square root of its eigenvalue (+ ``eps``
    so that near-zero directions are not blown up), largest first; then the same filters negated, so
    that the GELU after the conv keeps both signs of every whitened direction.
    """
    c = images.shape[1]
    cov = patch_second_moment(images, k)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    filters = (evecs.T / torch.sqrt(evals.clamp_min(0) + eps).unsqueeze(1)).reshape(-1, c, k, k)
    return torch.cat([filters, -filters]).float()


@register_model(family="airbench", source=_SOURCE, head="head", min_img_size=9)
def airbench94(*, num_classes: int, in_chans: int = 3, img_size: int = 32, logit_scale: float = 1 / 9,
               bn_momentum: float = 0.6, widths: tuple[int, int, int] = (64, 256, 256)) -> Airbench94:
    """airbench94 (1.97M params); ``logit_scale`` multiplies the logits (1/9), ``bn_momentum`` is the
    paper's BatchNorm momentum (the running statistics' decay, 0.6), ``widths`` the three groups' channels."""
    check_positive("airbench94", "logit_scale", logit_scale)
    if not 0 < bn_momentum < 1:
        raise HarnessError(f"airbench94: bn_momentum must be in (0, 1), got {bn_momentum!r}")
    if len(widths) != 3 or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise HarnessError(f"airbench94: widths must be three positive ints, got {widths!r}")
    return Airbench94(num_classes, in_chans, tuple(widths), logit_scale=logit_scale, bn_momentum=bn_momentum)
