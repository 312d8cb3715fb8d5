"""Weight averaging: an exponential moving average of the weights, or lookahead (airbench94).

Both keep an average of the model's floating-point state (parameters and BatchNorm statistics) and update
it every ``every`` optimizer steps with decay ``decay ** every x (step / total) ** ramp``: the ramp keeps
the average close to the fast-moving early weights and lets it smooth more as training settles
(airbench's cubic ramp). ``lookahead`` then pulls the model back onto the average after each update
(arXiv 2404.00498, section 3.5; Zhang et al. 2019); ``ema`` leaves the model alone. Evaluation, selection
and ``best.pt`` use the averaged weights (:meth:`WeightAverager.swapped`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverager:
    """The averaged weights of one model (see the module docstring)."""

    def __init__(self, model: nn.Module, mode: str, decay: float, every: int, total_steps: int,
                 ramp: float = 3.0) -> None:
        if mode not in ("ema", "lookahead"):
            raise ValueError(f"weight averaging mode must be ema or lookahead, got {mode!r}")
        self.model, self.mode, self.decay, self.every, self.ramp = model, mode, decay, every, ramp
        self.total = max(1, total_steps)
        self.steps = 0
        self.avg = {k: v.detach().clone() for k, v in self._float_state().items()}

    def _float_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step ``step`` (1-based)."""
        return self.decay ** self.every * min(1.0, step / self.total) ** self.ramp

    @torch.no_grad()
    def step(self) -> None:
        """Call after every optimizer step; updates the average every ``every`` steps."""
        self.steps += 1
        if self.steps % self.every:
            return
        d = self.decay_at(self.steps)
        live = self._float_state()
        avg, cur = [self.avg[k] for k in live], list(live.values())
        # One multi-tensor kernel per update, not one launch per tensor (hundreds on a GPU).
        torch._foreach_lerp_(avg, cur, 1 - d)
        if self.mode == "lookahead":
            torch._foreach_copy_(cur, avg)

    def checkpoint(self) -> dict:
        """What ``last.pt`` keeps so a resumed run goes on averaging (not restarting from the live weights)."""
        return {"avg": self.avg, "steps": self.steps}

    def load_checkpoint(self, ck: dict) -> None:
        """Continue from :meth:`checkpoint`'s output (tensors moved to the model's device)."""
        self.steps = int(ck["steps"])
        for k, v in ck["avg"].items():
            self.avg[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state with the averaged tensors in place of the live ones (integer buffers as live)."""
        return {k: self.avg.get(k, v) for k, v in self.model.state_dict().items()}

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (evaluation), the live ones put back after."""
        live = {k: v.detach().clone() for k, v in self._float_state().items()}
        for k, v in self._float_state().items():
            v.copy_(self.avg[k])
        try:
            yield
        finally:
            for k, v in self._float_state().items():
                v.copy_(live[k])
