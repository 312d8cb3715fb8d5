"""The loop's named steps on their own (a tiny model, batches in a list), and what a run directory promises."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from harness.cli import main
from harness.errors import HarnessError
from harness.report.records import collect
from harness.results_csv import read_rows
from harness.run.config import RunConfig, apply_overrides, config_from_dict, config_hash
from harness.run.loop import Stepper, checkpoint_due, evaluate, local_context, train_one_epoch
from harness.run.measure import backend_flags
from harness.run.resolve import auto_precision, resolve
from harness.run.trainer import fit

CTX = local_context("cpu")


def _batches(n: int = 6, bs: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        y = torch.randint(0, 3, (bs,), generator=g)
        x = torch.randn(bs, 4, generator=g) + 4.0 * nn.functional.one_hot(y, 4).float()  # separable
        out.append((x, y))
    return out


def _stepper(model: nn.Module, lr: float = 0.5, clip: float | None = None) -> Stepper:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Stepper(model, list(model.parameters()), opt, None, nn.CrossEntropyLoss(), "fp32", CTX.device, clip)


def test_train_one_epoch_steps_counts_and_learns():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    step = _stepper(model)
    seen = []
    first = train_one_epoch(step, _batches(), CTX, max_steps=4, on_step=seen.append)
    assert seen == [1, 2, 3, 4], "max_steps caps the epoch"
    assert first.n == 4 * 16 and first.stop is None and first.seconds > 0
    for _ in range(5):
        last = train_one_epoch(step, _batches(), CTX, max_steps=6)
    assert last.loss < first.loss and last.acc > 0.9


def test_train_one_epoch_stops_on_divergence_and_budget():
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.fill_(math.inf)
    stats = train_one_epoch(_stepper(model), _batches(40), CTX, max_steps=40)
    assert stats.stop == "diverged"
    stats = train_one_epoch(_stepper(nn.Linear(4, 3)), _batches(40), CTX, max_steps=40, deadline=0.0)
    assert stats.stop == "budget" and stats.n == 16, "in one process the budget is checked after every step"


def test_stepper_clips_gradients():
    model = nn.Linear(4, 3)
    step = _stepper(model, lr=1.0, clip=1e-3)
    before = model.weight.detach().clone()
    step(*_batches(1)[0])
    assert (model.weight - before).norm() <= 1e-3 + 1e-6


def test_evaluate_counts_every_image_once():
    model = nn.Linear(4, 3)
    batches = _batches(3, 10)
    r = evaluate(model, batches, 3, CTX)
    assert r["n"] == 30 and r["confusion"].shape == (3, 3) and int(r["confusion"].sum()) == 30
    preds = torch.cat([model(x).argmax(1) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert r["acc"] == pytest.approx(float((preds == labels).float().mean()))
    with torch.no_grad():
        loss = sum(nn.functional.cross_entropy(model(x), y, reduction="sum") for x, y in batches) / 30
    assert r["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert not model.training


def _cfg(tmp_path: Path, **kw) -> RunConfig:
    return apply_overrides(RunConfig(), {"data.dataset": "synthetic", "data.synthetic_size": 256,
                                         "model.arch": "tiny_cnn", "train.epochs": 1, "train.batch_size": 64,
                                         "train.progress": False, "train.measure_inference": False,
                                         "out": str(tmp_path / "runs"), **kw})


def test_run_dir_hash_matches_summary_and_config_holds_what_ran(tmp_path):
    s = fit(_cfg(tmp_path))
    d = Path(s.run_dir)
    saved = config_from_dict(yaml.safe_load((d / "config.yaml").read_text()))
    assert saved.train.precision == "fp32" and saved.train.channels_last is False, "auto settled before saving"
    assert s.config_hash == config_hash(saved) and s.config_hash in d.name
    assert json.loads((d / "summary.json").read_text())["config_hash"] == s.config_hash
    assert resolve(saved) == saved, "resolving a resolved config changes nothing"


def test_linear_lr_scaling_is_applied_once_and_saved(tmp_path):
    cfg = resolve(_cfg(tmp_path, **{"optim.lr_scaling": "linear", "optim.lr": 0.1, "optim.base_batch": 32,
                                    "optim.head_lr": 0.2}))
    assert cfg.optim.lr == pytest.approx(0.2) and cfg.optim.head_lr == pytest.approx(0.4)
    assert cfg.optim.lr_scaling == "none"


def test_transfer_train_s_counts_pretraining_through_leaderboard_from(tmp_path, results_dir):
    s = fit(_cfg(tmp_path, **{"strategy.name": "transfer", "strategy.pretrain_dataset": "synthetic",
                              "strategy.pretrain_epochs": 2, "data.grayscale": False}))
    d = Path(s.run_dir)
    pre = json.loads((d / "pretrain" / "summary.json").read_text())
    metrics = (d / "metrics.csv").read_text().splitlines()[1:]
    stage_two = sum(float(line.split(",")[6]) for line in metrics)
    assert s.pretrain_train_s == pytest.approx(pre["train_s"])
    assert s.train_s == pytest.approx(stage_two + pre["train_s"], rel=1e-6)
    assert json.loads((d / "summary.json").read_text())["train_s"] == pytest.approx(s.train_s)
    (rec,) = collect([tmp_path / "runs"])
    assert rec.summary.train_s == pytest.approx(s.train_s)
    assert main(["leaderboard", "--from", str(tmp_path / "runs"), "--results-dir", str(results_dir),
                 "--docs-dir", str(tmp_path / "docs")]) == 0
    (row,) = read_rows(results_dir / "leaderboard.csv")
    assert float(row["train_s"]) == pytest.approx(stage_two + pre["train_s"], rel=1e-4)


def test_auto_precision_and_backend_flags():
    assert auto_precision("cpu", None) == "fp32"
    assert auto_precision("cuda", True) == "bf16"
    assert auto_precision("cuda", False) == "fp16", "emulated bf16 is slow: fp16 + GradScaler instead"
    assert auto_precision("cuda", None) == "bf16", "a CPU head resolving for GPU workers assumes bf16"
    assert backend_flags("fp32", False, "cuda") == {"cudnn_benchmark": True, "tf32": True, "deterministic": False}
    assert backend_flags("bf16", False, "cuda")["tf32"] is False
    assert backend_flags("fp32", True, "cuda") == {"cudnn_benchmark": False, "tf32": False, "deterministic": True}
    assert backend_flags("fp32", False, "cpu") == {"cudnn_benchmark": False, "tf32": False, "deterministic": False}


def test_checkpoint_cadence(tmp_path):
    assert [e for e in range(1, 8) if checkpoint_due(e, 7, 3)] == [3, 6, 7], "every K and the last epoch"
    # Issue 21: every epoch by default was a full host copy of the model and optimizer each epoch.
    assert [e for e in range(1, 13) if checkpoint_due(e, 12, RunConfig().train.checkpoint_every)] == [5, 10, 12]
    assert not any(checkpoint_due(e, 7, 0) for e in range(1, 8))
    s = fit(_cfg(tmp_path, **{"train.epochs": 4, "train.checkpoint_every": 3, "train.max_steps_per_epoch": 2}))
    last = torch.load(Path(s.run_dir) / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 4 and (Path(s.run_dir) / "best.pt").is_file()
    s = fit(_cfg(tmp_path, **{"train.epochs": 2, "train.checkpoint_every": 0, "train.max_steps_per_epoch": 2}))
    assert not (Path(s.run_dir) / "last.pt").exists() and (Path(s.run_dir) / "best.pt").is_file()
    s = fit(_cfg(tmp_path, **{"train.epochs": 1, "train.checkpoint_every": 0, "train.max_steps_per_epoch": 1,
                              "train.save_best": False}))
    assert s.test_acc is not None and not (Path(s.run_dir) / "best.pt").exists()  # tested, nothing saved


def test_evaluate_pads_short_batches_to_one_shape():
    shapes = []

    class Spy(nn.Linear):
        def forward(self, x):
            shapes.append(x.shape[0])
            return super().forward(x)

    model = Spy(4, 3)
    batches = _batches(3, 10) + _batches(1, 4, seed=1)
    plain, padded = evaluate(model, batches, 3, CTX), None
    shapes.clear()
    padded = evaluate(model, batches, 3, CTX, pad_to=16)
    assert set(shapes) == {16} and padded["n"] == plain["n"] == 34
    assert padded["acc"] == plain["acc"] and padded["loss"] == pytest.approx(plain["loss"])


class _Recompiles(logging.Handler):
    """The "Recompiling function" lines that ``TORCH_LOGS=recompiles`` prints, collected in this process."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._log = logging.getLogger("torch._dynamo.guards.__recompiles")

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Recompiling function"):
            self.lines.append(" ".join(msg.split()))

    def __enter__(self) -> _Recompiles:
        torch._logging.set_logs(recompiles=True)
        self._log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._log.removeHandler(self)
        torch._logging.set_logs()


