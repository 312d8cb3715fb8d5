"""The training loop end to end on small synthetic data, in process (real torch, real files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from harness.run.config import RunConfig, apply_overrides
from harness.run.optim import OPTIMIZERS, SCHEDULERS
from harness.run.strategies import STRATEGIES
from harness.run.trainer import fit

BASE = {
    "model.arch": "tiny_cnn", "data.dataset": "synthetic", "data.synthetic_size": 320, "data.loader": "tensor",
    "data.augment": "none", "train.epochs": 1, "train.batch_size": 32, "train.measure_inference": False,
    "train.progress": False, "optim.lr": 0.01, "sched.name": "constant",
}


def make_cfg(tmp_path: Path, **over: object) -> RunConfig:
    return apply_overrides(RunConfig(), {**BASE, "out": str(tmp_path / "runs"), **over})


def metrics_rows(run_dir: str | Path) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_run_directory_holds_everything(tmp_path):
    s = fit(make_cfg(tmp_path, **{"train.epochs": 2, "train.measure_inference": True, "train.target_acc": 0.01}))
    d = Path(s.run_dir)
    for f in ("config.yaml", "metrics.csv", "summary.json", "classification_report.csv", "confusion.csv",
              "confusion.png", "curves.png", "best.pt", "last.pt"):
        assert (d / f).is_file(), f
    assert list((d / "tb").glob("events.out.tfevents.*"))
    rows = metrics_rows(d)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s",
                             "train_img_per_s"]
    summary = json.loads((d / "summary.json").read_text())
    for k in ("test_acc", "test_loss", "best_epoch", "epochs_run", "stop_reason", "params", "mflops_per_img",
              "time_to_target_s", "total_s", "hardware", "world_size", "torch", "ray", "git_sha"):
        assert k in summary, k
    assert summary["stop_reason"] == "completed" and summary["epochs_run"] == 2
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["time_to_target_s"] is not None
    assert summary["infer_img_per_s"] > 0 and summary["params"] > 0 and summary["mflops_per_img"] > 0
    # The selected model is the best epoch on validation, saved as best.pt and loadable safely.
    best = torch.load(d / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"]
    last = torch.load(d / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 2
    with open(d / "classification_report.csv") as fh:
        report = list(csv.DictReader(fh))
    assert len(report) == 10 + 2 and report[0].keys() >= {"precision", "recall", "f1", "support"}


@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_best_epoch_is_the_argmax_of_val_acc_in_metrics_csv(tmp_path, lr):
    """Selection is the first epoch with the highest val_acc that metrics.csv records; best.pt holds that epoch.

    Seeded runs, so each is the same every time: at lr 0.01 every epoch ties at 100 % (the first must win), at
    lr 0.5 the val accuracy peaks mid-run; in neither is the last epoch the best, so picking the last
    (or the lowest val loss, or the test split) shows.
    """
    s = fit(make_cfg(tmp_path, **{"train.epochs": 3, "optim.lr": lr}))
    vals = [float(r["val_acc"]) for r in metrics_rows(s.run_dir)]
    want = vals.index(max(vals)) + 1
    assert want < len(vals), f"this run must not peak at its last epoch to test selection: {vals}"
    assert s.best_epoch == want and s.val_acc == pytest.approx(max(vals)), (vals, s.best_epoch)
    best = torch.load(Path(s.run_dir) / "best.pt", weights_only=True)
    assert best["epoch"] == want


def test_plateau_cuts_are_counted_in_the_summary_and_the_leaderboard(tmp_path):
    """At lr 0.1 the val loss of this easy synthetic set reaches 0 by epoch 4 (seeded: the same every time) and
    cannot improve after it, so plateau with patience 0 must cut."""
    from harness.report.leaderboard import aggregate
    from harness.report.records import collect

    s = fit(make_cfg(tmp_path, **{"sched.name": "plateau", "sched.patience": 0, "optim.lr": 0.1,
                                  "train.epochs": 6}))
    lrs = [float(r["lr"]) for r in metrics_rows(s.run_dir)]
    assert s.lr_reductions == sum(b < a for a, b in zip(lrs, lrs[1:])) >= 1, lrs
    assert json.loads((Path(s.run_dir) / "summary.json").read_text())["lr_reductions"] == s.lr_reductions
    assert fit(make_cfg(tmp_path)).lr_reductions is None  # constant: nothing to count
    rows = aggregate([r for r in collect([tmp_path / "runs"]) if r.config.sched.name == "plateau"])
    assert [row["lr_reductions"] for row in rows] == [str(s.lr_reductions)]


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_trains(tmp_path, name):
    s = fit(make_cfg(tmp_path, **{"optim.name": name, "train.max_steps_per_epoch": 3}))
    assert s.stop_reason == "completed" and s.optimizer == name


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_every_scheduler_trains(tmp_path, name):
    """Each schedule drives the lr the run records in ``metrics.csv`` (the lr of each epoch's last step)."""
    over = {"sched.name": name, "train.epochs": 3, "train.max_steps_per_epoch": 2, "sched.step_size": 1,
            "sched.milestones": [1], "sched.patience": 0}
    s = fit(make_cfg(tmp_path, **over))
    assert s.epochs_run == 3
    rows = metrics_rows(s.run_dir)
    lrs = [float(r["lr"]) for r in rows]
    if name == "constant":
        assert lrs == [0.01] * 3
    elif name == "plateau":
        # Replay the run's own val losses through torch's ReduceLROnPlateau: the lrs must be the ones it gives.
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=0)
        want = []
        for r in rows:
            want.append(opt.param_groups[0]["lr"])
            ref.step(float(r["val_loss"]))
        assert lrs == pytest.approx(want)
        assert s.lr_reductions == sum(b < a for a, b in zip(want, want[1:]))
    else:
        assert len(set(lrs)) > 1, f"{name} never changed the lr: {lrs}"


