"""Ctrl-C during a sweep, recorded by the harness so that no phase can swallow it.

Ray Tune installs a SIGINT handler when ``Tuner.fit`` starts and leaves it installed when ``fit``
returns. A Ctrl-C after the search (during its final checkpoint, ``ray.shutdown``, the planning of
phase two or the leaderboard merge) then only sets an event nobody reads: phase two ran to its end
and the sweep exited 0. So the sweep owns SIGINT from Ray's start to its last line:
:class:`SweepInterrupt` records each signal and, while a ``fit`` runs, asks Tune to stop through
Tune's own graceful path (the SIGUSR1 handler every ``fit`` installs, which saves the experiment);
Tune's SIGINT handler is disabled with ``TUNE_DISABLE_SIGINT_HANDLER``, Tune's documented switch.
A Ctrl-C that comes while ``fit`` starts, before Tune listens, is held and passed on at Tune's first
step (:func:`relay_to_tune`, called by the sweep's progress callback).
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

_ACTIVE: SweepInterrupt | None = None  # the sweep this process runs (one at a time), for relay_to_tune


class SweepInterrupt:
    """SIGINT's handler for the length of a sweep (a context manager); ``interrupted`` says one came."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signals: list[int] = []
        self._before: Any = None
        self._usr1_before: Any = None  # SIGUSR1's handler before the running fit; None outside a fit
        self._held = False  # a Ctrl-C came during this fit before Tune listened: pass it on at its first step

    @property
    def interrupted(self) -> bool:
        """True once a Ctrl-C (or a SIGTERM passed on as one) reached the sweep."""
        return bool(self.signals)

    def __enter__(self) -> SweepInterrupt:
        global _ACTIVE
        self._before = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        _ACTIVE = self
        return self

    def __exit__(self, *_exc: object) -> None:
        global _ACTIVE
        signal.signal(signal.SIGINT, self._before)
        _ACTIVE = None

    @contextlib.contextmanager
    def fit(self) -> Iterator[None]:
        """Around one ``Tuner.fit``: Tune's SIGINT handler stays off, SIGUSR1's is put back after."""
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._usr1_before = signal.getsignal(signal.SIGUSR1)
        # A Ctrl-C between the caller's last look at ``interrupted`` and here (building the Tuner takes a
        # while) is held too: Tune gets it at its first step instead of running the phase to its end.
        self._held = self.interrupted
        try:
            yield
        finally:
            signal.signal(signal.SIGUSR1, self._usr1_before)
            self._usr1_before = None
            self._held = False

    def _tune_stop(self) -> Any:
        """Tune's stop handler while a fit listens for one, else None."""
        handler = signal.getsignal(signal.SIGUSR1)
        if self._usr1_before is None or handler is self._usr1_before or not callable(handler):
            return None
        return handler

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, skipping the final save and merge
        self.signals.append(signum)
        tune_stop = self._tune_stop()
        if tune_stop is not None:
            tune_stop(signal.SIGUSR1, frame)  # Tune ends the experiment after saving its state
        elif self._usr1_before is not None:
            self._held = True  # fit is starting: relay_to_tune passes it on once Tune listens
        print(f"sweep {self.name}: interrupted; finishing what ran (Ctrl-C again to stop now)", file=sys.stderr,
              flush=True)


def relay_to_tune() -> None:
    """Pass a held Ctrl-C to Tune, which now listens (called at each Tune step); nothing otherwise."""
    stop = _ACTIVE
    if stop is None or not stop._held:
        return
    tune_stop = stop._tune_stop()
    if tune_stop is not None:
        stop._held = False
        tune_stop(signal.SIGUSR1, None)
