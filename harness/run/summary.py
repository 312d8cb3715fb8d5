"""``RunSummary``: what one run ended with, as one typed record that every consumer derives from.

The loop builds it once (:func:`harness.run.loop.finish`), ``summary.json`` stores it, a Tune trial
reports it as its last result, and the leaderboard row, the W&B run config and the CLI's summary line
are all read from its fields. This module is the only place that knows its keys as strings: everything
else uses attributes. Per-epoch rows (``metrics.csv``, Tune's epoch results) are :data:`EPOCH_COLUMNS`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.files import SUMMARY_FILE

#: The columns of ``metrics.csv`` and the keys of every per-epoch report, in order.
EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "train_img_per_s"]

# The one key every summary carries and no epoch row does: how a summary is told from an epoch report.
_MARKER = "stop_reason"


@dataclass
class RunSummary:
    """One run's outcome: what ran, what it scored (selected on validation, tested once), cost, provenance.

    Every field has a default so that a summary of a run that failed before training (``status:
    failed``) is still a ``RunSummary``.
    """

    # what ran
    arch: str = ""
    dataset: str = ""
    strategy: str = ""
    optimizer: str = ""
    scheduler: str = ""
    augment: str = ""
    epochs_planned: float | None = None
    epochs_run: int = 0
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    params: int | None = None
    mflops_per_img: float | None = None
    img_size: int | None = None
    in_chans: int | None = None
    num_train: int | None = None
    # what it scored: validation selects the epoch, the test split is evaluated once on it
    val_acc: float | None = None
    val_loss: float | None = None
    test_acc: float | None = None
    test_loss: float | None = None
    best_epoch: int = 0
    time_to_target_s: float | None = None  # wall clock from the start of setup (data loading included)
    timed_to_target_s: float | None = None  # the recipe's timed work only (RunState.timed_to_target_s)
    # plateau schedules only: how many times ReduceLROnPlateau cut the lr before an epoch that then trained
    # (a plateau run with 0 trained exactly as a constant-lr one)
    lr_reductions: int | None = None
    tta: str = "none"  # test-time augmentation of val and test: none | flip | flip_translate
    ema: str = "none"  # weight averaging evaluated: none | ema | lookahead
    # how it ended: completed | early_stop | target (train.stop_at_target) | budget | diverged | interrupted | error
    stop_reason: str = "completed"
    status: str = "ok"  # ok | diverged | failed
    error: str = ""
    # cost (a transfer run's train_s and total_s include its pretraining stage)
    train_s: float | None = None
    total_s: float | None = None
    cpu_s: float | None = None  # CPU time the run's process got (every thread), across restarts
    threads: int | None = None  # torch intra-op threads it trained with (a CPU run: the cores it owned)
    first_step_at: float | None = None  # unix time of the first optimizer step
    compile_s: float | None = None  # --compile: warm-up compilation, timed apart from the epochs
    whiten_s: float | None = None  # model.whiten: the whitening init
    val_s: float | None = None  # validation, every epoch together (with TTA)
    test_s: float | None = None  # the one test evaluation (with TTA)
    compiled_graphs: int | None = None  # --compile: graphs this run compiled (training, eval; + inference at 256)
    train_img_per_s: float | None = None  # median over epochs
    infer_img_per_s: float | None = None
    peak_mem_mb: float | None = None
    # where and with what
    device: str = ""
    hardware: str = ""
    world_size: int = 1
    precision: str = ""
    loader: str = ""
    torch: str = ""
    ray: str = ""
    git_sha: str = ""
    run_date: str = ""  # not `date`: Tune overwrites that key in every result with its own clock
    run_dir: str = ""
    config_hash: str = ""
    # transfer: stage one
    pretrain_dataset: str | None = None
    pretrain_val_acc: float | None = None
    pretrain_test_acc: float | None = None
    pretrain_train_s: float | None = None

    # -- reading and writing --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-safe data (the shape of ``summary.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        """The summary in ``d`` (a ``summary.json``, or a Tune result that carries one); other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @staticmethod
    def is_summary(row: dict[str, Any]) -> bool:
        """Whether a reported row is a run's summary (or a failure), as opposed to an epoch's metrics."""
        return _MARKER in row

    @classmethod
    def failure(cls, error: str) -> RunSummary:
        """The summary of a run that raised before it could finish (``status: failed``)."""
        return cls(stop_reason="error", status="failed", error=error)

    def write(self, run_dir: Path) -> Path:
        """Write ``summary.json`` into ``run_dir`` atomically (a reader never sees half a file)."""
        path = Path(run_dir) / SUMMARY_FILE
        tmp = path.with_name(f".{SUMMARY_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, run_dir: Path) -> RunSummary | None:
        """``summary.json`` of ``run_dir``, or None where there is none."""
        path = Path(run_dir) / SUMMARY_FILE
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None

    # -- derived views ---------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def diverged(self) -> bool:
        return self.status == "diverged" or self.stop_reason == "diverged"

    def with_pretraining(self, pre: RunSummary) -> RunSummary:
        """This stage-two summary with transfer's stage one folded in: its time counts toward the cost."""
        return dataclasses.replace(
            self, pretrain_dataset=pre.dataset, pretrain_val_acc=pre.val_acc, pretrain_test_acc=pre.test_acc,
            pretrain_train_s=pre.train_s, train_s=(self.train_s or 0.0) + (pre.train_s or 0.0),
            total_s=(self.total_s or 0.0) + (pre.total_s or 0.0),
            cpu_s=None if self.cpu_s is None else self.cpu_s + (pre.cpu_s or 0.0))

    @property
    def timed_s(self) -> float | None:
        """The whole recipe as the speed records time it: whitening, training and the test's TTA evaluation."""
        if self.train_s is None:
            return None
        return (self.whiten_s or 0.0) + self.train_s + (self.test_s or 0.0)

    def provenance(self) -> dict[str, Any]:
        """Where and with what it ran: the provenance columns of a leaderboard row."""
        return {"device": self.device, "hardware": self.hardware, "torch": self.torch, "ray": self.ray,
                "git_sha": self.git_sha, "world_size": self.world_size}

    def cli_line(self) -> str:
        """The one line ``harness run`` prints at the end."""
        keys = ["arch", "dataset", "strategy", "stop_reason", "epochs_run", "best_epoch", "val_acc", "test_acc",
                "test_loss", "tta", "time_to_target_s", "total_s", "train_img_per_s", "world_size", "device"]
        d = self.to_dict()
        return "summary: " + "  ".join(f"{k}={_fmt(d[k])}" for k in keys)

    @staticmethod
    def text_keys() -> list[str]:
        """The fields that describe a run rather than measure it (W&B puts them in the run's config)."""
        return [f.name for f in dataclasses.fields(RunSummary) if f.type in ("str", "str | None")]


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
