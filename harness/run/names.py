"""The registries that config values name (models, datasets, loaders, optimizers, ...) and the check of such a value.

Apart from :mod:`harness.run.config` so that the config's types need no registry: the optimizers and
strategies that fill two of these registries import the config's types, and the config importing them
back made a circle.
"""

from __future__ import annotations

from typing import Any

from architectures import list_models
from harness.errors import ConfigError
from harness.registry import unknown_name_message
from harness.run.config import field_info
from harness.run.optim import OPTIMIZERS, SCHEDULERS
from harness.run.strategies import STRATEGIES
from loaders import AUGMENTATIONS, BACKENDS, DATASETS


def registry_names(kind: str) -> list[str]:
    """The valid names of a registry kind used by config fields (``model``, ``dataset``, ``loader``, ...)."""
    if kind == "model":
        return list_models()
    if kind in ("dataset", "loader", "augment"):
        reg = {"dataset": DATASETS, "loader": BACKENDS, "augment": AUGMENTATIONS}[kind]
        names = reg.names()
        return (["auto"] if kind == "loader" and "auto" not in names else []) + names
    if kind in ("optimizer", "scheduler"):
        return (OPTIMIZERS if kind == "optimizer" else SCHEDULERS).names()
    if kind == "strategy":
        return STRATEGIES.names()
    raise KeyError(kind)


_REGISTRY_LABELS = {"model": "model", "dataset": "dataset", "loader": "loader backend", "augment": "augmentation preset",
                   "optimizer": "optimizer", "scheduler": "scheduler", "strategy": "strategy"}


def registry_label(kind: str) -> str:
    """How an error message names a thing of registry ``kind`` (e.g. ``augmentation preset``)."""
    return _REGISTRY_LABELS[kind]


def check_name(key: str, value: Any, label: str | None = None) -> None:
    """Check a value of a registry- or choice-backed key (``label`` names the kind in the message).

    Raises:
        HarnessError: one line naming the closest and the valid choices.
    """
    f = field_info(key)
    if value is None or not (f.registry or f.choices):
        return
    valid = registry_names(f.registry) if f.registry else list(f.choices)
    if str(value) not in valid:
        label = label or (registry_label(f.registry) if f.registry else key)
        raise ConfigError(unknown_name_message(label, str(value), valid))
