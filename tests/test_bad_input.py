"""Bad input of every subcommand: one line on stderr naming the flag (and the valid choices), exit 2.

Each case walks one flag with a wrong value: a wrong type, a value out of range, an unknown name, a
conflicting option, a file where a folder is expected (or the other way round), a missing path, a
request this machine can never schedule. Every case asserts the promise of docs/faults.md:

- exit status 2, exactly one line on stderr, no traceback, nothing on stdout;
- the line names the flag (or its config key) and, for a closed set, the valid or closest choices;
- nothing is written: the set of files and folders under the test's folder (the working directory,
  ``--out``, ``--results-dir``, ``--storage``, the caches) is the same before and after.

The cases run in process through :func:`harness.cli.main` (fast), with guards that fail the test if a
case gets as far as training, a sweep's Tune run, loading a sweep's data or measuring a benchmark; a
few run as real subprocesses to check the console entry point too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main

REPO = Path(__file__).resolve().parent.parent

# Placeholders in a case's arguments, replaced by paths under the test's folder.
#   {file}: an existing regular file     {dir}: an existing empty folder     {missing}: no such path
#   {out}: where an output would go (must stay absent)     {bad_yaml}: a file that is not valid YAML
#   {matrix}: a valid tiny sweep matrix (synthetic data, tiny_cnn)     {repo}: this checkout
SYN = ["--dataset", "synthetic", "--arch", "tiny_cnn", "--epochs", "1", "--set", "data.synthetic_size=64",
       "--set", "train.measure_inference=false"]
MATRIX = """description: tiny
base:
  data.dataset: synthetic
  data.synthetic_size: 64
  train.epochs: 1
  train.measure_inference: false
axes:
  arch: [tiny_cnn]
