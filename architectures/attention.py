"""``attn_backbone``: stacked backbones of parallel conv blocks mixed by per-sample attention weights.

From the reports: N backbones in sequence. Each holds K parallel conv blocks of M layers
(conv3x3, BN, ReLU, 2x2 max-pool, dropout) and outputs ``BN(sum_k a_k * block_k(X))``, where
``a = sigmoid(Linear(GlobalAvgPool(X)))`` gives K weights per sample (sigmoid, not softmax: the
blocks are gated independently, not made to compete). The classifier is a global average pool and
a linear layer; all conv and linear weights are Xavier-uniform, as in the report.

Defaults are the report's: ``channels=[[3, 128, 256], [256, 512, 1028]]`` (1028, not 1024, as the
report has it), K=3, conv dropout 0.2: 18,670,305 parameters at 3x32x32 and 10 classes. Every layer
pools by 2, so the input needs at least 2**(total layers) pixels: 16 at the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from architectures.layers import check_int, check_prob, conv_block
from architectures.registry import register_model
from harness.errors import HarnessError

DEFAULT_CHANNELS: tuple[tuple[int, ...], ...] = ((3, 128, 256), (256, 512, 1028))


class AttentionBackbone(nn.Module):
    """K parallel conv blocks over the same input, summed with sigmoid weights from the input's GAP."""

    def __init__(self, channels: Sequence[int], branches: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.Linear(channels[0], branches)
        self.branches = nn.ModuleList(
            nn.Sequential(*(conv_block(channels[i], channels[i + 1], 3, batch_norm=True, dropout=dropout)
                            for i in range(len(channels) - 1)))
            for _ in range(branches))
        self.norm = nn.BatchNorm2d(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.attn(x.mean(dim=(2, 3))))  # (B, K)
        out = sum(weights[:, k, None, None, None] * branch(x) for k, branch in enumerate(self.branches))
        return self.norm(out)


class AttnBackboneNet(nn.Module):
    """``backbone1`` ... ``backboneN``, global average pool, linear ``head``."""

    def __init__(self, channels: Sequence[Sequence[int]], num_classes: int, branches: int = 3,
                 dropout: float = 0.2) -> None:
        super().__init__()
        for i, chs in enumerate(channels):
            self.add_module(f"backbone{i + 1}", AttentionBackbone(chs, branches, dropout))
        self.head = nn.Linear(channels[-1][-1], num_classes)
        self._backbones = [f"backbone{i + 1}" for i in range(len(channels))]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the last backbone's feature map."""
        for name in self._backbones:
            x = self._modules[name](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits."""
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_channels(channels: object, in_chans: int) -> list[list[int]]:
    """The report's nested channel lists, with the first input replaced by ``in_chans``."""
    err = HarnessError("attn_backbone: channels must be a list of backbones, each a list of >= 2 positive "
                       f"ints chained end to start, e.g. [[3, 128, 256], [256, 512, 1028]]; got {channels!r}")
    if not isinstance(channels, Sequence) or isinstance(channels, str) or not channels:
        raise err
    out: list[list[int]] = []
    for chs in channels:
        if not isinstance(chs, Sequence) or isinstance(chs, str) or len(chs) < 2:
            raise err
        try:
            out.append([check_int("attn_backbone", "channels", c, 1) for c in chs])
        except HarnessError:
            raise err from None
    if any(prev[-1] != nxt[0] for prev, nxt in zip(out, out[1:])):
        raise err
    out[0][0] = in_chans
    return out


@register_model(family="attention", source="report: attention-weighted parallel conv backbones", head="head",
                min_img_size=16)
def attn_backbone(*, num_classes: int, in_chans: int = 3, img_size: int = 32,
                  channels: Sequence[Sequence[int]] = DEFAULT_CHANNELS, branches: int = 3,
                  dropout: float = 0.2) -> AttnBackboneNet:
    """N = ``len(channels)`` backbones of K = ``branches`` parallel conv blocks; GAP; linear head."""
    chs = _check_channels(channels, in_chans)
    pools = sum(len(c) - 1 for c in chs)
    if img_size < 2**pools:
        raise HarnessError(f"attn_backbone: img_size {img_size} is too small for {pools} 2x2 max-pools "
                           f"(needs >= {2**pools})")
    return AttnBackboneNet(chs, num_classes, check_int("attn_backbone", "branches", branches, 1),
                           check_prob("attn_backbone", "dropout", dropout))
