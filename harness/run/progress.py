"""Progress lines of one run: one line per epoch with an ETA, and an in-place batch counter on a terminal."""

from __future__ import annotations

import sys
import time


def fmt_s(s: float) -> str:
    """``1m05s`` / ``2h03m``: a duration for a progress line."""
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class RunProgress:
    """Per-epoch progress lines with an ETA, plus an in-place batch counter on a terminal."""

    def __init__(self, enabled: bool, epochs: int, tag: str) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stdout.isatty()
        self.epochs = epochs
        self.tag = tag
        self._last = 0.0

    def say(self, line: str) -> None:
        """Print a line of this run (with its rank tag) when progress is on."""
        if self.enabled:
            print(f"{self.tag}{line}", flush=True)

    def batch(self, epoch: int, step: int, total: int) -> None:
        """Redraw the batch counter, at most twice a second, on a terminal only."""
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last > 0.5:
            self._last = now
            print(f"\r{self.tag}epoch {epoch + 1}/{self.epochs} [{step}/{total}]", end="", flush=True)

    def epoch(self, row: dict, mean_epoch_s: float) -> None:
        """The line of one finished epoch."""
        if not self.enabled:
            return
        left = max(0.0, self.epochs - row["epoch"]) * mean_epoch_s  # (a fractional last epoch overshoots)
        print(("\r" if self.tty else "") +
              f"{self.tag}epoch {row['epoch']}/{self.epochs}  train loss {row['train_loss']:.4f} acc "
              f"{row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  lr {row['lr']:.3g}"
              f"  {row['epoch_s']:.1f}s {row['train_img_per_s']:.0f} img/s  ETA {fmt_s(left)}", flush=True)
