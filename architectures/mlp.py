"""A plain multilayer perceptron baseline from the reports: flatten, ``depth - 1`` hidden layers, head.

No skip connections and no normalisation, as in the reports: it is the floor the CNNs are compared
against. At the defaults (depth 3, width 512, 3x32x32, 10 classes) it has 1,841,162 parameters.
"""

from __future__ import annotations

from torch import nn

from architectures.basic import PlainCNN
from architectures.layers import check_int, fc_block
from architectures.registry import register_model


@register_model(family="mlp", source="report: fully connected baseline (depth 2-8, no skips)", head="head")
def mlp(*, num_classes: int, in_chans: int = 3, img_size: int = 32, depth: int = 3, width: int = 512) -> PlainCNN:
    """``depth`` linear layers in all (2 to 8): ``depth - 1`` hidden layers of ``width`` units with ReLU, then the head."""
    depth = check_int("mlp", "depth", depth, 2, 8)
    width = check_int("mlp", "width", width, 1)
    features = in_chans * img_size * img_size
    hidden = {f"layer{i + 1}": fc_block(features if i == 0 else width, width) for i in range(depth - 1)}
    return PlainCNN({}, hidden, nn.Linear(width, num_classes), global_pool=False)
