"""``TrainState``: what the loop carries from one epoch to the next, and what a checkpoint restores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# The scalar fields a checkpoint stores under "state" (the rest travel as their own entries).
_SCALARS = ("epoch", "best_acc", "best_epoch", "best_loss", "wait", "time_to_target_s", "elapsed", "val_s",
            "timed_to_target_s", "cpu_s")


@dataclass
class TrainState:
    """The loop's progress: epochs done, the best validation epoch so far, early-stopping patience.

    Attributes:
        epoch: epochs finished.
        best_acc, best_epoch: the best validation accuracy and the epoch that reached it (selection).
        best_loss, wait: the best validation loss and epochs since it improved (early stopping).
        time_to_target_s: seconds from the start until val accuracy first reached ``train.target_acc``.
        elapsed: seconds of the run so far, across restarts.
        val_s: seconds of validation so far (with its TTA).
        timed_to_target_s: the recipe's timed work until val accuracy first reached ``train.target_acc``:
            whitening init, training epochs and that epoch's validation (see ``harness bench speed``).
        cpu_s: CPU seconds of the run's process so far (every thread), across restarts.
        history: one row per finished epoch (:data:`harness.run.summary.EPOCH_COLUMNS`).
        best_model: the weights of the best validation epoch, on the run's device (every rank holds them).
        stop_reason: why the loop ended: completed, early_stop, budget or diverged.
        first_step_at: unix time of the first optimizer step (``bench overhead`` reads it).
    """

    epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    best_loss: float = math.inf
    wait: int = 0
    time_to_target_s: float | None = None
    elapsed: float = 0.0
    val_s: float = 0.0
    timed_to_target_s: float | None = None
    cpu_s: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_model: dict | None = None
    stop_reason: str = "completed"
    first_step_at: float | None = None

    @property
    def train_s(self) -> float:
        """Seconds spent in training epochs (validation, checkpoints and the test excluded)."""
        return sum(r["epoch_s"] for r in self.history)

    def scalars(self) -> dict[str, Any]:
        """The scalar fields, as a checkpoint stores them."""
        return {k: getattr(self, k) for k in _SCALARS}

    @classmethod
    def from_checkpoint(cls, ck: dict) -> TrainState:
        """The state saved in a ``last.pt`` checkpoint."""
        return cls(**{k: v for k, v in ck["state"].items() if k in _SCALARS}, history=list(ck["history"]),
                   best_model=ck.get("best_model"))

    def improved(self, val_acc: float, val_loss: float, min_delta: float) -> bool:
        """Record one epoch's validation; True when it is the best accuracy so far (select it)."""
        if val_loss < self.best_loss - min_delta:
            self.best_loss, self.wait = val_loss, 0
        else:
            self.wait += 1
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch = val_acc, self.epoch + 1
            return True
        return False
