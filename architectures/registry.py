"""The model registry: ``register_model``, ``create_model``, ``list_models``, ``model_info``.

timm style: every model file registers small builder functions with a decorator that carries the
model's metadata (family, source, input sizes, head path). ``create_model`` is the one constructor
callers use; it validates the common arguments and the model-specific keywords before building, so
bad input becomes one :class:`~harness.errors.HarnessError` line instead of a deep stack trace.

Input sizes: ``min_img_size`` is the smallest square input the design accepts, and never less than
the network's total downsampling factor (a 32x-downsampling ImageNet design accepts a 4 px image
through its padding, but its later stages would then see only padding).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from architectures.flops import count_mflops
from harness.errors import HarnessError
from harness.registry import Registry

# Arguments every builder takes; everything else in its signature is a model-specific keyword.
COMMON_ARGS = ("num_classes", "in_chans", "img_size")

# ModelInfo.params / .mflops describe the model as built with these arguments (and default_img_size).
INFO_NUM_CLASSES = 10
INFO_IN_CHANS = 3


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model.

    ``params``, ``mflops`` and ``stages`` are computed on first access (and cached) from the model
    built on the meta device with ``num_classes=10, in_chans=3, img_size=default_img_size``: no
    memory is allocated and no weights are initialised, so listing every model stays fast.

    Attributes:
        name: registry name.
        family: design family, e.g. ``"resnet"``.
        default_img_size: input side the design is meant for.
        min_img_size: smallest input side accepted (see the module docstring).
        in_chans: supported numbers of input channels.
        source: short reference for the design (paper or report).
        head: dotted path of the final classifier module (an ``nn.Linear``, or the 1x1
            ``nn.Conv2d`` of SqueezeNet / All-CNN-C); its first component is one of ``stages``.
        weights: names of the pretrained weights its builder accepts (``weights=NAME``); empty when
            there are none (the harness's own designs: use ``--init-from RUN_DIR`` instead).
        builder: the registered builder function.
    """

    name: str
    family: str
    default_img_size: int
    min_img_size: int
    in_chans: tuple[int, ...]
    source: str
    head: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    weights: tuple[str, ...] = ()

    def _meta_model(self) -> nn.Module:
        # Not cached itself: the info stays small and picklable (e.g. inside a Ray config).
        with torch.device("meta"):
            return self.builder(num_classes=INFO_NUM_CLASSES, in_chans=INFO_IN_CHANS,
                                img_size=self.default_img_size)

    @cached_property
    def params(self) -> int:
        """Parameter count at ``num_classes=10, in_chans=3, img_size=default_img_size``."""
        return sum(p.numel() for p in self._meta_model().parameters())

    @cached_property
    def mflops(self) -> float:
        """MFLOPs per image at the same input (multiply-add = 2 FLOPs, see :mod:`architectures.flops`)."""
        return count_mflops(self._meta_model(), INFO_IN_CHANS, self.default_img_size)

    @cached_property
    def stages(self) -> list[str]:
        """Names of the model's top-level children, in forward order (``--trainable`` / ``--freeze``)."""
        return [name for name, _ in self._meta_model().named_children()]

    @property
    def kwargs(self) -> dict[str, Any]:
        """The model-specific keywords the builder accepts, with their defaults."""
        return _builder_kwargs(self.builder)

    def to_dict(self) -> dict[str, Any]:
        """All metadata as a plain dict (computes ``params``, ``mflops`` and ``stages``)."""
        return {"name": self.name, "family": self.family, "default_img_size": self.default_img_size,
                "min_img_size": self.min_img_size, "in_chans": list(self.in_chans),
                "source": self.source, "params": self.params, "mflops": self.mflops, "head": self.head,
                "stages": self.stages, "kwargs": self.kwargs,
                "weights": list(self.weights)}


_MODELS: Registry[ModelInfo] = Registry("model")


def _builder_kwargs(builder: Callable[..., nn.Module]) -> dict[str, Any]:
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()
            if p.name not in COMMON_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def register_model(*, family: str, source: str, head: str, default_img_size: int = 32,
                   min_img_size: int = 1, in_chans: tuple[int, ...] = (1, 3),
                   name: str | None = None, weights: tuple[str, ...] = ()) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``name`` (default: the function's name).

    The builder must take keyword arguments ``num_classes``, ``in_chans`` and ``img_size`` plus
    any model-specific keywords with defaults (no ``**kwargs``: the signature is how unknown
    keywords are caught). ``weights`` names the pretrained weights it accepts as ``weights=NAME``.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        params = inspect.signature(fn).parameters
        missing = [a for a in COMMON_ARGS if a not in params]
        if missing or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise TypeError(f"model builder {fn.__name__} must take {', '.join(COMMON_ARGS)} and no **kwargs")
        if default_img_size < min_img_size:
            raise ValueError(f"{fn.__name__}: default_img_size {default_img_size} < min_img_size {min_img_size}")
        info = ModelInfo(name=name or fn.__name__, family=family, default_img_size=default_img_size,
                         min_img_size=min_img_size, in_chans=tuple(in_chans), source=source, head=head,
                         builder=fn, weights=tuple(weights))
        _MODELS.register(info.name, info)
        return fn

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the glob ``pattern`` (e.g. ``"resnet*"``), sorted."""
    return _MODELS.names(pattern)


def model_info(name: str) -> ModelInfo:
    """Metadata of model ``name``.

    Raises:
        HarnessError: unknown name; the message names the closest valid names.
    """
    return _MODELS.get(name)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def create_model(name: str, *, num_classes: int, in_chans: int = 3, img_size: int | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build model ``name`` with a fresh ``num_classes``-way head.

    Args:
        name: a registered name (see :func:`list_models`).
        num_classes: number of output logits, a positive int.
        in_chans: input channels; one of ``model_info(name).in_chans``.
        img_size: input side in pixels, at least ``min_img_size``; ``None`` means the model's
            ``default_img_size`` (32 for all but the designs that need more, e.g. AlexNet).
            Models that flatten feature maps size their linear layers from it.
        **kwargs: model-specific keywords (see ``model_info(name).kwargs``).

    Returns:
        The model, in training mode, on the current default device.

    Raises:
        HarnessError: unknown name (naming the closest ones), unknown keyword (naming the accepted
            ones) or an invalid value.
    """
    info = _MODELS.get(name)
    if not _is_int(num_classes) or num_classes < 1:
        raise HarnessError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    if not _is_int(in_chans) or in_chans not in info.in_chans:
        raise HarnessError(f"{name}: in_chans must be one of {', '.join(map(str, info.in_chans))}, "
                           f"got {in_chans!r}")
    img_size = info.default_img_size if img_size is None else img_size
    if not _is_int(img_size) or img_size < info.min_img_size:
        raise HarnessError(f"{name}: img_size must be an int >= {info.min_img_size} "
                           f"(the smallest input the design accepts), got {img_size!r}")
    accepted = info.kwargs
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        shown = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise HarnessError(f"{name}: unknown keyword(s) {', '.join(unknown)}; accepted keywords: {shown}")
    return info.builder(num_classes=int(num_classes), in_chans=int(in_chans), img_size=int(img_size), **kwargs)
