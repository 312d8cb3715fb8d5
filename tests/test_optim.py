"""Optimizer and scheduler registries: every name builds, steps where it should, and lookups help."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.run.config import OptimConfig, SchedConfig
from harness.run.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    build_optimizer,
    build_schedule,
    param_groups,
    takes_warmup,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_steps(name):
    m = _model()
    c = OptimConfig(name=name, lr=0.01)
    opt = build_optimizer(param_groups(m, c, None, c.lr), c)
    before = m[3].weight.detach().clone()
    m(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    assert not torch.equal(before, m[3].weight)


# warm-up is refused by the schedules that declare none (plateau, onecycle, cyclic, ...; tested below)
@pytest.mark.parametrize("name,warmup", [(n, w) for n in SCHEDULERS.names() for w in (0.0, 1.0)
                                         if not (w and not takes_warmup(n))])
def test_every_scheduler_runs(name, warmup):
    m = _model()
    c = OptimConfig(lr=0.1)
    opt = build_optimizer(param_groups(m, c, None, c.lr), c)
    s = build_schedule(opt, SchedConfig(name=name, warmup_epochs=warmup, step_size=1, milestones=[1]), 3, 5)
    lrs = []  # the lr after every optimizer step, then after each epoch's end
    for _epoch in range(3):
        for _ in range(5):
            opt.step()
            s.step_batch()
            lrs.append(opt.param_groups[0]["lr"])
        s.step_epoch(val_loss=1.0)  # never improves after the first epoch: plateau (patience 2) waits
        lrs.append(opt.param_groups[0]["lr"])
    assert all(lr >= 0 for lr in lrs)
    if name in ("step", "multistep", "exponential", "cosine", "linear", "poly"):
        assert lrs[-1] < 0.1  # decayed
    if name in ("constant", "plateau") and not warmup:
        assert set(lrs) == {0.1}  # plateau: 2 epochs without improvement are not more than its patience of 2
    else:
        assert len(set(lrs)) > 1, f"{name} never changed the lr: {lrs}"
    assert s.interval == ("epoch" if name in ("step", "multistep", "exponential", "plateau") else "step")


def test_plateau_reduces_after_patience_epochs_without_improvement():
    m = _model()
    opt = build_optimizer(param_groups(m, OptimConfig(lr=0.1), None, 0.1), OptimConfig(lr=0.1))
    s = build_schedule(opt, SchedConfig(name="plateau", patience=1, gamma=0.5), 5, 1)
    lrs = []
    for loss in (1.0, 0.9, 0.95, 0.97, 0.99):  # improves once, then two epochs without improvement: > patience 1
        s.step_epoch(val_loss=loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])


def test_warmup_rejected_with_onecycle():
    m = _model()
    c = OptimConfig()
    opt = build_optimizer(param_groups(m, c, None, c.lr), c)
    with pytest.raises(HarnessError, match="warmup"):
        build_schedule(opt, SchedConfig(name="onecycle", warmup_epochs=1), 3, 5)


def test_unknown_names_suggest():
    with pytest.raises(HarnessError, match="did you mean adam"):
        OPTIMIZERS.get("adan")
    with pytest.raises(HarnessError, match="valid: .*cosine"):
        SCHEDULERS.get("nope")


def test_groups_head_body_and_no_decay():
    m = _model()
    c = OptimConfig(lr=0.1, head_lr=0.1, body_lr=0.001, no_decay_bn_bias=True, weight_decay=1e-4)
    groups = {g["name"]: g for g in param_groups(m, c, "3", c.lr)}
    assert groups["head"]["lr"] == 0.1 and groups["body"]["lr"] == 0.001
    assert groups["body_no_decay"]["weight_decay"] == 0.0
    assert any(p is m[3].weight for p in groups["head"]["params"])
    assert any(p is m[3].bias for p in groups["head_no_decay"]["params"])
    assert any(p is m[1].weight for p in groups["body_no_decay"]["params"])


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_amsgrad_reaches_the_optimizer(name):
    """``--amsgrad`` (optim.amsgrad, also a matrix axis) builds AMSGrad: it keeps the running maximum."""
    from harness.cli import build_parser
    from harness.commands.run_cmd import resolve_config
    from harness.sweep.matrix import AXIS_ALIASES

    args = build_parser().parse_args(["run", "--optimizer", name, "--amsgrad"])
    c = resolve_config(args).optim
    assert c.amsgrad is True and AXIS_ALIASES["amsgrad"] == "optim.amsgrad"
    m = nn.Linear(4, 2)
    opt = build_optimizer(param_groups(m, c, None, c.lr), c)
    assert opt.param_groups[0]["amsgrad"] is True
    m(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    assert "max_exp_avg_sq" in opt.state[m.weight]
