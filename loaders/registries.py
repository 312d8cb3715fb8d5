"""The three registries of the data package: datasets, loader backends and augmentation presets.

They live in their own module so that the modules that fill them (``cifar10.py``,
``tensor_loader.py``, ``augment.py``, ...) and the modules that read them import no cycle.
Every lookup goes through :meth:`harness.registry.Registry.get`, which names the closest choices.
"""

from __future__ import annotations

from typing import Any

from harness.registry import Registry

#: name -> reader ``(opts: DataOptions, data_dir: Path) -> RawData``
DATASETS: Registry[Any] = Registry("dataset")
#: name -> loader class with the ``build_loader`` keyword arguments
BACKENDS: Registry[Any] = Registry("loader backend")
#: name -> ``AugmentSpec``
AUGMENTATIONS: Registry[Any] = Registry("augmentation preset")
