"""A config on synthetic images of its own shape, and how many steps of it are timed.

Shared by the cost measure (:mod:`harness.report.costs`) and the layout/precision probe
(:mod:`harness.run.probe`), which both time a few training steps of a run's exact configuration.
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
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


#: Cores' worth of other processes' CPU above which a timing counts as taken beside other work.
BUSY_CPUS = 0.3


def _cpu_busy_s() -> float | None:
    """Seconds of CPU the whole machine has spent busy since boot (Linux ``/proc/stat``), None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        return None


class OthersMeter:
    """How many cores' worth of CPU *other* processes used while the ``with`` block ran (``.cpus``; None
    where the machine does not say).

    The load average cannot tell: it counts this process too, and lags a minute behind, so a rate timed just
    after other work looks busy and one timed beside a job that has just begun looks idle. This is the
    machine's busy CPU time over the block minus this process's own (all its threads).
    """

    cpus: float | None = None

    def __enter__(self) -> OthersMeter:
        self._busy, self._own, self._t = _cpu_busy_s(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        busy = _cpu_busy_s()
        if busy is not None and self._busy is not None:
            wall = max(time.perf_counter() - self._t, 1e-6)
            self.cpus = max(0.0, (busy - self._busy) - (time.process_time() - self._own)) / wall


def others_busy_now(seconds: float = 1.0) -> float | None:
    """Cores' worth of CPU other processes use now, over ``seconds`` (None where the machine does not say)."""
    with OthersMeter() as m:
        time.sleep(seconds)
    return m.cpus
