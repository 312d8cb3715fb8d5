"""torchvision's ImageNet designs, unchanged but for a ``num_classes`` head and optional 1-channel input.

Built with ``torchvision.models.get_model``: ``weights=None`` (the default) gives a randomly
initialised model with the new head; a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, or the
full ``"ResNet18_Weights.IMAGENET1K_V1"``) builds the pretrained 1000-class model, then replaces
its head. A path to a local torchvision-format state-dict file (``*.pth``/``*.pt``, as
``torch.save(model.state_dict(), path)`` writes it, or a downloaded hub checkpoint) does the same
offline: offline clusters and CI have no torch hub. With ``in_chans=1`` the first conv is replaced by a 1-channel one; pretrained RGB
filters are summed over their input channels, so a grey image replicated to RGB and the same image
as one channel give the same response.

These designs downsample 32x (AlexNet 32x with unpadded layers: it needs >= 63 px), so small
inputs reach the last stages as 1x1 maps; ``min_img_size`` says what each accepts, and the data
side resizes to it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from architectures.registry import model_info, register_model
from harness.errors import HarnessError


def _resolve_weights(name: str, tv_name: str, weights: object) -> tv_models.WeightsEnum:
    enum = tv_models.get_model_weights(tv_name)
    if isinstance(weights, enum):
        return weights
    key = str(weights).removeprefix(f"{enum.__name__}.")
    try:
        return enum[key]
    except KeyError:
        valid = ", ".join(["DEFAULT", *enum.__members__])
        raise HarnessError(f"{name}: unknown weights {weights!r}; valid: None, {valid}") from None


def is_weights_file(weights: object) -> bool:
    """Whether a ``--weights`` value names a local file rather than one of torchvision's enum names."""
    text = str(weights)
    return text.endswith((".pth", ".pt")) or "/" in text or text.startswith("~")


def _load_weights_file(name: str, tv_name: str, path_text: str) -> nn.Module:
    """torchvision's ``tv_name`` with the weights of a local state-dict file (its own head size kept)."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise HarnessError(f"{name}: --weights {path_text}: no such file (give a torchvision state-dict .pth, or a "
                           f"weights name: {', '.join(_weight_names(tv_name))})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input, named in one line
        raise HarnessError(f"{name}: --weights {path_text} is not a torch state-dict file "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a harness checkpoint also holds optimizer state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"{name}: --weights {path_text} holds no state dict of tensors")
    head = model_info(name).head
    out = state.get(f"{head}.weight")
    classes = int(out.shape[0]) if out is not None else 1000
    model = tv_models.get_model(tv_name, weights=None, num_classes=classes)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise HarnessError(f"{name}: --weights {path_text} does not fit {tv_name} "
                           f"({str(e).strip().splitlines()[-1].strip()})") from None
    if missing or unexpected:
        k = (missing or unexpected)[0]
        raise HarnessError(f"{name}: --weights {path_text} does not fit {tv_name} ({len(missing)} missing and "
                           f"{len(unexpected)} unexpected keys, e.g. {k})")
    return model


def _weight_names(tv_name: str) -> tuple[str, ...]:
    """The weights names torchvision offers for ``tv_name`` (``DEFAULT`` first)."""
    return ("DEFAULT", *(m for m in tv_models.get_model_weights(tv_name).__members__ if m != "DEFAULT"))


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    old = model.get_submodule(path)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    else:  # SqueezeNet's classifier is a 1x1 conv to the class maps
        new = nn.Conv2d(old.in_channels, num_classes, 1)
        nn.init.normal_(new.weight, 0.0, 0.01)  # torchvision's init for this layer
        nn.init.zeros_(new.bias)
    _set_module(model, path, new)


def _adapt_first_conv(model: nn.Module, in_chans: int, pretrained: bool) -> None:
    path, old = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, old.bias is not None)
    if pretrained:
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True).expand_as(new.weight))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    _set_module(model, path, new)


def _resize_input(size: int, module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the input batch resized (bilinear) to ``size`` x ``size``."""
    return (torch.nn.functional.interpolate(args[0], size=(size, size), mode="bilinear", align_corners=False),)