def test_every_strategy_is_exercised_here():
    # scratch everywhere, finetune/linear_probe/transfer below: a new strategy must get a test.
    assert set(STRATEGIES.names()) == {"scratch", "finetune", "linear_probe", "transfer"}


# model.init -> the std its weights must have on vanilla_cnn's FC layer (4096 -> 512: 2M weights, so the
# sample std is within 1 % of it): torch's default (uniform, bound 1/sqrt(fan_in)), xavier_uniform, and
# kaiming_normal on fan_out.
_FAN_IN, _FAN_OUT = 64 * 8 * 8, 512
INIT_STD = {"default": (1 / _FAN_IN) ** 0.5 / 3 ** 0.5, "xavier": (2 / (_FAN_IN + _FAN_OUT)) ** 0.5,
            "kaiming": (2 / _FAN_OUT) ** 0.5}


@pytest.mark.parametrize("init", list(INIT_STD))
def test_scratch_inits(tmp_path, init):
    """The scratch strategy's model has each scheme's own weight statistics, and the run trains with it."""
    cfg = make_cfg(tmp_path, **{"model.arch": "vanilla_cnn", "model.init": init})
    torch.manual_seed(0)
    fc = STRATEGIES.get("scratch").prepare(cfg, 10, 3, 32).model.fc[0]
    assert fc.weight.std().item() == pytest.approx(INIT_STD[init], rel=0.01)
    if init != "default":  # the re-initialised layers get zero biases; torch's default biases are not zero
        assert torch.count_nonzero(fc.bias) == 0
    else:
        assert torch.count_nonzero(fc.bias) > 0
    assert fit(make_cfg(tmp_path, **{"model.init": init})).strategy == "scratch"


def _first_run(tmp_path: Path, arch: str = "resnet20") -> str:
    return fit(make_cfg(tmp_path, **{"model.arch": arch, "train.max_steps_per_epoch": 2,
                                     "train.batch_size": 16})).run_dir