_COMPILED = {"train.epochs": 2, "train.compile": True, "data.synthetic_size": 200, "train.batch_size": 32,
             "train.eval_batch_size": 64, "train.progress": True}


@pytest.mark.slow
def test_compile_evaluation_has_a_graph_of_its_own(tmp_path, capsys):
    # Issue 21: evaluation recompiled the training graph's forward (grad mode, then an inference tensor's
    # dispatch keys), and the inference speed's batch 256 recompiled the evaluation graph (batch 64 here).
    with _Recompiles() as log:
        s = fit(_cfg(tmp_path, **{**_COMPILED, "train.measure_inference": True}))
    assert log.lines == [], "\n".join(log.lines)
    assert s.compiled_graphs == 3, "training, evaluation, and inference at batch 256, each compiled once"
    assert s.compile_s is not None and s.compile_s > 0 and s.infer_img_per_s > 0
    assert s.epochs_run == 2 and s.test_acc is not None
    assert f"compile: {s.compiled_graphs} graphs compiled for this run" in capsys.readouterr().out


@pytest.mark.slow
def test_compiled_graphs_are_counted_per_run(tmp_path):
    # compiled_graphs read dynamo's process-wide counter: a second run (or a transfer's second stage) in one
    # process counted the first's graphs too. No counters.clear(): what compiled before must not count.
    first = fit(_cfg(tmp_path, **_COMPILED))
    with _Recompiles() as log:  # other shapes, as a transfer's second stage has: compiled afresh, no recompiles
        second = fit(_cfg(tmp_path, **{**_COMPILED, "train.batch_size": 16, "train.eval_batch_size": 48}))
    assert (first.compiled_graphs, second.compiled_graphs) == (2, 2), "one training and one evaluation graph each"
    assert log.lines == [], log.lines


