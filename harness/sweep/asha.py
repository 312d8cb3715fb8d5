"""ASHA's settings for a sweep's search phase: defaults that do not prune slow starters, and a warning.

Asynchronous successive halving judges trials at rungs and never resumes one it stopped. A judgement
made before a trial's learning-rate warm-up is over, or after a small slice of its budget, favours
whatever starts fast (a plain MLP over a ResNet), so the anchors judge late and rarely: the grace
period (the first rung) is at least the warm-up and about a third of the maximum epochs, and the
reduction factor is 3 (rungs at 1, 3, 9, ... times the grace period; a third go on at each).

A matrix's ``asha`` section or ``--grace-period`` / ``--reduction-factor`` may ask for less; that is
allowed, with one line saying why it is risky (:func:`asha_warning`).
"""

from __future__ import annotations

import math

#: The anchors' reduction factor.
REDUCTION_FACTOR = 3.0


def default_grace(max_epochs: int, warmup_epochs: float = 0.0) -> int:
    """The first rung: at least the warm-up, and about a third of the maximum epochs (at least 1)."""
    return max(1, math.ceil(warmup_epochs), round(max_epochs / 3))


def asha_params(max_epochs: int, grace: int | None, reduction_factor: float | None,
                warmup_epochs: float = 0.0) -> tuple[int, int, float]:
    """``(max_t, grace period, reduction factor)``: the ones asked for, else the defaults above."""
    g = grace if grace is not None else default_grace(max_epochs, warmup_epochs)
    rf = reduction_factor if reduction_factor is not None else REDUCTION_FACTOR
    return max_epochs, g, rf


def asha_warning(max_epochs: int, grace: int, reduction_factor: float, warmup_epochs: float = 0.0) -> str | None:
    """One line saying why the settings may prune slow starters; None when they follow the defaults or more."""
    if grace >= max_epochs:  # no rung before the last epoch: nothing is pruned
        return None
    why = []
    if grace < math.ceil(warmup_epochs):
        why.append(f"grace period {grace} ends before the {warmup_epochs:g}-epoch warm-up")
    elif grace < round(max_epochs / 3):
        why.append(f"grace period {grace} is under a third of the {max_epochs} epochs")
    if reduction_factor < REDUCTION_FACTOR:
        why.append(f"reduction factor {reduction_factor:g} < {REDUCTION_FACTOR:g} puts rungs closer together")
    if not why:
        return None
    return (f"warning: ASHA {' and '.join(why)}: trials are judged early, which favours fast starters over "
            f"slow ones that finish better (suggested: grace {default_grace(max_epochs, warmup_epochs)}, "
            f"reduction factor {REDUCTION_FACTOR:g})")