def test_finetune_freezes_and_splits_lrs(tmp_path):
    src = _first_run(tmp_path)
    cfg = make_cfg(tmp_path, **{"model.arch": "resnet20", "strategy.name": "finetune", "strategy.init_from": src,
                                "strategy.trainable": "head,layer3", "optim.head_lr": 0.1, "optim.body_lr": 0.001,
                                "optim.lr": 0.05, "train.max_steps_per_epoch": 3, "train.batch_size": 16})
    from harness.run.strategies import STRATEGIES as S

    prepared = S.get("finetune").prepare(cfg, 10, 3, 32)
    model = prepared.model
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen_before and all(n.startswith(("stem", "layer1", "layer2")) for n in frozen_before)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("layer3", prepared.head_prefix)))
    # Loaded weights: the body equals the earlier run's best model.
    src_state = torch.load(Path(src) / "best.pt", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], src_state["layer1.0.conv1.weight"])

    s = fit(cfg)
    trained = torch.load(Path(s.run_dir) / "last.pt", weights_only=True)
    for n, before in frozen_before.items():
        assert torch.equal(trained["model"][n], before), n
    # Frozen BatchNorm stays in eval mode, so its running statistics do not move either.
    assert torch.equal(trained["model"]["stem.1.running_mean"], src_state["stem.1.running_mean"])
    lrs = sorted({g["lr"] for g in trained["optimizer"]["param_groups"]})
    assert lrs == [0.001, 0.1]


def test_linear_probe_trains_only_the_head(tmp_path):
    src = _first_run(tmp_path, "tiny_cnn")
    s = fit(make_cfg(tmp_path, **{"strategy.name": "linear_probe", "strategy.init_from": src,
                                  "strategy.head_layers": 2}))
    d = Path(s.run_dir)
    before = torch.load(Path(src) / "best.pt", weights_only=True)["model"]
    after = torch.load(d / "last.pt", weights_only=True)["model"]
    from architectures import model_info

    head = model_info("tiny_cnn").head
    body = [k for k in before if not k.startswith(head)]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    assert any(k.startswith(head + ".") for k in after)  # a 2-layer head is a Sequential


def test_transfer_runs_both_stages(tmp_path):
    s = fit(make_cfg(tmp_path, **{"strategy.name": "transfer", "strategy.pretrain_dataset": "synthetic",
                                  "strategy.trainable": "head", "data.grayscale": True,
                                  "model.arch": "all_cnn", "train.max_steps_per_epoch": 2}))
    d = Path(s.run_dir)
    assert (d / "pretrain" / "best.pt").is_file() and (d / "pretrain" / "metrics.csv").is_file()
    assert (d / "best.pt").is_file() and s.strategy == "transfer" and s.in_chans == 1
    assert s.pretrain_val_acc is not None


def test_early_stop(tmp_path):
    # lr 0 never improves val loss, so patience 1 stops after epoch 2 of 6.
    s = fit(make_cfg(tmp_path, **{"train.epochs": 6, "optim.lr": 1e-12, "train.early_stop_patience": 1,
                                  "train.min_delta": 1.0}))
    assert s.stop_reason == "early_stop" and s.epochs_run == 2 and s.test_acc is not None
    # last.pt every 5 epochs by default, and at the epoch the run ended on, a stop's included.
    assert torch.load(Path(s.run_dir) / "last.pt", weights_only=True)["state"]["epoch"] == 2


def test_budget_stops_and_still_tests(tmp_path):
    s = fit(make_cfg(tmp_path, **{"train.epochs": 500, "train.budget": "2s", "data.synthetic_size": 2000}))
    assert s.stop_reason == "budget" and s.epochs_run < 500 and s.test_acc is not None
    assert s.total_s < 30


def test_divergence_is_recorded(tmp_path):
    s = fit(make_cfg(tmp_path, **{"optim.lr": 1e12, "optim.momentum": 0.0, "train.epochs": 3,
                                  "model.arch": "vanilla_cnn"}))
    assert s.stop_reason == "diverged" and s.status == "diverged"
    assert json.loads((Path(s.run_dir) / "summary.json").read_text())["stop_reason"] == "diverged"


def test_report_callback_sees_every_epoch_then_summary(tmp_path):
    seen: list[dict] = []
    fit(make_cfg(tmp_path, **{"train.epochs": 3, "train.max_steps_per_epoch": 2}), report=seen.append)
    assert [m.get("epoch") for m in seen[:3]] == [1, 2, 3] and not any(m["done"] for m in seen[:3])
    assert seen[-1]["done"] is True and "test_acc" in seen[-1]


def test_bf16_and_channels_last(tmp_path):
    s = fit(make_cfg(tmp_path, **{"train.precision": "bf16", "train.channels_last": True,
                                  "model.arch": "resnet20", "train.max_steps_per_epoch": 2}))
    assert s.precision == "bf16" and s.stop_reason == "completed"
