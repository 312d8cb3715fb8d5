"""Building blocks and argument checks shared by the model files.

``conv_block`` is the conv -> [BN] -> activation -> [max-pool] -> [dropout] unit that the plain
CNNs from the reports are made of; the ``check_*`` helpers turn a bad model-specific keyword into a
one-line :class:`~harness.errors.HarnessError` naming the model and the argument.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

from torch import nn

from harness.errors import HarnessError
from harness.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu", nn.ReLU)
ACTIVATIONS.register("leaky_relu", nn.LeakyReLU)
ACTIVATIONS.register("elu", nn.ELU)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by registry name (``relu``, ``leaky_relu``, ``elu``).

    Raises:
        HarnessError: unknown name, naming the valid ones.
    """
    return ACTIVATIONS.get(name)()


def conv_block(in_chs: int, out_chs: int, kernel_size: int = 3, *, stride: int = 1, padding: int | None = None,
               batch_norm: bool = False, act: str = "relu", pool: bool = True,
               dropout: float = 0.0) -> nn.Sequential:
    """conv -> [BatchNorm] -> activation -> [2x2 max-pool] -> [dropout].

    ``padding=None`` means "same" padding (``kernel_size // 2``) for odd kernels. The conv has no
    bias when BatchNorm follows, since BN's shift makes it redundant.
    """
    padding = kernel_size // 2 if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding,
                                         bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_chs))
    layers.append(make_activation(act))
    if pool:
        layers.append(nn.MaxPool2d(2))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def fc_block(in_features: int, out_features: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU -> [dropout]: the hidden fully connected layer of the plain CNNs and the MLP."""
    layers: list[nn.Module] = [nn.Linear(in_features, out_features), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def conv_out_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling layer (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def check_int(model: str, arg: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``, else a HarnessError naming ``model`` and ``arg``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        bound = f"an int in [{lo}, {hi}]" if hi is not None else f"an int >= {lo}"
        raise HarnessError(f"{model}: {arg} must be {bound}, got {value!r}")
    return int(value)


def check_prob(model: str, arg: str, value: object) -> float:
    """``value`` as a probability in ``[0, 1)`` (dropout rates), else a HarnessError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) < 1.0:
        raise HarnessError(f"{model}: {arg} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_positive(model: str, arg: str, value: object) -> float:
    """``value`` as a positive float (width multipliers, scales), else a HarnessError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or float(value) <= 0:
        raise HarnessError(f"{model}: {arg} must be a positive number, got {value!r}")
    return float(value)


def check_feature_size(model: str, size: int, img_size: int) -> int:
    """Guard for designs that flatten feature maps: ``size`` (the final side) must be >= 1."""
    if size < 1:
        raise HarnessError(f"{model}: img_size {img_size} is too small for these settings "
                           f"(the feature map shrinks to nothing before the classifier)")
    return size


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never dropping more than 10%.

    The rule of the MobileNet/EfficientNet reference code, so scaled widths match torchvision's.
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new