"""


def _paths(root: Path) -> dict[str, str]:
    return {"file": str(root / "a-file.txt"), "dir": str(root / "empty-dir"), "missing": str(root / "no" / "such"),
            "out": str(root / "out"), "bad_yaml": str(root / "bad.yaml"), "matrix": str(root / "m.yaml"),
            "unknown_key_yaml": str(root / "unknown-key.yaml"), "repo": str(REPO)}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A folder with the placeholder paths, as the working directory and every default output place."""
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    (tmp_path / "unknown-key.yaml").write_text("optim: {lrr: 0.1}\n")
    (tmp_path / "m.yaml").write_text(MATRIX)
    for var, sub in (("HARNESS_RESULTS_DIR", "results"), ("HARNESS_SWEEPS_DIR", "sweeps"),
                     ("HARNESS_DOCS_DIR", "docs"), ("HARNESS_CACHE_DIR", "cache"), ("HARNESS_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    saved = dict(os.environ)
    yield tmp_path
    os.environ.clear()  # harness submit/results point Ray's client at --address through the environment
    os.environ.update(saved)


@pytest.fixture
def guards(monkeypatch):
    """Fail a case that gets past the checks: it would train, run Tune, prepare data or benchmark."""

    def reached(what: str):
        def fail(*a, **k):
            raise AssertionError(f"bad input got as far as {what}")
        return fail

    import harness.bench.loaders
    import harness.bench.overhead
    import harness.bench.probe
    import harness.bench.roofline
    import harness.bench.sweep_cost
    import harness.run.probe
    import harness.run.trainer
    import harness.sweep.driver

    monkeypatch.setattr(harness.run.trainer, "fit", reached("training (fit)"))
    monkeypatch.setattr(harness.sweep.driver, "_run_tune", reached("the sweep's Tune run"))
    monkeypatch.setattr(harness.sweep.driver, "_prepare_data", reached("the sweep's data preparation"))
    monkeypatch.setattr(harness.bench.overhead, "_measure", reached("the overhead measurement"))
    monkeypatch.setattr(harness.bench.loaders, "load_splits", reached("the loader benchmark's data"))
    monkeypatch.setattr(harness.run.probe, "time_candidates", reached("the probe's timing"))
    monkeypatch.setattr(harness.bench.probe, "time_candidates", reached("the probe's timing"))
    monkeypatch.setattr(harness.bench.roofline, "matmul_gflops", reached("the roofline's matmul"))
    monkeypatch.setattr(harness.bench.sweep_cost, "run_one", reached("the null sweep"))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _call(argv: list[str]) -> int:
    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse usage errors
        return int(e.code or 0)


def check_one_line(sandbox: Path, capsys, argv: list[str], needles: list[str]) -> str:
    """Run ``harness ARGV`` in process; assert the promise; return the error line."""
    paths = _paths(sandbox)
    argv = [a.format(**paths) for a in argv]
    before = _tree(sandbox)
    rc = _call(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, f"harness {' '.join(argv)}: exit {rc}\n{err}"
    assert len(lines) == 1, f"harness {' '.join(argv)}: {len(lines)} lines on stderr\n{err}"
    assert "Traceback" not in err
    assert out == "", f"harness {' '.join(argv)} printed on stdout:\n{out}"
    for n in needles:
        assert n.format(**paths) in lines[0], f"harness {' '.join(argv)}: '{n}' not in: {lines[0]}"
    assert _tree(sandbox) == before, f"harness {' '.join(argv)} wrote {_tree(sandbox) ^ before}"
    return lines[0]


def P(argv: list[str], *needles: str, id: str, marks=()):  # noqa: A002 - pytest's name
    return pytest.param(argv, list(needles), id=id, marks=marks)


# Cases about a machine without a GPU (on one with a GPU those requests are valid).
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


# ---------------------------------------------------------------------------------------------
# The table, one list per subcommand

LIST = [
    P(["list", "nope"], "kind", "'models'", "'presets'", "'datasets'", id="unknown-kind"),
    P(["list"], "kind", id="missing-kind"),
    P(["list", "models", "zzz*"], "'zzz*'", "valid:", "tiny_cnn", id="models-pattern-matches-nothing"),
    P(["list", "models", "resnet2"], "'resnet2'", "did you mean", "resnet20", id="models-typo"),
    P(["list", "datasets", "cifar"], "'cifar'", "cifar10", id="datasets-typo"),
    P(["list", "presets", "quik"], "'quik'", "quick", id="presets-typo"),
    P(["list", "schedulers", "cosin"], "'cosin'", "cosine", id="schedulers-typo"),
    P(["list", "models", "tiny_cnn", "extra"], "unrecognized arguments: extra", id="extra-argument"),
]

# Shared by data info and data prepare.
DATA = [
    P([], "--dataset", id="missing-dataset"),
    P(["--dataset", "nope"], "--dataset", "'nope'", "cifar10", "synthetic", id="unknown-dataset"),
    P(["--dataset", "cifar"], "--dataset", "did you mean", "cifar10", id="dataset-typo"),
    P(["--dataset", "synthetic", "--img-size", "abc"], "--img-size", "'abc'", id="img-size-type"),
    P(["--dataset", "synthetic", "--img-size", "0"], "--img-size", ">= 1", id="img-size-zero"),
    P(["--dataset", "synthetic", "--val-fraction", "abc"], "--val-fraction", "'abc'", id="val-fraction-type"),
    P(["--dataset", "synthetic", "--val-fraction", "1.5"], "--val-fraction", "[0, 1)", id="val-fraction-range"),
    P(["--dataset", "synthetic", "--val-fraction", "-0.1"], "--val-fraction", "[0, 1)", id="val-fraction-neg"),
    P(["--dataset", "synthetic", "--subset", "0"], "--subset", ">= 1", id="subset-zero"),
    P(["--dataset", "synthetic", "--subset", "ten"], "--subset", "'ten'", id="subset-type"),
    P(["--dataset", "synthetic", "--seed", "-1"], "--seed", ">= 0", id="seed-neg"),
    P(["--dataset", "synthetic", "--seed", "1.5"], "--seed", "'1.5'", id="seed-type"),
    P(["--dataset", "cifar10", "--data-dir", "{file}"], "--data-dir", "{file}", "not a folder", id="data-dir-is-a-file"),
    P(["--dataset", "cifar10", "--data-dir", "{missing}"], "--data-dir", "{missing}", id="data-dir-missing"),
    P(["--dataset", "cifar10", "--data-dir", "{dir}"], "cifar10", "{dir}", "--download", id="data-dir-empty"),
    P(["--dataset", "synthetic", "--bogus"], "unrecognized arguments: --bogus", id="unknown-flag"),
]

PREPARE_ONLY = [
    P(["--dataset", "synthetic", "--beton-dir", "{out}"], "--beton-dir", "--ffcv", id="beton-dir-without-ffcv"),
    P(["--dataset", "synthetic", "--ffcv", "--beton-dir", "{file}"], "--beton-dir", "{file}", "not a folder",
      id="beton-dir-is-a-file"),
]

RUN = [
    # wrong types
    P(["--epochs", "abc"], "train.epochs", "'abc'", id="epochs-type"),
    P(["--lr", "fast"], "optim.lr", "'fast'", id="lr-type"),
    P(["--batch-size", "1.5"], "train.batch_size", id="batch-size-type"),
    P(["--seed", "x"], "train.seed", id="seed-type"),
    P(["--workers", "two"], "dist.workers", id="workers-type"),
    # out of range
    P(["--epochs", "0"], "train.epochs", ">= 1", id="epochs-zero"),
    P(["--lr", "0"], "optim.lr", "> 0", id="lr-zero"),
    P(["--batch-size", "0"], "train.batch_size", ">= 1", id="batch-size-zero"),
    P(["--momentum", "1"], "optim.momentum", "[0, 1)", id="momentum-one"),
    P(["--weight-decay", "-1"], "optim.weight_decay", ">= 0", id="weight-decay-neg"),
    P(["--head-lr", "-1"], "optim.head_lr", ">= 0", id="head-lr-neg"),
    P(["--label-smoothing", "1"], "train.label_smoothing", "[0, 1)", id="label-smoothing-one"),
    P(["--grad-clip", "0"], "train.grad_clip", "> 0", id="grad-clip-zero"),
    P(["--early-stop", "0"], "train.early_stop_patience", ">= 1", id="early-stop-zero"),
    P(["--min-delta", "-0.1"], "train.min_delta", ">= 0", id="min-delta-neg"),
    P(["--target-acc", "1.5"], "train.target_acc", "(0, 1]", id="target-acc-range"),
    P(["--budget", "soon"], "train.budget", "'soon'", "30m", id="budget-unparsable"),
    P(["--budget", "0s"], "train.budget", "positive", id="budget-zero"),
    P(["--warmup-epochs", "-1"], "sched.warmup_epochs", ">= 0", id="warmup-neg"),
    P(["--val-fraction", "1"], "data.val_fraction", "(0, 1)", id="val-fraction-one"),
    P(["--subset", "0"], "data.subset", ">= 1", id="subset-zero"),
    P(["--img-size", "4"], "data.img_size", ">= 8", id="img-size-small"),
    P(["--head-layers", "9"], "strategy.head_layers", "1..4", id="head-layers-range"),
    P(["--seed", "-1"], "train.seed", ">= 0", id="seed-neg"),
    P(["--workers", "-1"], "dist.workers", ">= 0", id="workers-neg"),
    P(["--workers", "1", "--cpus-per-worker", "0"], "dist.cpus_per_worker", ">= 1", id="cpus-per-worker-zero"),
    P(["--max-failures", "-1"], "dist.max_failures", ">= 0", id="max-failures-neg"),
    P(["--pretrain-epochs", "0", "--strategy", "transfer", "--pretrain-dataset", "synthetic"],
      "strategy.pretrain_epochs", ">= 1", id="pretrain-epochs-zero"),
    P(["--set", "data.synthetic_size=0"], "data.synthetic_size", ">= 1", id="synthetic-size-zero"),
    P(["--set", "data.num_classes=1"], "data.num_classes", ">= 2", id="num-classes-one"),
    # unknown names: the line names the key and the valid (or closest) choices
    P(["--arch", "nope"], "model.arch", "unknown model 'nope'", "valid:", id="arch-unknown"),
    P(["--arch", "resnet2"], "model.arch", "did you mean", "resnet20", id="arch-typo"),
    P(["--dataset", "cifar100"], "data.dataset", "did you mean cifar10", id="dataset-typo"),
    P(["--loader", "fast"], "data.loader", "'fast'", "tensor", id="loader-unknown"),
    P(["--augment", "strongest"], "data.augment", "did you mean strong", id="augment-typo"),
    P(["--optimizer", "sgdd"], "optim.name", "did you mean sgd", id="optimizer-typo"),
    P(["--scheduler", "cosin"], "sched.name", "did you mean cosine", id="scheduler-typo"),
    P(["--strategy", "scratchh"], "strategy.name", "did you mean scratch", id="strategy-typo"),
    P(["--pretrain-dataset", "mnistt", "--strategy", "transfer"], "strategy.pretrain_dataset", "did you mean mnist",
      id="pretrain-dataset-typo"),
    P(["--init", "he"], "model.init", "default, xavier, kaiming or dirac", id="init-unknown"),
    P(["--precision", "fp8"], "train.precision", "auto, fp32, bf16 or fp16", id="precision-unknown"),
    P(["--lr-scaling", "sqrt"], "optim.lr_scaling", "none or linear", id="lr-scaling-unknown"),
    P(["--set", "optim.lrr=1"], "optim.lrr", "did you mean optim.lr", id="set-unknown-key"),
    P(["--set", "optim.lr"], "--set", "optim.lr", "KEY=VALUE", id="set-without-value"),
    P(["--set", "nosection.lr=1"], "nosection", id="set-unknown-section"),
    P(["--bogus"], "unrecognized arguments: --bogus", id="unknown-flag"),
    # conflicting options
    P(["--precision", "fp16"], "train.precision=fp16", "CUDA", id="fp16-on-cpu", marks=NO_GPU),
    P(["--strategy", "finetune"], "finetune", "--weights", id="finetune-without-weights"),
    P(["--warmup-epochs", "1", "--scheduler", "plateau"], "warmup", "plateau", id="warmup-with-plateau"),
    P(["--set", "dist.use_gpu=true"], "dist.use_gpu", "GPU", id="use-gpu-without-gpu", marks=NO_GPU),
    P(["--arch", "tv_vgg16", "--deterministic", "--workers", "1", "--set", "dist.use_gpu=true"],
      "train.deterministic", "tv_vgg16", "no deterministic CUDA backward", id="deterministic-vgg-on-cuda"),
    P(["--resume", "{dir}"], "--resume", "drop the other options", "--dataset", "--arch", id="resume-with-options"),
    # requests this machine can never schedule (no RAY_ADDRESS): refused before Ray starts
    P(["--workers", "512"], "--workers", "512", "CPUs", "RAY_ADDRESS", id="workers-exceed-cpus"),
    P(["--workers", "1", "--cpus-per-worker", "4096"], "--cpus-per-worker", "4096", id="cpus-per-worker-exceed"),
    P(["--workers", "1", "--set", "dist.use_gpu=true"], "dist.use_gpu", "GPU", id="ddp-use-gpu-without-gpu",
      marks=NO_GPU),
    # paths
    P(["--config", "{missing}"], "--config", "{missing}", id="config-missing"),
    P(["--config", "{dir}"], "--config", "{dir}", "folder", id="config-is-a-folder"),
    P(["--config", "{bad_yaml}"], "--config", "{bad_yaml}", "YAML", id="config-not-yaml"),
    P(["--config", "{unknown_key_yaml}"], "--config", "optim.lrr", "did you mean optim.lr", id="config-unknown-key"),
    P(["--out", "{file}"], "--out", "{file}", "not a folder", id="out-is-a-file"),
    P(["--data-dir", "{file}"], "--data-dir", "{file}", "not a folder", id="data-dir-is-a-file"),
    P(["--dataset", "cifar10", "--data-dir", "{missing}"], "--data-dir", "{missing}", "cifar10", id="data-dir-missing"),
    P(["--dataset", "cifar10", "--data-dir", "{dir}"], "cifar10", "{dir}", "--download", id="data-files-missing"),
    P(["--init-from", "{missing}", "--strategy", "finetune"], "{missing}", id="init-from-missing"),
    P(["--init-from", "{dir}", "--strategy", "finetune"], "{dir}", id="init-from-not-a-run"),
    P(["--name", "a/b"], "--name", "'a/b'", id="name-with-slash"),
    P(["--name", ".."], "--name", "'..'", id="name-dots"),
]

# --resume takes no other options: these run without the SYN flags.
RUN_RESUME = [
    P(["--resume", "{missing}"], "--resume", "{missing}", "not a run directory", id="resume-missing"),
    P(["--resume", "{file}"], "--resume", "{file}", "not a run directory", id="resume-a-file"),
    P(["--resume", "{dir}"], "--resume", "{dir}", "not a run directory", id="resume-not-a-run"),
    P(["--resume", "{dir}", "--print-config"], "--resume", "--print-config", id="resume-with-print-config"),
    P(["--resume", "{dir}", "--epochs", "2", "--set", "optim.lr=1"], "--resume", "--epochs", "--set",
      id="resume-with-options"),
]

BENCH_LOADERS = [
    P(["--backends", "nope"], "--backends", "'nope'", "tensor", id="backend-unknown"),
    P(["--backends", "auto"], "--backends", "auto", "tensor", id="backend-auto"),
    P(["--backends", ","], "--backends", id="backends-empty"),
    P(["--presets", "strongest"], "--presets", "did you mean strong", id="preset-typo"),
    P(["--presets", ","], "--presets", id="presets-empty"),
    P(["--batch-size", "0"], "--batch-size", ">= 1", id="batch-size-zero"),
    P(["--batch-size", "big"], "--batch-size", "'big'", id="batch-size-type"),
    P(["--epochs", "0"], "--epochs", ">= 1", id="epochs-zero"),
    P(["--workers", "-1"], "--workers", ">= 0", id="workers-neg"),
    P(["--limit", "0"], "--limit", ">= 1", id="limit-zero"),
    P(["--out", "{dir}"], "--out", "{dir}", "folder", id="out-is-a-folder"),
    P(["--out", "{file}/x.csv"], "--out", "{file}", "not a folder", id="out-under-a-file"),
    P(["--data-dir", "{file}"], "--data-dir", "{file}", "not a folder", id="data-dir-is-a-file"),
]

BENCH_SWEEP = [
    P(["--trials", "x"], "--trials", "'x'", id="trials-type"),
    P(["--trials", "100,0"], "--trials", ">= 1", id="trials-zero"),
    P(["--trials", ","], "--trials", id="trials-empty"),
    P(["--nodes", "0"], "--nodes", ">= 1", id="nodes-zero"),
    P(["--num-cpus", "0"], "--num-cpus", ">= 1", id="num-cpus-zero"),
    P(["--wandb", "online"], "--wandb", "'online'", id="wandb-online"),
    P(["--out", "{dir}"], "--out", "{dir}", "folder", id="out-is-a-folder"),
]

BENCH_OVERHEAD = [
    P(["--arch", "nope"], "--arch", "'nope'", "valid:", id="arch-unknown"),
    P(["--arch", "resnet2"], "--arch", "did you mean", "resnet20", id="arch-typo"),
    P(["--modes", "bare,fast"], "--modes", "'fast'", "bare, inprocess, ray", id="mode-unknown"),
    P(["--modes", ","], "--modes", id="modes-empty"),
    P(["--epochs", "1"], "--epochs", ">= 2", id="epochs-one"),
    P(["--epochs", "x"], "--epochs", "'x'", id="epochs-type"),
    P(["--batch-size", "0"], "--batch-size", ">= 1", id="batch-size-zero"),
    P(["--n-train", "0"], "--n-train", id="n-train-zero"),
    P(["--n-train", "64", "--batch-size", "128"], "--n-train", "--batch-size", id="n-train-below-batch"),
    P(["--out", "{dir}"], "--out", "{dir}", "folder", id="out-is-a-folder"),
]

BENCH_PROBE = [
    P(["--arch", "nope"], "--arch nope", "unknown model 'nope'", "valid:", id="arch-unknown"),
    P(["--recipe", "speed9"], "--recipe speed9", "did you mean", "speed94", id="recipe-typo"),
    P(["--arch", "", "--recipe", ""], "--arch and --recipe", id="no-target"),
    P(["--dataset", "cifar11"], "--dataset", "'cifar11'", "cifar10", id="dataset-unknown"),
    P(["--rounds", "0"], "--rounds", ">= 1", id="rounds-zero"),
    P(["--threads", "0"], "--threads", ">= 1", id="threads-zero"),
    P(["--batch-size", "0"], "--batch-size", ">= 1", id="batch-size-zero"),
    P(["--rounds", "x"], "--rounds", "'x'", id="rounds-type"),
    P(["--set", "train.nope=1"], "train.nope", id="set-unknown-key"),
    P(["--data-dir", "{file}"], "--data-dir", "{file}", id="data-dir-is-a-file"),
    P(["--out", "{dir}"], "--out", "{dir}", "folder", id="out-is-a-folder"),
]

SWEEP = [
    P(["--matrix", "quik"], "--matrix", "did you mean quick", id="matrix-typo"),
    P(["--matrix", "{missing}.yaml"], "--matrix", "{missing}.yaml", id="matrix-file-missing"),
    P(["--matrix", "{dir}"], "--matrix", "{dir}", id="matrix-is-a-folder"),
    P(["--matrix", "{bad_yaml}"], "{bad_yaml}", "YAML", id="matrix-not-yaml"),
    P(["--matrix", "{unknown_key_yaml}"], "{unknown_key_yaml}", "unknown key 'optim'", "axes", id="matrix-unknown-key"),
    P(["--name", "a/b"], "--name", "'a/b'", id="name-with-slash"),
    P(["--name", "nope", "--resume"], "--resume", "'nope'", id="resume-unknown-name"),
    P(["--resume"], "--resume", "--name", id="resume-without-name"),
    P(["--search", "bayes"], "--search", "'grid'", "'optuna'", id="search-unknown"),
    P(["--search", "optuna", "--seeds", "2"], "--search optuna", "--seeds", id="optuna-with-seeds"),
    P(["--num-samples", "0"], "--num-samples", ">= 1", id="num-samples-zero"),
    P(["--rerun-top", "0"], "--rerun-top", ">= 1", id="rerun-top-zero"),
    P(["--rerun-top", "x"], "--rerun-top", "'x'", id="rerun-top-type"),
    P(["--rerun-top", "1", "--folds", "3"], "--rerun-top", "--folds", id="rerun-top-with-folds"),
    P(["--num-samples", "many"], "--num-samples", "'many'", id="num-samples-type"),
    P(["--max-epochs", "0"], "--max-epochs", ">= 1", id="max-epochs-zero"),
    P(["--grace-period", "0"], "--grace-period", ">= 1", id="grace-period-zero"),
    P(["--reduction-factor", "1"], "--reduction-factor", "> 1", id="reduction-factor-one"),
    P(["--max-concurrent", "0"], "--max-concurrent", ">= 1", id="max-concurrent-zero"),
    P(["--seeds", "0"], "--seeds", ">= 1", id="seeds-zero"),
    P(["--folds", "1"], "--folds", ">= 2", id="folds-one"),
    P(["--target-acc", "2"], "--target-acc", "(0, 1]", id="target-acc-range"),
    P(["--wandb", "maybe"], "--wandb", "'auto'", "'off'", id="wandb-unknown"),
    P(["--num-cpus", "0"], "--num-cpus", ">= 1", id="num-cpus-zero"),
    P(["--workers-per-trial", "0"], "--workers-per-trial", ">= 1", id="workers-per-trial-zero"),
    P(["--cpus-per-worker", "0"], "--cpus-per-worker", ">= 1", id="cpus-per-worker-zero"),
    P(["--gpus-per-worker", "-1"], "--gpus-per-worker", ">= 0", id="gpus-per-worker-neg"),
    P(["--set", "optim.lrr=1"], "--set", "optim.lrr", "did you mean optim.lr", id="set-unknown-key"),
    P(["--set", "optim.lr"], "--set", "KEY=VALUE", id="set-without-value"),
    P(["--set", "train.epochs=0"], "train.epochs", ">= 1", id="set-out-of-range"),
    # requests this machine can never schedule: refused before Ray starts
    P(["--workers-per-trial", "8"], "--workers-per-trial", "offers 2", id="workers-per-trial-exceed"),
    P(["--cpus-per-worker", "64"], "--cpus-per-worker", "64", id="cpus-per-worker-exceed"),
    P(["--gpus-per-worker", "1"], "--gpus-per-worker", "GPU", id="gpus-without-gpu", marks=NO_GPU),
    # paths
    P(["--storage", "{file}"], "--storage", "{file}", "not a folder", id="storage-is-a-file"),
    P(["--results-dir", "{file}"], "--results-dir", "{file}", "not a folder", id="results-dir-is-a-file"),
    P(["--docs-dir", "{file}"], "--docs-dir", "{file}", "not a folder", id="docs-dir-is-a-file"),
    P(["--data-dir", "{file}"], "--data-dir", "{file}", "not a folder", id="data-dir-is-a-file"),
]
SWEEP_BASE = ["sweep", "--matrix", "{matrix}", "--wandb", "off", "--num-cpus", "2"]

LEADERBOARD = [
    P(["--from", "{missing}"], "--from", "{missing}", id="from-missing"),
    P(["--from", "{file}"], "--from", "{file}", id="from-a-file"),
    P(["--from", "{dir}"], "--from", "{dir}", id="from-holds-no-runs"),
    P(["--results-dir", "{file}"], "--results-dir", "{file}", "not a folder", id="results-dir-is-a-file"),
    P(["--docs-dir", "{file}"], "--docs-dir", "{file}", "not a folder", id="docs-dir-is-a-file"),
    P(["--no-docs"], "--no-docs", "--from", id="no-docs-without-from"),
    P(["--no-docs", "--docs-dir", "{out}", "--from", "{dir}"], "--no-docs", "--docs-dir", id="no-docs-with-docs-dir"),
    P(["--results-dir", "{dir}"], "{dir}", "leaderboard.csv", "--from", id="nothing-to-render"),
]

REPRODUCE = [
    P(["strategie"], "strategie", "did you mean strategies", "kfold", id="unknown-report"),
    P(["quick"], "quick", "report", id="not-a-report-matrix"),
    P(["kfold", "--only", "row=K1"], "--only", "--run", id="only-without-run"),
    P(["kfold", "--run", "--seeds", "0"], "--seeds", ">= 1", id="no-seeds"),
    P(["kfold", "--wandb", "maybe"], "--wandb", "'maybe'", "'auto'", "'off'", id="wandb-unknown"),
    P(["kfold", "--results-dir", "{file}"], "--results-dir", "{file}", "not a folder", id="results-dir-is-a-file"),
    P(["kfold", "--docs-dir", "{file}"], "--docs-dir", "{file}", "not a folder", id="docs-dir-is-a-file"),
    P(["kfold", "--run", "--only", "row=Z9"], "--only", "no trial", id="only-matches-nothing"),
]

SUBMIT = [
    P([], "after --", id="no-sweep-args"),
    P(["--address", "ftp://x:1", "--", "--matrix", "quick"], "--address", "ftp://x:1", "http", id="address-scheme"),
    P(["--", "--matrix", "quick"], "--address", id="no-address"),
    P(["--address", "http://127.0.0.1:9", "--working-dir", "{missing}", "--", "--matrix", "quick"],
      "--working-dir", "{missing}", id="working-dir-missing"),
    P(["--address", "http://127.0.0.1:9", "--working-dir", "{file}", "--", "--matrix", "quick"],
      "--working-dir", "{file}", "not a folder", id="working-dir-is-a-file"),
    P(["--address", "http://127.0.0.1:9", "--runtime-env", "{missing}", "--", "--matrix", "quick"],
      "--runtime-env", "{missing}", id="runtime-env-missing"),
    P(["--address", "http://127.0.0.1:9", "--runtime-env", "{dir}", "--", "--matrix", "quick"],
      "--runtime-env", "{dir}", id="runtime-env-is-a-folder"),
    P(["--address", "http://127.0.0.1:9", "--runtime-env", "{bad_yaml}", "--", "--matrix", "quick"],
      "{bad_yaml}", "YAML", id="runtime-env-not-yaml"),
    P(["--address", "http://127.0.0.1:9", "--forward-env", "HARNESS_TEST_UNSET_VAR", "--", "--matrix", "quick"],
      "--forward-env", "HARNESS_TEST_UNSET_VAR", id="forward-env-unset"),
    P(["--address", "http://127.0.0.1:9", "--job-id", "a b", "--", "--matrix", "quick"], "--job-id", "'a b'",
      id="job-id-with-space"),
    P(["--address", "http://127.0.0.1:9", "--job-id", "", "--", "--matrix", "quick"], "--job-id", id="job-id-empty"),
    P(["--address", "http://127.0.0.1:9", "--", "--matrix", "quik"], "--matrix", "did you mean quick",
      id="sweep-args-unknown-preset"),
    P(["--address", "http://127.0.0.1:9", "--", "--matrix", "quick", "--seeds", "0"], "--seeds", ">= 1",
      id="sweep-args-out-of-range"),
    P(["--address", "http://127.0.0.1:9", "--", "--matrix", "quick", "--bogus"], "unrecognized arguments: --bogus",
      id="sweep-args-unknown-flag"),
    P(["--address", "http://127.0.0.1:9", "--", "--matrix", "quick", "--search", "bayes"], "--search", "'grid'",
      id="sweep-args-bad-choice"),
    P(["--address", "http://127.0.0.1:9", "--dry-run", "--", "--matrix", "quick", "--seeds", "x"], "--seeds",
      id="dry-run-checks-sweep-args"),
]

PLAN = [
    P([], "--matrix", id="missing-matrix"),
    P(["--matrix", "quik"], "--matrix", "did you mean quick", id="matrix-typo"),
    P(["--matrix", "quick", "--gpus", "0"], "--gpus", ">= 1", id="gpus-zero"),
    P(["--matrix", "quick", "--gpus", "2", "--gpus-per-trial", "4"], "--gpus-per-trial", "could ever be placed",
      id="trial-bigger-than-cluster"),
    P(["--matrix", "quick", "--gpus-per-trial", "0"], "--gpus-per-trial", "> 0", id="gpus-per-trial-zero"),
    P(["--matrix", "quick", "--reduction-factor", "1"], "--reduction-factor", "> 1", id="reduction-factor-one"),
    P(["--matrix", "quick", "--cpus", "x"], "--cpus", "'x'", id="cpus-type"),
    P(["--matrix", "quick", "--set", "optim.nope=1"], "optim.nope", id="set-unknown-key"),
]

RESULTS = [
    P([], "--job", id="missing-job"),
    P(["--address", "http://127.0.0.1:9", "--job", ""], "--job", "empty", id="job-empty"),
    P(["--address", "http://127.0.0.1:9", "--job", "a/../b"], "--job", "'a/../b'", id="job-with-slash"),
    P(["--address", "http://127.0.0.1:9", "--job", "a b"], "--job", "'a b'", id="job-with-space"),
    P(["--address", "ftp://x:1", "--job", "j"], "--address", "ftp://x:1", "http", id="address-scheme"),
    P(["--job", "j"], "--address", id="no-address"),
    P(["--address", "http://127.0.0.1:9", "--job", "j", "--timeout", "-1"], "--timeout", "> 0", id="timeout-neg"),
    P(["--address", "http://127.0.0.1:9", "--job", "j", "--timeout", "soon"], "--timeout", "'soon'",
      id="timeout-type"),
    P(["--address", "http://127.0.0.1:9", "--job", "j", "--poll", "0"], "--poll", "> 0", id="poll-zero"),
    P(["--address", "http://127.0.0.1:9", "--job", "j", "--dest", "{file}"], "--dest", "{file}", "not a folder",
      id="dest-is-a-file"),
]


# ---------------------------------------------------------------------------------------------
# The tests

@pytest.mark.parametrize("argv,needles", LIST)
def test_list(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, argv, needles)


@pytest.mark.parametrize("action", ["info", "prepare"])
@pytest.mark.parametrize("argv,needles", DATA)
def test_data(sandbox, guards, capsys, action, argv, needles):
    check_one_line(sandbox, capsys, ["data", action, *argv], needles)


@pytest.mark.parametrize("argv,needles", PREPARE_ONLY)
def test_data_prepare(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["data", "prepare", *argv], needles)


@pytest.mark.parametrize("argv,needles", RUN)
def test_run(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["run", *SYN, *argv], needles)


@pytest.mark.parametrize("argv,needles", RUN_RESUME)
def test_run_resume(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["run", *argv], needles)


@pytest.mark.parametrize("argv,needles", BENCH_LOADERS)
def test_bench_loaders(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["bench", "loaders", *argv], needles)


@pytest.mark.parametrize("argv,needles", BENCH_OVERHEAD)
def test_bench_overhead(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["bench", "overhead", *argv], needles)


@pytest.mark.parametrize("argv,needles", BENCH_SWEEP)
def test_bench_sweep(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["bench", "sweep", *argv], needles)


@pytest.mark.parametrize("bench", ["probe", "roofline"])
@pytest.mark.parametrize("argv,needles", BENCH_PROBE)
def test_bench_probe_and_roofline(sandbox, guards, capsys, bench, argv, needles):
    check_one_line(sandbox, capsys, ["bench", bench, *argv], needles)


@pytest.mark.parametrize("argv,needles", SWEEP)
def test_sweep(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, [*SWEEP_BASE, *argv], needles)


def test_sweep_name_taken(sandbox, guards, capsys):
    (sandbox / "sweeps" / "taken").mkdir(parents=True)
    check_one_line(sandbox, capsys, [*SWEEP_BASE, "--name", "taken"], ["'taken'", "--resume", "--name"])


@pytest.mark.parametrize("argv,needles", LEADERBOARD)
def test_leaderboard(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["leaderboard", *argv], needles)


@pytest.mark.parametrize("argv,needles", REPRODUCE)
def test_reproduce(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["reproduce", *argv], needles)


@pytest.mark.parametrize("argv,needles", SUBMIT)
def test_submit(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["submit", "--working-dir", "{repo}", *argv], needles)


@pytest.mark.parametrize("argv,needles", PLAN)
def test_plan(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["plan", *argv], needles)


@pytest.mark.parametrize("argv,needles", RESULTS)
def test_results(sandbox, guards, capsys, argv, needles):
    check_one_line(sandbox, capsys, ["results", *argv], needles)


def test_every_subcommand_has_cases():
    """The table covers every subcommand the CLI has."""
    from harness.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {"list", "data", "run", "bench", "sweep", "plan", "leaderboard", "reproduce", "submit", "results"}
    assert set(sub.choices) == covered


# ---------------------------------------------------------------------------------------------
# Decisions the table relies on

def test_subset_larger_than_the_split_keeps_every_image(sandbox, capsys):
    """``--subset N`` caps each class at N images; a class with fewer keeps all of them (said in --help)."""
    base = ["data", "info", "--dataset", "synthetic"]
    assert _call(base) == 0
    full = capsys.readouterr().out
    assert _call([*base, "--subset", "1000000"]) == 0
    capped = capsys.readouterr().out
    split_line = [line for line in full.splitlines() if line.startswith("splits")]
    assert split_line and split_line == [line for line in capped.splitlines() if line.startswith("splits")]
    from harness.run.config import field_info

    assert "fewer" in field_info("data.subset").help


# ---------------------------------------------------------------------------------------------
# The console entry point itself (subprocesses): a few of the cases above, end to end

@pytest.mark.parametrize("args,needle", [
    (["results", "--address", "http://127.0.0.1:9", "--job", ""], "--job"),
    (["run", *SYN, "--workers", "512"], "--workers"),
    (["sweep", "--matrix", "quik", "--wandb", "off"], "--matrix"),
], ids=["results-empty-job", "run-workers-exceed-cpus", "sweep-matrix-typo"])
def test_console_entry_point(tmp_path, args, needle):
    # The probe stays on (a user's default): bad input is refused before it times anything or writes its cache.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HARNESS_"))}
    env.update(HARNESS_RESULTS_DIR=str(tmp_path / "results"), HARNESS_SWEEPS_DIR=str(tmp_path / "sweeps"),
               HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr and not list(tmp_path.iterdir())