def test_ddp_runs_resolve_against_the_cluster_not_this_process(tmp_path):
    # A CPU-only head whose Ray cluster has GPU workers: the workers train on CUDA, with its defaults.
    cfg = _cfg(tmp_path, **{"dist.workers": 2})
    gpu = resolve(cfg, cluster_gpus=4)
    assert gpu.dist.use_gpu is True and gpu.train.precision == "bf16" and gpu.train.channels_last is True
    cpu = resolve(cfg, cluster_gpus=0)
    assert cpu.dist.use_gpu is False and cpu.train.precision == "fp32"
    assert resolve(_cfg(tmp_path, **{"train.precision": "fp16", "dist.workers": 1}), cluster_gpus=1).train.precision \
        == "fp16", "fp16 is allowed where the workers have GPUs, even from a CPU head"
    with pytest.raises(HarnessError, match="fp16 needs a CUDA GPU"):
        resolve(_cfg(tmp_path, **{"train.precision": "fp16", "dist.workers": 1}), cluster_gpus=0)


def test_airbench_layout_trains_and_is_refused_where_it_cannot_work(tmp_path):
    s = fit(_cfg(tmp_path, **{"data.layout": "airbench", "data.loader": "tensor", "data.augment": "base",
                              "train.max_steps_per_epoch": 2}))
    assert s.stop_reason == "completed" and s.test_acc is not None
    with pytest.raises(HarnessError, match="layout of the tensor loader"):
        resolve(_cfg(tmp_path, **{"data.layout": "airbench", "data.loader": "torchvision"}))
    with pytest.raises(HarnessError, match="bf16, fp16 or auto"):
        resolve(_cfg(tmp_path, **{"data.layout": "airbench", "train.precision": "fp32", "dist.workers": 1}),
                cluster_gpus=1)


