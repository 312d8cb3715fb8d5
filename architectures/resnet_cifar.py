"""Residual networks for 32x32 inputs.

- ``resnet20/32/44/56``: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition"
  (CVPR 2016), section 4.2: a 3x3 conv to 16 channels, three stages of n basic blocks (16, 32, 64
  channels; depth 6n+2), global average pool, linear. Shortcuts are option A (identity, subsampled
  and zero-padded where the shape changes: no parameters), which gives the paper's 0.27M, 0.46M,
  0.66M and 0.85M parameters.
- ``resnet18_cifar``: ResNet-18 (same paper, Table 1) with a 3x3 stride-1 stem and no max-pool so
  32x32 inputs keep their resolution; option B (1x1 conv + BN) projection shortcuts; 11.17M.
- ``resnet9``: the DAWNBench ResNet-9 of David Page (Myrtle.ai), "How to train your ResNet" (2018):
  prep 64; 128 + pool + residual pair; 256 + pool; 512 + pool + residual pair; global max-pool;
  bias-free linear with logits scaled by 0.125; 6.57M.

Top-level children are ``stem`` (``prep`` for ResNet-9), ``layer1``..``layerN`` and ``head``, so
``--trainable head,layer3`` means the same thing across the family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from architectures.layers import check_positive
from architectures.registry import register_model


def _conv_bn(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_chs)]


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        # Pad the channel dim symmetrically, as in the reference implementations of option A.
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; ReLU after the sum."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_chs, out_chs, 3, stride)
        self.conv2, self.bn2 = _conv_bn(out_chs, out_chs, 3)
        if stride == 1 and in_chs == out_chs:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = nn.Sequential(*_conv_bn(in_chs, out_chs, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """3x3 stem, stages of basic blocks (the first block of each later stage strides by 2), GAP, linear."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_chans: int = 3,
                 shortcut: str = "A") -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_chans, widths[0]), nn.ReLU())
        in_chs = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_chs, width, stride if j == 0 else 1, shortcut))
                in_chs = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.head = nn.Linear(in_chs, num_classes)
        self._layers = [f"layer{i + 1}" for i in range(len(blocks))]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> last stage's feature map."""
        x = self.stem(x)
        for name in self._layers:
            x = self._modules[name](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits."""
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _resnet_he(depth: int, num_classes: int, in_chans: int) -> ResNetCifar:
    n = (depth - 2) // 6
    return ResNetCifar([n, n, n], [16, 32, 64], num_classes, in_chans, shortcut="A")


_HE = "He et al. 2016 (CIFAR ResNet, option A)"


@register_model(family="resnet", source=_HE, head="head", min_img_size=4)
def resnet20(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> ResNetCifar:
    """ResNet-20 for CIFAR (3 blocks per stage, 0.27M params)."""
    return _resnet_he(20, num_classes, in_chans)


@register_model(family="resnet", source=_HE, head="head", min_img_size=4)
def resnet32(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> ResNetCifar:
    """ResNet-32 for CIFAR (5 blocks per stage, 0.46M params)."""
    return _resnet_he(32, num_classes, in_chans)


@register_model(family="resnet", source=_HE, head="head", min_img_size=4)
def resnet44(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> ResNetCifar:
    """ResNet-44 for CIFAR (7 blocks per stage, 0.66M params)."""
    return _resnet_he(44, num_classes, in_chans)


@register_model(family="resnet", source=_HE, head="head", min_img_size=4)
def resnet56(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> ResNetCifar:
    """ResNet-56 for CIFAR (9 blocks per stage, 0.85M params)."""
    return _resnet_he(56, num_classes, in_chans)


@register_model(family="resnet", source="He et al. 2016 (ResNet-18), 3x3 stem, no max-pool", head="head",
                min_img_size=8)
def resnet18_cifar(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> ResNetCifar:
    """ResNet-18 with a CIFAR stem (11.17M params)."""
    return ResNetCifar([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_chans, shortcut="B")


class Residual(nn.Module):
    """``x + f(x)``."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _conv_bn_relu(in_chs: int, out_chs: int) -> list[nn.Module]:
    return [*_conv_bn(in_chs, out_chs), nn.ReLU()]


class ResNet9(nn.Module):
    """Page's DAWNBench ResNet-9: prep, three layers, global max-pool, scaled bias-free linear head."""

    def __init__(self, num_classes: int, in_chans: int = 3, logit_scale: float = 0.125) -> None:
        super().__init__()
        self.prep = nn.Sequential(*_conv_bn_relu(in_chans, 64))
        self.layer1 = nn.Sequential(*_conv_bn_relu(64, 128), nn.MaxPool2d(2),
                                    Residual(*_conv_bn_relu(128, 128), *_conv_bn_relu(128, 128)))
        self.layer2 = nn.Sequential(*_conv_bn_relu(128, 256), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(*_conv_bn_relu(256, 512), nn.MaxPool2d(2),
                                    Residual(*_conv_bn_relu(512, 512), *_conv_bn_relu(512, 512)))
        self.head = nn.Linear(512, num_classes, bias=False)
        # Page scales the logits down so the softmax starts soft with his high learning rates.
        self.logit_scale = logit_scale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> 512-channel feature map."""
        return self.layer3(self.layer2(self.layer1(self.prep(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits (global max-pool, linear, scale)."""
        return self.head(x.amax(dim=(2, 3))) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(family="resnet", source="Page 2018 (DAWNBench ResNet-9, Myrtle.ai)", head="head", min_img_size=8)
def resnet9(*, num_classes: int, in_chans: int = 3, img_size: int = 32, logit_scale: float = 0.125) -> ResNet9:
    """ResNet-9 (6.57M params); ``logit_scale`` multiplies the logits (Page's 0.125)."""
    return ResNet9(num_classes, in_chans, check_positive("resnet9", "logit_scale", logit_scale))
