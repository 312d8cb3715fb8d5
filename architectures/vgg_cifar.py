"""VGG-16 with BatchNorm for 32x32 inputs.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015), configuration D, with BatchNorm after every conv; the CIFAR classifier of Liu and
Deng, "Very Deep Convolutional Neural Network Based Image Classification Using Small Training
Sample Size" (ACPR 2015): one 512-unit hidden layer (BN, dropout 0.5) instead of two of 4096.
14,987,722 parameters at 10 classes (the convs have no bias: BatchNorm follows).

At 32 px the five max-pools leave a 1x1 map; a global average pool in its place lets larger
inputs through without changing the classifier's size.

Top-level children: ``layer1``..``layer5`` (the five conv groups, each ending in a max-pool),
``fc`` (the hidden layer) and ``head``.
"""

from __future__ import annotations

import torch
from torch import nn

from architectures.layers import check_prob, conv_block
from architectures.registry import register_model

# Configuration D: conv widths per group; each group ends in a 2x2 max-pool.
VGG16_GROUPS: list[list[int]] = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


class VGGCifar(nn.Module):
    """VGG conv groups (conv3x3-BN-ReLU, max-pool), global average pool, FC 512, linear head."""

    def __init__(self, num_classes: int, in_chans: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        in_chs = in_chans
        for i, widths in enumerate(VGG16_GROUPS):
            layers = []
            for j, w in enumerate(widths):
                last = j == len(widths) - 1
                layers.append(conv_block(in_chs, w, 3, batch_norm=True, pool=last))
                in_chs = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.fc = nn.Sequential(nn.Linear(in_chs, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(dropout))
        self.head = nn.Linear(512, num_classes)
        self._layers = [f"layer{i + 1}" for i in range(len(VGG16_GROUPS))]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> 512-channel feature map (1x1 at 32 px)."""
        for name in self._layers:
            x = self._modules[name](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits."""
        return self.head(self.fc(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(family="vgg", source="Simonyan & Zisserman 2015 (VGG-16 BN), CIFAR head of Liu & Deng 2015",
                head="head", min_img_size=32)
def vgg16_bn_cifar(*, num_classes: int, in_chans: int = 3, img_size: int = 32, dropout: float = 0.5) -> VGGCifar:
    """VGG-16 with BatchNorm and a 512-unit classifier for 32x32 inputs (14.99M params)."""
    return VGGCifar(num_classes, in_chans, check_prob("vgg16_bn_cifar", "dropout", dropout))
