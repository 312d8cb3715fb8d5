"""Plain CNNs from the reports this product replaces, plus LeNet.

Each is a stack of conv blocks (conv, [BN], activation, 2x2 max-pool, [dropout]) followed either by
a flatten (the linear layers are sized from ``img_size``) or by a global average pool, then fully
connected layers and a linear head. One class, :class:`PlainCNN`, holds them all; the builders
below only choose the stages. Parameter counts at ``num_classes=10`` (checked by the tests):

- ``basic_cnn``: 1,340,650 at 1x64x64 (the report's figure).
- ``vanilla_cnn``: 2,122,186 at 3x32x32.
- ``tiny_cnn``: 25,578 at 3x32x32 (the report says 20k to 26k).
- ``simple_cnn_bn``: 1,070,890 at 3x32x32. The optuna report states no count. Its convs have no
  bias because BatchNorm follows (BN's shift makes a bias redundant); with biased convs, as a
  Keras-style or default ``nn.Conv2d`` port would have, the same design has 1,070,986 (+96). An
  earlier test reference of 1,071,146 is this count plus 256, the FC layer's biases counted twice;
  no layout of the described layers reaches it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from architectures.layers import (
    check_feature_size,
    check_int,
    check_prob,
    conv_block,
    conv_out_size,
    fc_block,
    make_activation,
)
from architectures.registry import register_model
from harness.errors import HarnessError


class PlainCNN(nn.Module):
    """Named conv stages -> flatten or global average pool -> named FC stages -> dropout -> ``head``.

    The stages are the module's top-level children in forward order, so ``--trainable`` /
    ``--freeze`` can name them.
    """

    def __init__(self, conv_stages: dict[str, nn.Module], fc_stages: dict[str, nn.Module], head: nn.Linear,
                 *, global_pool: bool, head_dropout: float = 0.0) -> None:
        super().__init__()
        for name, module in {**conv_stages, **fc_stages}.items():
            self.add_module(name, module)
        self.head = head
        self._conv_names = list(conv_stages)
        self._fc_names = list(fc_stages)
        self.global_pool = global_pool
        self.head_dropout = head_dropout

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The conv stages: image -> feature map."""
        for name in self._conv_names:
            x = self._modules[name](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits."""
        x = x.mean(dim=(2, 3)) if self.global_pool else torch.flatten(x, 1)
        for name in self._fc_names:
            x = self._modules[name](x)
        if self.head_dropout > 0:
            x = F.dropout(x, self.head_dropout, self.training)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(family="plain-cnn", source="report: 3-block CNN (128/64/32 ch, k3/5/3) + FC 512/128",
                head="head", min_img_size=8)
def basic_cnn(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> PlainCNN:
    """Three conv blocks (128 k3, 64 k5, 32 k3; same padding, ReLU, 2x2 max-pool), FC 512, FC 128, head."""
    side = img_size // 8  # three floor-halving pools; same-padded convs keep the size
    convs = {"layer1": conv_block(in_chans, 128, 3), "layer2": conv_block(128, 64, 5),
             "layer3": conv_block(64, 32, 3)}
    fcs = {"fc1": fc_block(32 * side * side, 512), "fc2": fc_block(512, 128)}
    return PlainCNN(convs, fcs, nn.Linear(128, num_classes), global_pool=False)


@register_model(family="plain-cnn", source="report: 2-conv baseline (conv32, pool, conv64, pool, FC 512)",
                head="head", min_img_size=4)
def vanilla_cnn(*, num_classes: int, in_chans: int = 3, img_size: int = 32) -> PlainCNN:
    """conv3x3 32, ReLU, pool, conv3x3 64, ReLU, pool, FC 512, head."""
    side = img_size // 4
    convs = {"layer1": conv_block(in_chans, 32, 3), "layer2": conv_block(32, 64, 3)}
    return PlainCNN(convs, {"fc": fc_block(64 * side * side, 512)}, nn.Linear(512, num_classes), global_pool=False)


@register_model(family="plain-cnn", source="report: vanilla_cnn + BatchNorm, dropout around FC 256",
                head="head", min_img_size=4)
def simple_cnn_bn(*, num_classes: int, in_chans: int = 3, img_size: int = 32, dropout: float = 0.5,
                  filters1: int = 32, filters2: int = 64, kernel_size: int = 3, dense: int = 256) -> PlainCNN:
    """vanilla_cnn with BatchNorm after each conv and ``dropout`` before and after a ``dense``-unit FC layer.

    ``filters1``/``filters2``, ``kernel_size`` (odd, same padding) and ``dense`` are what the optuna
    report's search (O2) tunes; the defaults are its O1 model.
    """
    dropout = check_prob("simple_cnn_bn", "dropout", dropout)
    f1 = check_int("simple_cnn_bn", "filters1", filters1, 1)
    f2 = check_int("simple_cnn_bn", "filters2", filters2, 1)
    k = check_int("simple_cnn_bn", "kernel_size", kernel_size, 1)
    dense = check_int("simple_cnn_bn", "dense", dense, 1)
    if k % 2 == 0:
        raise HarnessError(f"simple_cnn_bn: kernel_size must be odd (same padding), got {k}")
    side = img_size // 4
    convs = {"layer1": conv_block(in_chans, f1, k, batch_norm=True),
             "layer2": conv_block(f1, f2, k, batch_norm=True)}
    fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(f2 * side * side, dense), nn.ReLU(), nn.Dropout(dropout))
    return PlainCNN(convs, {"fc": fc}, nn.Linear(dense, num_classes), global_pool=False)


@register_model(family="plain-cnn", source="report: tiny 2-conv CNN (20k-26k params)", head="head",
                min_img_size=4)
def tiny_cnn(*, num_classes: int, in_chans: int = 3, img_size: int = 32, activation: str = "relu") -> PlainCNN:
    """conv3x3 16, pool, conv3x3 32, pool, flattened straight into the linear head (25,578 params).

    ``activation`` is ``relu``, ``leaky_relu`` or ``elu`` (the kfold report's activation study, K2).
    """
    try:
        make_activation(activation)
    except HarnessError as e:
        raise HarnessError(f"tiny_cnn: {e}") from None
    side = img_size // 4
    convs = {"layer1": conv_block(in_chans, 16, 3, act=activation), "layer2": conv_block(16, 32, 3, act=activation)}
    return PlainCNN(convs, {}, nn.Linear(32 * side * side, num_classes), global_pool=False)


@register_model(family="plain-cnn", source="report: 5-stage conv/BN/pool CNN (64 to 1024 ch) + GAP",
                head="head", min_img_size=32)
def deep_cnn(*, num_classes: int, in_chans: int = 3, img_size: int = 32, activation: str = "leaky_relu",
             dropout: float = 0.2) -> PlainCNN:
    """Five stages (64, 128, 256, 512, 1024 ch) of conv3x3, BN, ``activation``, 2x2 max-pool, dropout; GAP; head.

    ``activation`` is ``relu``, ``leaky_relu`` (PyTorch's default slope 0.01) or ``elu``.
    """
    try:  # validate the name up front, so the error names this model and is raised once
        make_activation(activation)
    except HarnessError as e:
        raise HarnessError(f"deep_cnn: {e}") from None
    dropout = check_prob("deep_cnn", "dropout", dropout)
    widths = [in_chans, 64, 128, 256, 512, 1024]
    convs = {f"layer{i + 1}": conv_block(widths[i], widths[i + 1], 3, batch_norm=True, act=activation,
                                         dropout=dropout) for i in range(5)}
    return PlainCNN(convs, {}, nn.Linear(1024, num_classes), global_pool=True)


@register_model(family="lenet", source="LeCun et al. 1998 (LeNet-5 layout, ReLU, one hidden FC)", head="head",
                min_img_size=16)
def lenet_cnn(*, num_classes: int, in_chans: int = 3, img_size: int = 32, kernel_size: int = 5,
              padding: int = 0, stride: int = 1) -> PlainCNN:
    """conv 6, ReLU, pool, conv 16, ReLU, pool, FC 120, head; both convs use ``kernel_size/padding/stride``.

    ``min_img_size`` (16) holds for the defaults; other settings are checked against ``img_size``.
    """
    kernel_size = check_int("lenet_cnn", "kernel_size", kernel_size, 1)
    padding = check_int("lenet_cnn", "padding", padding, 0)
    stride = check_int("lenet_cnn", "stride", stride, 1)
    side = img_size
    for _ in range(2):
        side = conv_out_size(side, kernel_size, stride, padding) // 2
    check_feature_size("lenet_cnn", side, img_size)
    convs = {"layer1": conv_block(in_chans, 6, kernel_size, stride=stride, padding=padding),
             "layer2": conv_block(6, 16, kernel_size, stride=stride, padding=padding)}
    return PlainCNN(convs, {"fc": fc_block(16 * side * side, 120)}, nn.Linear(120, num_classes), global_pool=False)