def test_inference_speed_is_a_median_after_warmup_and_deterministic_flags_apply():
    calls = []

    class Count(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.flatten(1)[:, :3]

    from harness.run.measure import apply_backend_flags, inference_img_per_s

    assert inference_img_per_s(Count(), (3, 8, 8), "fp32", False, torch.device("cpu"), iters=5, warmup=2) > 0
    assert calls == [256] * 7, "2 untimed warm-up passes, then the timed ones"
    import os

    before = torch.are_deterministic_algorithms_enabled()
    try:
        apply_backend_flags(backend_flags("fp32", True, "cpu"))
        assert torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"]
    finally:
        torch.use_deterministic_algorithms(before)


def test_max_steps_stops_after_exactly_that_many_optimizer_steps(tmp_path):
    # 230 training images at batch 64: 4 steps an epoch, so 10 steps are 2 epochs and 2 steps of a third.
    s = fit(_cfg(tmp_path, **{"train.epochs": 5, "train.max_steps": 10, "optim.name": "adam"}))
    assert s.stop_reason == "max_steps" and s.epochs_run == 3
    last = torch.load(Path(s.run_dir) / "last.pt", weights_only=True)
    steps = {int(v["step"]) for v in last["optimizer"]["state"].values()}
    assert steps == {10}, f"Adam counted {steps} steps"
    full = fit(_cfg(tmp_path, **{"train.epochs": 2, "train.max_steps": 100}))
    assert full.stop_reason == "completed" and full.epochs_run == 2, "a cap beyond train.epochs changes nothing"
    with pytest.raises(Exception, match="train.max_steps must be >= 1"):
        fit(_cfg(tmp_path, **{"train.max_steps": 0}))


def test_deterministic_adaptive_pooling_on_cuda_is_refused_at_resolve(tmp_path):
    # VGG's 7x7 and AlexNet's 6x6 adaptive average pools have no deterministic CUDA backward: the run would
    # fail at its first backward, after loading the data. Resolved against a GPU cluster, as for DDP workers.
    for arch in ("tv_vgg16", "tv_alexnet"):
        det = {"model.arch": arch, "train.deterministic": True, "dist.workers": 1}
        with pytest.raises(HarnessError, match=rf"train.deterministic=true: {arch}'s avgpool .* no deterministic CUDA"):
            resolve(_cfg(tmp_path, **det), cluster_gpus=1)
        assert resolve(_cfg(tmp_path, **det), cluster_gpus=0).train.deterministic, "CPU kernels are deterministic"
        assert not resolve(_cfg(tmp_path, **{**det, "train.deterministic": False}), cluster_gpus=1).train.deterministic
        # Only the head after the pool trains: the pool's backward never runs.
        resolve(_cfg(tmp_path, **{**det, "strategy.trainable": "head"}), cluster_gpus=1)
    # A 1x1 adaptive pool is a mean (deterministic): ResNet's run stays allowed.
    resolve(_cfg(tmp_path, **{"model.arch": "tv_resnet18", "train.deterministic": True, "dist.workers": 1}),
            cluster_gpus=1)


def test_deterministic_cuda_refusal_is_read_from_the_layers():
    # From the layer types, not a list of model names: of the registered models only VGG's and AlexNet's adaptive
    # pools (7x7, 6x6) lack a deterministic CUDA backward; a model added with such a layer is refused too.
    from architectures import list_models
    from harness.run.resolve import check_deterministic_cuda, nondeterministic_cuda_backward

    refused = []
    for arch in list_models():
        try:
            check_deterministic_cuda(apply_overrides(RunConfig(), {"model.arch": arch, "train.deterministic": True}))
        except HarnessError:
            refused.append(arch)
    assert refused == ["tv_alexnet", "tv_vgg16"]
    layers = {nn.AdaptiveAvgPool2d(1): False, nn.AdaptiveAvgPool2d((1, 1)): False, nn.AdaptiveAvgPool2d(2): True,
              nn.AdaptiveAvgPool2d((7, 7)): True, nn.AdaptiveAvgPool3d(1): False, nn.AdaptiveMaxPool2d(1): True,
              nn.ReflectionPad2d(1): True, nn.Upsample(scale_factor=2): False,
              nn.Upsample(scale_factor=2, mode="bilinear"): True, nn.MaxPool2d(2): False, nn.Conv2d(3, 3, 3): False}
    assert {str(m): nondeterministic_cuda_backward(m) for m in layers} == {str(m): v for m, v in layers.items()}
