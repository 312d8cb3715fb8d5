"""``ConvMuon``: Muon for convolution filters, Nesterov SGD for every other parameter (airbench94's Muon variant).

``torch.optim.Muon`` orthogonalises 2-D updates and refuses other shapes, so each 4-D filter bank
(out, in, kh, kw) is handed to it as a 2-D view (out, in x kh x kw) that shares the filter's storage:
Muon's in-place update is the filter's, and its momentum state is kept per view. A channels_last filter
(the CUDA default) is stored as (out, kh, kw, in), so its view's columns come in that order
(:func:`flat_order`); orthogonalising a matrix commutes with permuting its columns, so the update is the
same in either layout. The other parameters
(biases, BatchNorm, the linear head) take SGD with Nesterov momentum, with their groups' learning rates
and weight decay as built (:func:`harness.run.optim.param_groups`, :func:`~harness.run.optim.decouple`).

One optimizer to the loop: its ``param_groups`` are the real parameters (the SGD groups, then one
``conv_muon`` group), so schedules, clipping and the fp16 GradScaler see them as usual; each step
copies the groups' lr, momentum and weight decay to the inner optimizers first.
"""

from __future__ import annotations

from typing import Any

import torch

_SYNCED = ("lr", "momentum", "weight_decay")
_NCHW, _NHWC = (0, 1, 2, 3), (0, 2, 3, 1)


def flat_order(p: torch.Tensor) -> tuple[int, ...]:
    """The order of ``p``'s dimensions in memory: a 2-D view of ``p.permute(order)`` shares ``p``'s storage.

    Raises:
        ValueError: a filter in neither the contiguous nor the channels_last layout.
    """
    if p.is_contiguous():
        return _NCHW
    if p.is_contiguous(memory_format=torch.channels_last):
        return _NHWC
    raise ValueError(f"ConvMuon: a filter of shape {tuple(p.shape)} with strides {p.stride()} is neither "
                     "contiguous nor channels_last; make the model contiguous or channels_last first")


def _flat(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``t`` as (out, rest) with its columns in ``order``: a view where the layout allows, else a copy."""
    return t.permute(order).reshape(t.size(0), -1)


class ConvMuon(torch.optim.Optimizer):
    """Muon on 2-D views of the 4-D parameters of ``groups``, Nesterov SGD on the rest (see the module docstring).

    Args:
        groups: parameter groups (``params``, ``lr``, optional ``weight_decay`` and ``name``).
        lr, momentum, weight_decay: SGD's defaults for groups that do not set them.
        muon_lr, muon_momentum: Muon's, for the filters (no weight decay on them).
    """

    def __init__(self, groups: list[dict], *, lr: float, momentum: float, weight_decay: float, muon_lr: float,
                 muon_momentum: float) -> None:
        rest = [{**g, "params": [p for p in g["params"] if p.dim() != 4]} for g in groups]
        rest = [g for g in rest if g["params"]]
        filters = [p for g in groups for p in g["params"] if p.dim() == 4]
        outer = [*rest, *([{"params": filters, "lr": muon_lr, "momentum": muon_momentum, "weight_decay": 0.0,
                            "name": "conv_muon", "muon": True}] if filters else [])]
        super().__init__(outer, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "muon": False})
        # .view, not _flat: Muon updates these in place, so they must be the filters' own storage.
        self._orders = [flat_order(p) for p in filters]
        self._views = [p.detach().permute(o).view(p.size(0), -1) for p, o in zip(filters, self._orders)]
        self._sgd = (torch.optim.SGD([{k: v for k, v in g.items() if k != "muon"} for g in self._groups(False)],
                                     lr=lr, momentum=momentum, nesterov=momentum > 0) if rest else None)
        self._muon = (torch.optim.Muon(self._views, lr=muon_lr, momentum=muon_momentum, nesterov=True,
                                       weight_decay=0.0) if filters else None)

    def _groups(self, muon: bool) -> list[dict]:
        return [g for g in self.param_groups if bool(g.get("muon")) == muon]

    def _sync(self) -> None:
        """The outer groups' hyperparameters (a schedule changes them) into the inner optimizers' groups."""
        for inner, mine in ((self._sgd, self._groups(False)), (self._muon, self._groups(True))):
            if inner is not None:
                for gi, go in zip(inner.param_groups, mine):
                    gi.update({k: go[k] for k in _SYNCED})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step of both: the filters' gradients are handed to Muon as 2-D views."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync()
        if self._muon is not None:
            filters = self._groups(True)[0]["params"]
            for v, p, o in zip(self._views, filters, self._orders):
                # A gradient's layout need not be its parameter's; _flat orders its columns like the view's.
                v.grad = None if p.grad is None else _flat(p.grad, o)
            self._muon.step()
        if self._sgd is not None:
            self._sgd.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The outer groups and both inner optimizers' states."""
        return {"outer": super().state_dict(), "sgd": self._sgd.state_dict() if self._sgd else None,
                "muon": self._muon.state_dict() if self._muon else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        super().load_state_dict(state_dict["outer"])
        if self._sgd is not None:
            self._sgd.load_state_dict(state_dict["sgd"])
        if self._muon is not None:
            self._muon.load_state_dict(state_dict["muon"])
