"""A config on synthetic images of its own shape, and how many steps of it are timed.

Shared by the cost measure (:mod:`harness.report.costs`) and the layout/precision probe
(:mod:`harness.run.probe`), which both time a few training steps of a run's exact configuration.
"""

from __future__ import annotations

import copy
import math
from typing import Any

#: The image size of each dataset as it is stored (a config's ``data.img_size`` unset).
NATIVE_SIZE = {"cifar10": 32, "mnist": 28, "imagenette": 64, "synthetic": 32}
WARMUP_STEPS, TIMED_STEPS, EVAL_BATCHES = 2, 4, 2
#: Steps are timed until this many seconds have passed (at least TIMED_STEPS, at most MAX_TIMED_STEPS): a
#: tiny model's 4 steps take milliseconds, too few to time.
TIMED_S, MAX_TIMED_STEPS = 1.5, 60


def probe_config(cfg: Any) -> Any:
    """``cfg`` on synthetic images of its own shape, enough for the warm-up, the timed steps and evaluation."""
    p = copy.deepcopy(cfg)
    need = (WARMUP_STEPS + MAX_TIMED_STEPS + 1) * p.train.batch_size
    n = min(max(math.ceil(need / 0.9), 10 * (EVAL_BATCHES + 1) * min(p.train.eval_batch_size, 256)), 20_000)
    p.data.img_size = cfg.data.img_size or NATIVE_SIZE.get(cfg.data.dataset, 32)
    p.data.grayscale = cfg.data.grayscale or cfg.data.dataset == "mnist"
    p.data.dataset, p.data.synthetic_size, p.data.subset = "synthetic", n, None
    p.data.folds, p.data.fold, p.data.val_fraction, p.data.num_classes = 0, 0, 0.1, 10
    p.train.progress, p.train.measure_inference, p.train.epochs = False, False, 1
    p.train.budget, p.train.max_steps, p.train.max_steps_per_epoch = None, None, None
    p.train.early_stop_patience, p.strategy.pretrain_epochs = None, None
    p.dist.workers = 0
    return p
