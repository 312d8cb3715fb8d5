"""Agreements between real DDP ranks: two torch.distributed gloo processes on this CPU, no Ray.

Every rank must take the same decisions at the same step, or the next collective waits forever. These
tests give the ranks different views (a clock each) and check that they decide alike.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from datetime import timedelta
from pathlib import Path

import torch

WORLD = 2


def _budget_rank(rank: int, init_file: str, run_dir: str, out: mp.Queue) -> None:
    """One rank: a real run set up under a gloo group, whose budget deadline is its own (rank 1's has passed)."""
    import torch.distributed as dist

    from harness.run.config import RunConfig, apply_overrides
    from harness.run.loop import EpochStats, WorkerContext, setup, stop_reason
    from harness.run.resolve import resolve
    from harness.run.state import TrainState

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        cfg = resolve(apply_overrides(RunConfig(), {
            "data.dataset": "synthetic", "data.synthetic_size": 64, "model.arch": "tiny_cnn", "train.epochs": 3,
            "train.batch_size": 16, "train.budget": "1h", "train.progress": False, "dist.use_gpu": False}))
        run = setup(cfg, Path(run_dir), WorkerContext(rank, WORLD, 0, torch.device("cpu"), False))
        # The clocks disagree, deterministically: rank 1 is past its deadline at the end of the epoch,
        # rank 0 has an hour left (ranks start at different times, so their deadlines differ).
        run.deadline = time.monotonic() + (3600.0 if rank == 0 else -1.0)
        reason = stop_reason(run, TrainState(), EpochStats(loss=1.0, acc=0.5, n=64, seconds=0.1))
        out.put((rank, reason))
    finally:
        dist.destroy_process_group()


def _run_ranks(target, tmp_path: Path) -> list:
    """Run ``target(rank, init_file, run_dir, queue)`` on WORLD spawned processes; what each put on the queue."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = str(tmp_path / "gloo-init")
    procs = [ctx.Process(target=target, args=(r, init, str(tmp_path / "run"), out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        got = [out.get(timeout=240) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                os.kill(p.pid, 9)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return got


def test_ranks_agree_to_stop_on_the_budget_when_their_clocks_disagree(tmp_path):
    reasons = dict(_run_ranks(_budget_rank, tmp_path))
    assert reasons == {0: "budget", 1: "budget"}, (
        f"one rank stopping alone leaves the other in the next epoch's collectives: {reasons}")


def _bn_rank(rank: int, init_file: str, run_dir: str, out: mp.Queue) -> None:
    """One rank: a few DDP steps on its own batches, then a validation; sends its BatchNorm statistics."""
    import torch.distributed as dist

    from harness.run.config import RunConfig, apply_overrides
    from harness.run.loop import WorkerContext, setup
    from harness.run.resolve import resolve
    from harness.run.strategies import set_train_mode

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        cfg = resolve(apply_overrides(RunConfig(), {
            "data.dataset": "synthetic", "data.synthetic_size": 256, "model.arch": "simple_cnn_bn",
            "train.batch_size": 16, "train.progress": False, "dist.use_gpu": False}))
        run = setup(cfg, Path(run_dir), WorkerContext(rank, WORLD, 0, torch.device("cpu"), False))
        set_train_mode(run.model)
        run.train_loader.set_epoch(0)
        batches = iter(run.train_loader)
        for _ in range(3):
            run.step(*next(batches))
        # Plain lists: tensors cross a multiprocessing queue as shared memory that dies with this process.
        stats = lambda: [b.tolist() for n, b in run.model.named_buffers() if "running_mean" in n]  # noqa: E731
        trained = stats()
        val = run.validate()
        out.put((rank, trained, stats(), val["acc"], val["n"]))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_evaluate_with_rank_zeros_batchnorm_statistics(tmp_path):
    """DDP runs with broadcast_buffers=False (no collective before every training forward), so each rank's
    BatchNorm statistics follow its own batches; a validation must still evaluate every shard with one
    model, rank 0's, which is also the one checkpoints hold."""
    got = {r: rest for r, *rest in _run_ranks(_bn_rank, tmp_path)}
    (trained0, evaluated0, acc0, n0), (trained1, evaluated1, acc1, n1) = got[0], got[1]
    assert trained0 != trained1, "the ranks trained on different batches"
    assert evaluated1 == trained0, "rank 1 evaluated with rank 0's statistics"
    assert evaluated0 == trained0
    assert (acc0, n0) == (acc1, n1), "the summed validation is one result on every rank"
