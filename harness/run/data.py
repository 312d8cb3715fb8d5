"""From a run config to its data: the one place that turns ``cfg.data`` into :class:`loaders.DataOptions`
and into the training augmentation (:func:`augment_spec`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.run.config import RunConfig

if TYPE_CHECKING:
    from loaders import AugmentSpec, DataOptions, Splits


def data_options(cfg: RunConfig, *, dataset: str | None = None, img_size: int | None = None,
                 seed: int | None = None) -> DataOptions:
    """The loader options of ``cfg.data`` (``dataset``, ``img_size`` and ``seed`` override the config's).

    The split seed is the run's seed, so each seed also sees its own validation split.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    from loaders import DataOptions

    d = cfg.data
    return DataOptions(dataset=dataset or d.dataset, data_dir=d.data_dir, grayscale=d.grayscale,
                       img_size=img_size if img_size is not None else d.img_size, val_fraction=d.val_fraction,
                       subset=d.subset, seed=cfg.train.seed if seed is None else seed, download=d.download,
                       folds=d.folds, fold=d.fold, num_classes=d.num_classes, synthetic_size=d.synthetic_size)


def augment_spec(cfg: RunConfig) -> AugmentSpec:
    """The training augmentation: the preset ``data.augment`` with ``data.flip`` and ``data.translate`` applied."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    from loaders import AUGMENTATIONS
    from loaders.augment import with_options

    return with_options(AUGMENTATIONS.get(cfg.data.augment), cfg.data.flip, cfg.data.translate)


def load_data(cfg: RunConfig, min_img_size: int, announce: bool = False) -> tuple[Splits, Any]:
    """Load the splits, resized up to the model's minimum input size if needed.

    Returns:
        ``(splits, splits.meta)``.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    from loaders import load_splits

    splits = load_splits(data_options(cfg))
    if splits.meta.shape[-1] < min_img_size:
        if announce:
            print(f"data: resizing {cfg.data.dataset} from {splits.meta.shape[-1]} to {min_img_size} px, "
                  f"the minimum input size of {cfg.model.arch}", flush=True)
        splits = load_splits(data_options(cfg, img_size=min_img_size))
    return splits, splits.meta