def _create_tv(name: str, tv_name: str, num_classes: int, in_chans: int, weights: object,
               resize_to: int | None = None) -> nn.Module:
    """Build torchvision's ``tv_name`` for registry model ``name``; see the module docstring.

    ``resize_to`` (the ``resize_to`` model keyword) resizes each input batch inside the model, as the
    reports' "input resized to ImageNet size" does: the split stays at its own size in memory (CIFAR-10
    at 224 px would be 6.8 GB as uint8), and module names, so --trainable/--freeze, are unchanged.
    """
    head = model_info(name).head
    if weights is None:
        model = tv_models.get_model(tv_name, weights=None, num_classes=num_classes)
    elif is_weights_file(weights):
        model = _load_weights_file(name, tv_name, str(weights))
        _replace_head(model, head, num_classes)
    else:
        resolved = _resolve_weights(name, tv_name, weights)
        try:
            model = tv_models.get_model(tv_name, weights=resolved)
        except OSError as e:  # urllib's URLError and socket errors are OSErrors
            cache = f"{torch.hub.get_dir()}/checkpoints"
            raise HarnessError(f"{name}: weights {resolved} are not in the torch cache ({cache}) and need internet "
                               f"to download ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                               ) from None
        _replace_head(model, head, num_classes)
    if in_chans != 3:
        _adapt_first_conv(model, in_chans, pretrained=weights is not None)
    if resize_to is not None:
        if not isinstance(resize_to, int) or isinstance(resize_to, bool) or resize_to < 1:
            raise HarnessError(f"{name}: resize_to must be a positive integer (pixels), got {resize_to!r}")
        model.register_forward_pre_hook(functools.partial(_resize_input, resize_to))
    return model


@register_model(family="resnet", source="torchvision: He et al. 2016 (ResNet-18)", head="fc", min_img_size=32,
                weights=_weight_names("resnet18"))
def tv_resnet18(*, num_classes: int, in_chans: int = 3, img_size: int = 32, weights: str | None = None,
    resize_to: int | None = None) -> nn.Module:
    """torchvision ResNet-18 with a ``num_classes`` head."""
    return _create_tv("tv_resnet18", "resnet18", num_classes, in_chans, weights, resize_to)


@register_model(family="vgg", source="torchvision: Simonyan & Zisserman 2015 (VGG-16)", head="classifier.6",
                min_img_size=32, weights=_weight_names("vgg16"))
def tv_vgg16(*, num_classes: int, in_chans: int = 3, img_size: int = 32, weights: str | None = None,
    resize_to: int | None = None) -> nn.Module:
    """torchvision VGG-16 (no BN; 4096-unit classifier) with a ``num_classes`` head."""
    return _create_tv("tv_vgg16", "vgg16", num_classes, in_chans, weights, resize_to)


@register_model(family="alexnet", source="torchvision: Krizhevsky 2014 (one weird trick AlexNet)",
                head="classifier.6", default_img_size=64, min_img_size=63, weights=_weight_names("alexnet"))
def tv_alexnet(*, num_classes: int, in_chans: int = 3, img_size: int = 64, weights: str | None = None,
    resize_to: int | None = None) -> nn.Module:
    """torchvision AlexNet with a ``num_classes`` head; its unpadded layers need >= 63 px."""
    return _create_tv("tv_alexnet", "alexnet", num_classes, in_chans, weights, resize_to)


@register_model(family="squeezenet", source="torchvision: Iandola et al. 2016 (SqueezeNet 1.1)",
                head="classifier.1", min_img_size=17, weights=_weight_names("squeezenet1_1"))
def tv_squeezenet1_1(*, num_classes: int, in_chans: int = 3, img_size: int = 32,
                     weights: str | None = None,
    resize_to: int | None = None) -> nn.Module:
    """torchvision SqueezeNet 1.1 with a ``num_classes`` 1x1-conv classifier."""
    return _create_tv("tv_squeezenet1_1", "squeezenet1_1", num_classes, in_chans, weights, resize_to)


@register_model(family="mobilenet", source="torchvision: Sandler et al. 2018 (MobileNetV2)", head="classifier.1",
                min_img_size=32, weights=_weight_names("mobilenet_v2"))
def tv_mobilenet_v2(*, num_classes: int, in_chans: int = 3, img_size: int = 32,
                    weights: str | None = None,
    resize_to: int | None = None) -> nn.Module:
    """torchvision MobileNetV2 (ImageNet strides) with a ``num_classes`` head."""
    return _create_tv("tv_mobilenet_v2", "mobilenet_v2", num_classes, in_chans, weights, resize_to)


@register_model(family="efficientnet", source="torchvision: Tan & Le 2019 (EfficientNet-B0)", head="classifier.1",
                min_img_size=32, weights=_weight_names("efficientnet_b0"))
def tv_efficientnet_b0(*, num_classes: int, in_chans: int = 3, img_size: int = 32,
                       weights: str | None = None,
    resize_to: int | None = None) -> nn.Module:
    """torchvision EfficientNet-B0 (ImageNet strides) with a ``num_classes`` head."""
    return _create_tv("tv_efficientnet_b0", "efficientnet_b0", num_classes, in_chans, weights, resize_to)
