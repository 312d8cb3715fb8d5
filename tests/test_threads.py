"""Intra-op threads stay what the worker was given: data loading must not reset torch's thread count.

numba's OpenMP layer sets the calling thread's OpenMP thread count when it starts its pool, which is
torch's intra-op count too. Sweep trials on a 2-core machine trained 8x slower for it (two trials of
two threads each on two cores). The check runs in a fresh process: numba's pool starts only once per
process, so in pytest's own process an earlier test would already have started it.
"""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import torch
torch.set_num_threads(1)
from harness.run.config import RunConfig, apply_overrides
from harness.run.resolve import resolve
from harness.run.loop import setup, local_context
import tempfile
from pathlib import Path
cfg = resolve(apply_overrides(RunConfig(), {"data.dataset": "synthetic", "data.synthetic_size": 400,
    "model.arch": "tiny_cnn", "train.batch_size": 50, "train.progress": False, "data.augment": "base"}))
run = setup(cfg, Path(tempfile.mkdtemp()), local_context("cpu"))
after_setup = torch.get_num_threads()
x, y = next(iter(run.train_loader))
assert run.train_loader.use_kernel, "the fused numba kernel is the path under test"
print("THREADS", after_setup, torch.get_num_threads())
"""


def test_data_loading_and_the_numba_kernel_keep_torch_threads():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300,
                         env={"NUMBA_NUM_THREADS": "2", **__import__("os").environ})
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("THREADS"))
    assert line.split()[1:] == ["1", "1"], f"torch threads after setup and after a kernel batch: {line}"
