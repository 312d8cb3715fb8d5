"""``harness run`` from the command line: bad input is one line and exit 2; good input ends with the run dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SYN = ["--dataset", "synthetic", "--arch", "tiny_cnn", "--epochs", "1", "--set", "data.synthetic_size=200",
       "--set", "train.measure_inference=false"]


def harness(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.parametrize("args,needle", [
    (["--arch", "nope"], "unknown model 'nope'"),
    (["--lr", "-1"], "optim.lr must be > 0"),
    (["--batch-size", "0"], "train.batch_size must be >= 1"),
    (["--scheduler", "nope"], "unknown scheduler 'nope'"),
    (["--optimizer", "sgdd"], "did you mean sgd"),
    (["--strategy", "finetune"], "needs pretrained weights"),
    (["--strategy", "finetune", "--init-from", "/nonexistent", "--trainable", "layer9", "--arch", "resnet20"],
     "unknown stage for resnet20 'layer9'"),
    (["--set", "optim.lrr=1"], "did you mean optim.lr"),
    (["--precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--dataset", "cifar100"], "unknown dataset 'cifar100'"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    p = harness("run", *SYN, "--out", str(tmp_path), *args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not list(tmp_path.iterdir())  # nothing was started


def test_weights_without_internet_say_so(tmp_path):
    import os

    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch-home"))
    p = harness("run", *SYN, "--out", str(tmp_path / "runs"), "--arch", "tv_resnet18", "--strategy", "finetune",
                "--weights", "IMAGENET1K_V1", env=env)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "internet" in p.stderr


def test_good_run_prints_run_dir_last(tmp_path):
    p = harness("run", *SYN, "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    run_dir = Path(p.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and (run_dir / "summary.json").is_file()
    assert "epoch 1/1" in p.stdout and "ETA" in p.stdout
