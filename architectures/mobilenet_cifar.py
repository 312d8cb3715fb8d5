"""MobileNetV2 adapted to 32x32 inputs.

Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (CVPR 2018), Table 2, with torchvision's channel rounding for ``width_mult``. For
CIFAR-sized inputs the stem conv and the first strided stage (24 channels) use stride 1 instead of 2,
so the network downsamples 8x (4x4 maps at 32 px) rather than 32x; the parameters are unchanged
(2,236,682 at width 1.0 and 10 classes).

Top-level children: ``stem``, ``layer1``..``layer7`` (one per row of Table 2), ``conv_head`` (the
1x1 conv to 1280 channels) and ``head`` (the linear classifier, after global average pool and
dropout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from architectures.layers import check_positive, check_prob, make_divisible
from architectures.registry import register_model

# (expansion t, output channels c, repeats n, stride s): Table 2, with the strides for 32 px inputs.
CIFAR_SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def _conv_bn_relu6(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs), nn.ReLU6()]


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_chs * expand_ratio
        layers = _conv_bn_relu6(in_chs, hidden) if expand_ratio != 1 else []
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        # The projection is linear: a ReLU on the narrow bottleneck would destroy information (sec. 3.2).
        layers += [nn.Conv2d(hidden, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 with 8x total downsampling for 32x32 inputs."""

    def __init__(self, num_classes: int, in_chans: int = 3, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_chs = make_divisible(32 * width_mult)
        self.stem = nn.Sequential(*_conv_bn_relu6(in_chans, in_chs, 3, 1))
        for i, (t, c, n, s) in enumerate(CIFAR_SETTINGS):
            out_chs = make_divisible(c * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(in_chs, out_chs, s if j == 0 else 1, t))
                in_chs = out_chs
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        # Like the paper, the last conv never narrows below 1280 for width multipliers < 1.
        last = make_divisible(1280 * max(1.0, width_mult))
        self.conv_head = nn.Sequential(*_conv_bn_relu6(in_chs, last))
        self.head = nn.Linear(last, num_classes)
        self.dropout = dropout
        self._layers = [f"layer{i + 1}" for i in range(len(CIFAR_SETTINGS))]
        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> 1280-channel feature map."""
        x = self.stem(x)
        for name in self._layers:
            x = self._modules[name](x)
        return self.conv_head(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits (global average pool, dropout, linear)."""
        return self.head(F.dropout(x.mean(dim=(2, 3)), self.dropout, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(family="mobilenet", source="Sandler et al. 2018 (MobileNetV2), strides for 32 px", head="head",
                min_img_size=8)
def mobilenet_v2_cifar(*, num_classes: int, in_chans: int = 3, img_size: int = 32, width_mult: float = 1.0,
                       dropout: float = 0.2) -> MobileNetV2Cifar:
    """MobileNetV2 for 32x32 inputs; ``width_mult`` scales every width (2.24M params at 1.0)."""
    return MobileNetV2Cifar(num_classes, in_chans, check_positive("mobilenet_v2_cifar", "width_mult", width_mult),
                            check_prob("mobilenet_v2_cifar", "dropout", dropout))
