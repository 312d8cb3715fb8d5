"""EfficientNet-B0..B3 adapted to 32x32 inputs.

Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (ICML 2019):
the B0 baseline of Table 1 (MBConv blocks with squeeze-and-excitation, SiLU, stochastic depth
growing linearly to 0.2 over the blocks), scaled by the compound coefficients of the reference
code for ``variant`` b0 to b3 (width and depth multipliers and the classifier dropout; the
input-resolution coefficient does not apply, inputs stay 32 px). Channel and repeat rounding
follow torchvision, so b0 has torchvision's feature extractor parameters: 4,020,358 parameters
at 10 classes.

Adapted to 32x32 inputs as :mod:`architectures.mobilenet_cifar` is: the stem and the first strided
stage (24 channels) use stride 1, for 8x total downsampling instead of 32x.

Top-level children: ``stem``, ``layer1``..``layer7`` (the seven stages of Table 1), ``conv_head``
(1x1 conv to 4x the last stage's width) and ``head``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

from architectures.layers import check_prob, make_divisible
from architectures.registry import register_model
from harness.errors import HarnessError

# (expansion, kernel, stride, output channels, repeats) of B0's stages, strides adapted to 32 px.
B0_STAGES: list[tuple[int, int, int, int, int]] = [
    (1, 3, 1, 16, 1), (6, 3, 1, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
]
# variant -> (width multiplier, depth multiplier, classifier dropout), from the reference code.
VARIANTS: dict[str, tuple[float, float, float]] = {
    "b0": (1.0, 1.0, 0.2), "b1": (1.0, 1.1, 0.2), "b2": (1.1, 1.2, 0.3), "b3": (1.2, 1.4, 0.3),
}


def _conv_bn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(out_chs)]
    return [*layers, nn.SiLU()] if act else layers


class SqueezeExcite(nn.Module):
    """Channel gates from the global average: 1x1 conv down (SiLU), 1x1 conv up (sigmoid)."""

    def __init__(self, chs: int, squeeze_chs: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(chs, squeeze_chs, 1)
        self.expand = nn.Conv2d(squeeze_chs, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(F.silu(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    """Inverted residual with squeeze-excitation; the residual branch is dropped per sample (stochastic depth)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, expand_ratio: int,
                 drop_path: float) -> None:
        super().__init__()
        hidden = in_chs * expand_ratio
        layers = _conv_bn(in_chs, hidden) if expand_ratio != 1 else []
        layers += _conv_bn(hidden, hidden, kernel_size, stride, groups=hidden)
        # The SE bottleneck is a quarter of the block's *input* width, as in the reference code.
        layers += [SqueezeExcite(hidden, max(1, in_chs // 4)), *_conv_bn(hidden, out_chs, act=False)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_chs == out_chs
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if not self.use_residual:
            return out
        return x + stochastic_depth(out, self.drop_path, "row", self.training)


class EfficientNetCifar(nn.Module):
    """EfficientNet with 8x total downsampling for 32x32 inputs."""

    def __init__(self, num_classes: int, in_chans: int = 3, width_mult: float = 1.0, depth_mult: float = 1.0,
                 dropout: float = 0.2, stochastic_depth_prob: float = 0.2) -> None:
        super().__init__()
        in_chs = make_divisible(32 * width_mult)
        self.stem = nn.Sequential(*_conv_bn(in_chans, in_chs, 3, 1))
        repeats = [math.ceil(n * depth_mult) for *_, n in B0_STAGES]
        total, block_id = sum(repeats), 0
        for i, ((t, k, s, c, _), n) in enumerate(zip(B0_STAGES, repeats)):
            out_chs = make_divisible(c * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(MBConv(in_chs, out_chs, k, s if j == 0 else 1, t,
                                     stochastic_depth_prob * block_id / total))
                in_chs, block_id = out_chs, block_id + 1
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.conv_head = nn.Sequential(*_conv_bn(in_chs, 4 * in_chs))
        self.head = nn.Linear(4 * in_chs, num_classes)
        self.dropout = dropout
        self._layers = [f"layer{i + 1}" for i in range(len(B0_STAGES))]
        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> feature map of ``conv_head``."""
        x = self.stem(x)
        for name in self._layers:
            x = self._modules[name](x)
        return self.conv_head(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits (global average pool, dropout, linear)."""
        return self.head(F.dropout(x.mean(dim=(2, 3)), self.dropout, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(family="efficientnet", source="Tan & Le 2019 (EfficientNet-B0..B3), strides for 32 px",
                head="head", min_img_size=8)
def efficientnet_b0_cifar(*, num_classes: int, in_chans: int = 3, img_size: int = 32, variant: str = "b0",
                          dropout: float | None = None, stochastic_depth_prob: float = 0.2) -> EfficientNetCifar:
    """EfficientNet for 32x32 inputs; ``variant`` (b0-b3) picks the compound scaling, ``dropout=None`` its default."""
    if variant not in VARIANTS:
        raise HarnessError(f"efficientnet_b0_cifar: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    width, depth, default_dropout = VARIANTS[variant]
    dropout = default_dropout if dropout is None else check_prob("efficientnet_b0_cifar", "dropout", dropout)
    sd = check_prob("efficientnet_b0_cifar", "stochastic_depth_prob", stochastic_depth_prob)
    return EfficientNetCifar(num_classes, in_chans, width, depth, dropout, sd)
