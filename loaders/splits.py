"""``load_splits``: from ``DataOptions`` to train / val / test splits with their metadata.

The order of operations is fixed and matters:

1. read the official train and test splits (through the decode cache);
2. ``subset``: keep the first N images of each class, in both splits;
3. ``grayscale`` and ``img_size``;
4. carve the validation split from the training split only (stratified and seeded, or fold
   ``fold`` of a stratified K-fold); the test split is never touched, so no model is ever
   selected on it;
5. mean/std per channel from what remains for training (so validation pixels do not leak
   into the normalisation either).
"""

from __future__ import annotations

import numpy as np
import torch

from harness.errors import DataError, HarnessError
from loaders.reader import read_raw
from loaders.transforms import channel_stats, resize, to_grayscale
from loaders.types import DataOptions, DatasetMeta, SplitData, Splits


def validate_options(opts: DataOptions) -> None:
    """Reject impossible option values with one line.

    Raises:
        HarnessError: an option is out of range or options conflict.
    """
    if not 0.0 <= opts.val_fraction < 1.0:
        raise HarnessError(f"val_fraction must be in [0, 1), got {opts.val_fraction}")
    if opts.folds < 0 or opts.folds == 1:
        raise HarnessError(f"folds must be 0 (off) or >= 2, got {opts.folds}")
    if opts.folds and not 0 <= opts.fold < opts.folds:
        raise HarnessError(f"fold must be in [0, {opts.folds}), got {opts.fold}")
    if not opts.folds and opts.fold:
        raise HarnessError(f"fold={opts.fold} needs folds >= 2")
    if opts.subset is not None and opts.subset < 1:
        raise HarnessError(f"subset must be >= 1 images per class, got {opts.subset}")
    if opts.img_size is not None and opts.img_size < 1:
        raise HarnessError(f"img_size must be >= 1, got {opts.img_size}")
    if opts.seed < 0:
        raise HarnessError(f"seed must be >= 0, got {opts.seed}")
    if opts.synthetic_size is not None and opts.dataset != "synthetic":
        raise HarnessError(f"synthetic_size applies only to the synthetic dataset, not {opts.dataset}")


def first_per_class(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (ascending) of the first ``n`` samples of each class."""
    keep = [torch.nonzero(labels == c).flatten()[:n] for c in torch.unique(labels)]
    return torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.int64)


def _class_members(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Per class (ascending label), its indices in a seeded random order."""
    rng = np.random.default_rng([seed, 0x5A11])
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, val), ``val`` holding ``round(N * fraction)`` stratified by class.

    Each class gives ``floor(n_c * fraction)`` and the remainder goes to the classes with the
    largest fractional parts (the largest-remainder method), so MNIST's 60,000 give exactly 6,000.
    Both index tensors are ascending.
    """
    y = labels.numpy()
    members = _class_members(y, seed)
    quota = np.array([len(m) * fraction for m in members])
    take = np.floor(quota).astype(np.int64)
    extra = int(round(len(y) * fraction)) - int(take.sum())
    if extra > 0:
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:extra]] += 1
    val = np.concatenate([m[:t] for m, t in zip(members, take, strict=True)]) if members else np.zeros(0, np.int64)
    mask = np.zeros(len(y), dtype=bool)
    mask[val] = True
    return torch.from_numpy(np.flatnonzero(~mask)), torch.from_numpy(np.flatnonzero(mask))


def stratified_fold(labels: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, val) with ``val`` = fold ``fold`` of a stratified ``folds``-fold split.

    Within each class (seeded order) samples are dealt to folds round-robin, so fold sizes per
    class differ by at most one and the folds partition the training split.
    """
    y = labels.numpy()
    assign = np.empty(len(y), dtype=np.int64)
    for m in _class_members(y, seed):
        assign[m] = np.arange(len(m)) % folds
    mask = assign == fold
    return torch.from_numpy(np.flatnonzero(~mask)), torch.from_numpy(np.flatnonzero(mask))


def load_splits(opts: DataOptions) -> Splits:
    """Load a dataset and carve its splits (see the module docstring for the order of operations).

    Args:
        opts: which dataset and how to shape it.

    Returns:
        ``Splits(train, val, test, meta)``; images uint8 (N, C, H, W) on the CPU, labels int64.

    Raises:
        HarnessError: an unknown dataset or an impossible option.
        DataError: missing or corrupt files (one line naming the file and what to do).
    """
    validate_options(opts)
    raw = read_raw(opts)
    train_x, train_y, test_x, test_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    notes = [raw.note] if raw.note else []
    if opts.subset:
        keep = first_per_class(train_y, opts.subset)
        train_x, train_y = train_x[keep], train_y[keep]
        keep = first_per_class(test_y, opts.subset)
        test_x, test_y = test_x[keep], test_y[keep]
        notes.append(f"subset {opts.subset}/class")
    if opts.grayscale:
        train_x, test_x = to_grayscale(train_x), to_grayscale(test_x)
    if opts.img_size:
        train_x, test_x = resize(train_x, opts.img_size), resize(test_x, opts.img_size)
    if opts.folds:
        tr, va = stratified_fold(train_y, opts.folds, opts.fold, opts.seed)
        notes.append(f"fold {opts.fold}/{opts.folds}")
    else:
        tr, va = stratified_holdout(train_y, opts.val_fraction, opts.seed)
    if len(tr) == 0:
        raise DataError(f"{opts.dataset}: no training images left (subset={opts.subset}, "
                        f"val_fraction={opts.val_fraction}, folds={opts.folds})")
    train = SplitData(train_x[tr].contiguous(), train_y[tr].contiguous())
    val = SplitData(train_x[va].contiguous(), train_y[va].contiguous())
    test = SplitData(test_x.contiguous(), test_y.contiguous())
    mean, std = channel_stats(train.images)
    meta = DatasetMeta(
        name=opts.dataset, classes=raw.classes, mean=mean, std=std,
        shape=tuple(int(s) for s in train.images.shape[1:]),  # type: ignore[arg-type]
        source=raw.source, note="; ".join(notes), cache_dir=raw.cache_dir,
    )
    return Splits(train=train, val=val, test=test, meta=meta)
