"""Steady-state steps never wait on the device (issue 21, item 4), checked on the CPU at the dispatcher.

A host read of a tensor's value (``.item()``, ``float()``, ``bool()``, a Python ``if`` on a tensor) goes
through ``aten._local_scalar_dense``; on a GPU each is a synchronisation that stalls the launch queue.
CUDA's ``bincount`` also reads its input's min and max back internally, so evaluation must not call it.
A dispatch mode records every aten op that runs, so both are seen here without a GPU.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.files import LAST_CKPT
from harness.run.config import RunConfig, apply_overrides, epoch_count
from harness.run.loop import EpochStats, checkpoint_due, end_epoch, evaluate, local_context, setup
from harness.run.resolve import resolve
from harness.run.state import TrainState
from harness.run.strategies import set_train_mode

HOST_READS = {"aten._local_scalar_dense", "aten.bincount"}


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    def host_reads(self) -> dict[str, int]:
        return {k: v for k, v in self.ops.items() if k in HOST_READS}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = resolve(apply_overrides(RunConfig(), {
        "model.arch": "simple_cnn_bn", "data.dataset": "synthetic", "data.synthetic_size": 800,
        "train.batch_size": 32, "train.eval_batch_size": 16, "train.ema": "lookahead", "train.ema_every": 1,
        "train.grad_clip": 1.0, "sched.name": "onecycle", "train.label_smoothing": 0.1, "train.progress": False}))
    r = setup(cfg, Path(tmp_path_factory.mktemp("run")), local_context("cpu"))
    set_train_mode(r.model)
    r.train_loader.set_epoch(0)
    return r


def test_training_steps_read_nothing_back(run):
    batches = iter(run.train_loader)
    run.step(*next(batches))  # the first step may set things up
    with OpCounter() as c:
        for _ in range(4):
            run.step(*next(batches))  # batches come from the loader inside the count too
    assert c.ops["aten.convolution_backward"] >= 4, "the steps ran under the counter"
    assert c.host_reads() == {}, f"a training step reads the device back: {c.host_reads()}"


def test_evaluation_reads_back_once_per_evaluation_not_per_batch(run):
    val = list(run.val_loader)
    assert len(val) >= 3

    def reads(batches) -> dict[str, int]:
        with OpCounter() as c:
            evaluate(run.model, batches, run.num_classes, run.ctx)
        return c.host_reads()

    one, many = reads(val[:1]), reads(val)
    assert "aten.bincount" not in many, "CUDA's bincount syncs on its input's min and max: use index_add_"
    assert one == many, f"host reads grow with the batches: {one} for 1, {many} for {len(val)}"


class HostCopies(TorchDispatchMode):
    """Records every copy whose target is the host (``.to("cpu")``, ``.cpu()``); on a GPU each one waits."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if str(func.overloadpacket) == "aten._to_copy" and kwargs.get("device") == torch.device("cpu"):
            self.copies += 1
        return func(*args, **kwargs)


def test_an_improving_epoch_keeps_the_best_weights_on_the_device(run):
    # Issue 21: end_epoch copied the best weights to the host on every rank at every improving epoch (a CUDA
    # sync each time). They stay on the device; only rank 0's checkpoint writes move them, every few epochs.
    assert not checkpoint_due(1, epoch_count(run.cfg.train.epochs), run.cfg.train.checkpoint_every)
    state = TrainState()
    stats = EpochStats(loss=1.0, acc=0.5, n=64, seconds=0.1)
    with HostCopies() as c:
        end_epoch(run, state, stats, {"loss": 1.0, "acc": 0.5}, lambda *_: None, {})
    assert state.best_epoch == 1 and state.best_model is not None, "the epoch improved: its weights were kept"
    assert all(v.device == run.ctx.device for v in state.best_model.values())
    assert c.copies == 0, f"{c.copies} host copies at the end of an epoch that writes no checkpoint"
    assert not (run.run_dir / LAST_CKPT).exists()
