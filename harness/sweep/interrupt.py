"""Ctrl-C during a sweep, recorded by the harness so that no phase can swallow it.

Ray Tune installs a SIGINT handler when ``Tuner.fit`` starts and leaves it installed when ``fit``
returns. A Ctrl-C after the search (during its final checkpoint, ``ray.shutdown``, the planning of
phase two or the leaderboard merge) then only sets an event nobody reads: phase two ran to its end
and the sweep exited 0. So the sweep owns SIGINT from Ray's start to its last line:
:class:`SweepInterrupt` records each signal and, while a ``fit`` runs, asks Tune to stop through
Tune's own graceful path (the SIGUSR1 handler every ``fit`` installs, which saves the experiment);
Tune's SIGINT handler is disabled with ``TUNE_DISABLE_SIGINT_HANDLER``, Tune's documented switch.
The driver skips phase two and exits 130 once a signal was recorded. A second Ctrl-C stops at
once (``KeyboardInterrupt``), as Tune's second Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any


class SweepInterrupt:
    """SIGINT's handler for the length of a sweep (a context manager); ``interrupted`` says one came."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signals: list[int] = []
        self._before: Any = None
        self._usr1_before: Any = None  # SIGUSR1's handler before the running fit; None outside a fit

    @property
    def interrupted(self) -> bool:
        """True once a Ctrl-C (or a SIGTERM passed on as one) reached the sweep."""
        return bool(self.signals)

    def __enter__(self) -> SweepInterrupt:
        self._before = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._before)

    @contextlib.contextmanager
    def fit(self) -> Iterator[None]:
        """Around one ``Tuner.fit``: Tune's SIGINT handler stays off, SIGUSR1's is put back after."""
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._usr1_before = signal.getsignal(signal.SIGUSR1)
        try:
            yield
        finally:
            signal.signal(signal.SIGUSR1, self._usr1_before)
            self._usr1_before = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, skipping the final save and merge
        self.signals.append(signum)
        if self._usr1_before is not None:
            tune_stop = signal.getsignal(signal.SIGUSR1)
            if tune_stop is self._usr1_before or not callable(tune_stop):
                raise KeyboardInterrupt  # fit has not started any trial yet: nothing to save
            tune_stop(signal.SIGUSR1, frame)  # Tune ends the experiment after saving its state
        print(f"sweep {self.name}: interrupted; finishing what ran (Ctrl-C again to stop now)", file=sys.stderr,
              flush=True)
