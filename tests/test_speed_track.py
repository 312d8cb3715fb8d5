"""The speed track's ingredients (issue 13), each on tiny real tensors: the airbench94 network, whitening and
dirac init, weight averaging, TTA, alternating flip and reflect translate, decoupled hyperparameters, the
piecewise schedule, fractional epochs, ConvMuon, the shipped recipes and ``harness bench speed``."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from architectures import create_model
from architectures.airbench import patch_second_moment, whitening_weights
from harness.cli import main
from harness.errors import ConfigError, HarnessError
from harness.results_csv import read_rows
from harness.run.averaging import WeightAverager
from harness.run.config import (
    OptimConfig,
    RunConfig,
    SchedConfig,
    apply_overrides,
    epoch_count,
    steps_in_epoch,
)
from harness.run.muon import ConvMuon
from harness.run.optim import (
    build_optimizer,
    build_schedule,
    decouple,
    kilostep_scale,
    param_groups,
    piecewise_factor,
)
from harness.run.recipes import RECIPES, recipe_path
from harness.run.strategies import dirac_init
from harness.run.tta import TTA_VIEWS, tta_logits
from harness.run.whiten import freeze_whiten_bias, init_whitening, whiten_layer
from loaders.augment import (
    AIRBENCH,
    BASE,
    PAGE,
    alternating_flips,
    crop_flip,
    erase_,
    sample_params,
    with_options,
)
from loaders.types import DatasetMeta, SplitData

SYN = {"data.dataset": "synthetic", "data.synthetic_size": 120, "data.num_classes": 3, "train.progress": False,
       "train.measure_inference": False, "train.checkpoint_every": 0}


# ------------------------------------------------------------------------------------------- model

def test_airbench94_shape_and_parts():
    m = create_model("airbench94", num_classes=10)
    assert sum(p.numel() for p in m.parameters()) == 1_972_792
    assert (m.whiten.out_channels, m.whiten.kernel_size, m.whiten.padding) == (24, (2, 2), (0, 0))
    assert [m.layer1[0].out_channels, m.layer2[0].out_channels, m.layer3[0].out_channels] == [64, 256, 256]
    assert m.head.bias is None
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert len(bns) == 6 and all(not b.weight.requires_grad and b.bias.requires_grad for b in bns)
    x = torch.randn(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 256, 3, 3)
    torch.testing.assert_close(m(x), m.head(feats.amax(dim=(2, 3))) / 9)


# ------------------------------------------------------------------------------- whitening, dirac

def test_whitening_filters_whiten_the_patches():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.8, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 0.3]])
    x = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 12, 12, generator=g))
    w = whitening_weights(x, 2, eps=0.0)
    assert w.shape == (24, 3, 2, 2)
    torch.testing.assert_close(w[12:], -w[:12])
    out = F.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    torch.testing.assert_close(out.T @ out / out.shape[0], torch.eye(12, dtype=torch.float64), atol=1e-3, rtol=0)
    assert patch_second_moment(x, 2).shape == (12, 12)


def test_init_whitening_freezes_filters_and_later_the_bias():
    m = create_model("airbench94", num_classes=3)
    imgs = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    s = init_whitening(m, "airbench94", imgs, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"), False)
    assert s >= 0 and not m.whiten.weight.requires_grad and m.whiten.bias.requires_grad
    assert float(m.whiten.bias.detach().abs().sum()) == 0.0
    names = [id(p) for g in param_groups(m, OptimConfig(), None, 0.1) for p in g["params"]]
    assert id(m.whiten.weight) not in names and id(m.whiten.bias) in names, "the filters are left out of it"
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for frozen in (False, True, True):
        if frozen:
            freeze_whiten_bias(m, "airbench94")  # again at every later epoch: idempotent
        before = m.whiten.bias.detach().clone()
        opt.zero_grad()
        F.cross_entropy(m(imgs[:4].float() / 255), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
        moved = not torch.equal(m.whiten.bias, before)
        assert moved is not frozen, f"the bias {'moved' if moved else 'stood still'} (frozen: {frozen})"
    with pytest.raises(ConfigError, match="resnet20 has no patch-whitening conv"):
        whiten_layer(create_model("resnet20", num_classes=3), "resnet20")


def test_freezing_the_whitening_bias_does_not_recompile_the_training_graph():
    # Issue 21: requires_grad_(False) mid-run failed dynamo's guard on the parameter, so the compiled training
    # graph recompiled at the first step after model.whiten_bias_epochs, inside a timed epoch.
    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, inputs: list) -> Callable:
        graphs.append(gm)  # called for every graph dynamo compiles, recompiles included
        return gm.forward

    torch._dynamo.reset()
    m = create_model("airbench94", num_classes=3)
    init_whitening(m, "airbench94", torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), (0.5,) * 3,
                   (0.25,) * 3, torch.device("cpu"), False)
    step = torch.compile(m, backend=counting_backend, dynamic=False)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(step(x), y).backward()
    compiled = len(graphs)
    freeze_whiten_bias(m, "airbench94")
    m.zero_grad()
    F.cross_entropy(step(x), y).backward()
    assert len(graphs) == compiled, "freezing the bias compiled the training graph again"
    assert m.whiten.bias.grad is None and all(p.grad is not None for n, p in m.named_parameters()
                                              if p.requires_grad and not n.startswith("whiten"))


def test_dirac_init_makes_identity_filters():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    assert dirac_init(nn.Sequential(conv, nn.Conv2d(6, 2, 3))) == 1  # the 6 -> 2 conv cannot be the identity
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x)[:, :4], x)


# ------------------------------------------------------------------------------- weight averaging

def test_ema_averages_and_lookahead_pulls_back():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = WeightAverager(lin, "ema", decay=0.5, every=1, total_steps=1, ramp=0.0)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.step()
    assert ema.avg["weight"].tolist() == [[0.5, 0.5]] and lin.weight.tolist() == [[1.0, 1.0]]
    with ema.swapped():
        assert lin.weight.tolist() == [[0.5, 0.5]]
    assert lin.weight.tolist() == [[1.0, 1.0]], "the live weights come back after evaluation"
    look = WeightAverager(lin, "lookahead", decay=0.5, every=2, total_steps=4, ramp=1.0)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    look.step()
    assert lin.weight.tolist() == [[3.0, 3.0]], "no update between every-th steps"
    look.step()  # decay 0.5^2 x (2/4)^1 = 0.125: avg = 1 + 0.875 x 2
    torch.testing.assert_close(lin.weight, torch.full((1, 2), 2.75))
    assert look.decay_at(4) == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------- TTA

class _Count(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x[:, 0, :, :2].reshape(x.shape[0], -1)  # depends on position: flips and shifts change it


def test_tta_views_and_weights():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    for mode, views in TTA_VIEWS.items():
        m = _Count()
        tta_logits(m, x, mode)
        assert m.calls == views
    m = _Count()
    torch.testing.assert_close(tta_logits(m, x, "flip"), 0.5 * (m(x) + m(x.flip(-1))))
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    pair = lambda v: 0.5 * (m(v) + m(v.flip(-1)))  # noqa: E731
    want = 0.5 * pair(x) + 0.25 * (pair(p[..., :4, :4]) + pair(p[..., 2:, 2:]))
    torch.testing.assert_close(tta_logits(m, x, "flip_translate"), want)


# ---------------------------------------------------------------------------------- augmentation

def test_alternating_flip_alternates_per_image():
    idx = np.random.default_rng(0).permutation(50)
    e0, e1, e2 = (alternating_flips(50, idx, e, seed=3) for e in range(3))
    assert (e0 != e1).all() and (e0 == e2).all() and 10 < e0.sum() < 40
    order = np.argsort(idx)  # the same image in another visiting order gets the same flip
    assert (alternating_flips(50, np.arange(50), 1, 3) == e1[order]).all()


def test_reflect_translate_is_a_crop_of_the_reflect_padded_image():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    spec = with_options(BASE, "none", 2)
    assert spec.pad_mode == "reflect" and spec.crop_pad == 2 and not spec.flip
    p = sample_params(spec, 6, 8, 8, np.random.default_rng(1))
    out = crop_flip(x, p, 2, "reflect")
    padded = F.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    for i in range(6):
        dy, dx = int(p.dy[i]), int(p.dx[i])
        assert torch.equal(out[i].float(), padded[i, :, dy:dy + 8, dx:dx + 8])


def test_page_cutout_is_one_8x8_square_inside_every_image():
    p = sample_params(PAGE, 64, 32, 32, np.random.default_rng(2))
    top, left, eh, ew = p.erase
    assert (eh == 8).all() and (ew == 8).all() and (top + 8 <= 32).all() and (left + 8 <= 32).all()
    assert PAGE.pad_mode == "reflect" and PAGE.crop_pad == 4 and PAGE.flip
    out = erase_(torch.ones(64, 3, 32, 32), p)
    assert ((out == 0).sum(dim=(1, 2, 3)) == 3 * 64).all()  # 64 pixels x 3 channels zeroed per image
    assert len(set(zip(top.tolist(), left.tolist()))) > 20  # placed at random


def _split(n: int = 40) -> tuple[SplitData, DatasetMeta]:
    g = torch.Generator().manual_seed(0)
    split = SplitData(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
                      torch.arange(n) % 2)
    return split, DatasetMeta("toy", ["a", "b"], (0.5,) * 3, (0.25,) * 3, (3, 8, 8), "synthetic")


def test_tensor_loader_flips_each_image_the_other_way_next_epoch():
    from loaders import build_loader

    split, meta = _split()
    spec = with_options(AIRBENCH, "alternating", 0)  # no translation: the flip alone is visible
    ld = build_loader(split, meta, backend="tensor", train=False, batch_size=40, augment="none")
    plain = next(iter(ld))[0]
    tr = build_loader(split, meta, backend="tensor", train=True, batch_size=40, augment=spec, seed=1)
    seen = []
    for e in range(2):
        tr.set_epoch(e)
        idx = tr.indices()
        x = next(iter(tr))[0]
        flipped = torch.tensor([torch.equal(x[k], plain[i].flip(-1)) for k, i in enumerate(idx)])
        assert all(torch.equal(x[k], plain[i]) or flipped[k] for k, i in enumerate(idx))
        seen.append(flipped[np.argsort(idx)])
    assert (seen[0] != seen[1]).all()


def test_backends_without_the_option_refuse_in_one_line():
    from loaders import build_loader

    split, meta = _split()
    with pytest.raises(HarnessError, match="torchvision backend has no alternating flip"):
        build_loader(split, meta, backend="torchvision", train=True, batch_size=8, augment=AIRBENCH, num_workers=0)
    cfg = apply_overrides(RunConfig(), {**SYN, "data.loader": "torchvision", "data.augment": "airbench",
                                        "model.arch": "tiny_cnn"})
    from harness.run.resolve import resolve

    with pytest.raises(HarnessError, match="no alternating flip; use --loader tensor"):
        resolve(cfg)


# ------------------------------------------------------------------------- optimizer and schedule

def test_decoupled_decay_is_independent_of_lr_and_bn_bias_multiplier():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    c = OptimConfig(lr=11.5, momentum=0.85, weight_decay=0.0153, bn_bias_lr_mult=64.0, decoupled=True)
    groups = decouple(param_groups(m, c, None, c.lr), c, 1024)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"body", "body_bn_bias"}
    k = 1024 / kilostep_scale(0.85)
    assert by_name["body"]["lr"] == pytest.approx(11.5 * k)
    assert by_name["body_bn_bias"]["lr"] == pytest.approx(64 * 11.5 * k)
    for g in groups:  # torch's decay step is lr x wd: the same for every group
        assert g["lr"] * g["weight_decay"] == pytest.approx(0.0153 * k)
    c2 = OptimConfig(lr=3.0, momentum=0.85, weight_decay=0.0153, decoupled=True)
    g2 = decouple(param_groups(m, c2, None, c2.lr), c2, 1024)
    assert g2[0]["lr"] * g2[0]["weight_decay"] == pytest.approx(0.0153 * k)


def test_piecewise_schedule_rises_peaks_and_falls_to_the_floor():
    assert piecewise_factor(0, 100, 0.2, 0.23, 0.07) == pytest.approx(0.2)
    assert piecewise_factor(23, 100, 0.2, 0.23, 0.07) == pytest.approx(1.0)
    assert piecewise_factor(100, 100, 0.2, 0.23, 0.07) == pytest.approx(0.07)
    m = nn.Linear(2, 2)
    c = OptimConfig(lr=1.0)
    opt = build_optimizer(param_groups(m, c, None, 1.0), c)
    s = build_schedule(opt, SchedConfig(name="piecewise", warmup_start_factor=0.2), 2.5, 4)  # 10 steps
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        s.step_batch()
        lrs.append(opt.param_groups[0]["lr"])
    peak = int(np.argmax(lrs))
    assert peak == 3 and all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:])) and lrs[-1] == pytest.approx(0.07)


def test_conv_muon_orthogonalises_filters_and_round_trips():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    m(torch.randn(1, 3, 6, 6))
    opt = ConvMuon([{"params": list(m.parameters()), "lr": 0.1, "name": "body"}], lr=0.1, momentum=0.9,
                   weight_decay=0.0, muon_lr=0.05, muon_momentum=0.0)
    assert [g["name"] for g in opt.param_groups] == ["body", "conv_muon"]
    w0 = m[0].weight.detach().clone()
    F.cross_entropy(m(torch.randn(4, 3, 6, 6)), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    upd = ((m[0].weight - w0) / -0.05).detach().view(8, -1)
    sv = torch.linalg.svdvals(upd)
    assert sv.max() < 1.3 and sv.min() > 0.5, "Muon's update of the flattened filters is near-orthogonal"
    opt.param_groups[1]["lr"] = 0.01  # a schedule's change reaches the inner Muon
    opt.step()
    assert opt._muon.param_groups[0]["lr"] == 0.01
    state = opt.state_dict()
    opt.load_state_dict(state)
    assert set(state) == {"outer", "sgd", "muon"}


def test_conv_muon_steps_channels_last_filters_as_it_steps_contiguous_ones():
    # channels_last is the CUDA default: its filters cannot be .view()ed flat (issue 21: "view size is not
    # compatible"). The update must be the contiguous model's, in the filters' own storage.
    def trained(channels_last: bool) -> nn.Module:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.LazyLinear(2))
        m(torch.randn(1, 3, 8, 8))
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        m = m.to(memory_format=fmt)
        w0 = m[0].weight.detach().clone()
        opt = ConvMuon([{"params": list(m.parameters()), "lr": 0.1, "name": "body"}], lr=0.1, momentum=0.9,
                       weight_decay=0.0, muon_lr=0.05, muon_momentum=0.9)
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=fmt)
        for _ in range(2):  # the second step uses Muon's momentum, kept per view
            opt.zero_grad()
            F.cross_entropy(m(x), torch.tensor([0, 1, 0, 1])).backward()
            opt.step()
        assert m[0].weight.is_contiguous(memory_format=fmt), "updated in place, layout kept"
        assert (m[0].weight - w0).abs().max() > 1e-3, "Muon moved the filters"
        return m

    plain, cl = trained(False), trained(True)
    for a, b in zip(plain.parameters(), cl.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- fractional epochs

def test_fractional_epochs_cut_the_last_epoch():
    assert epoch_count(9.9) == 10 and epoch_count(10) == 10 and epoch_count(1) == 1
    steps = [steps_in_epoch(e, 9.9, 49) for e in range(10)]
    assert steps[:9] == [49] * 9 and steps[9] == round(9.9 * 49) - 9 * 49
    assert apply_overrides(RunConfig(), {"train.epochs": "9.9"}).train.epochs == 9.9
    assert isinstance(apply_overrides(RunConfig(), {"train.epochs": 10}).train.epochs, int)  # hashes unchanged


def test_run_with_fractional_epochs_and_every_ingredient(tmp_path):
    from harness.run.resolve import resolve
    from harness.run.trainer import fit

    over = {**SYN, "out": str(tmp_path), "model.arch": "airbench94", "model.whiten": True,
            "model.whiten_bias_epochs": 1, "model.init": "dirac", "data.augment": "airbench", "train.epochs": 1.5,
            "train.batch_size": 32, "train.tta": "flip_translate", "train.ema": "lookahead", "train.ema_every": 1,
            "optim.decoupled": True, "optim.lr": 2.0, "optim.bn_bias_lr_mult": 8.0, "sched.name": "piecewise",
            "train.target_acc": 0.01, "data.img_size": 16, "data.synthetic_size": 90,
            "model.kwargs": {"widths": [8, 16, 16]}}
    s = fit(resolve(apply_overrides(RunConfig(), over)))
    assert s.epochs_run == 2 and s.epochs_planned == 1.5 and s.tta == "flip_translate" and s.ema == "lookahead"
    assert s.whiten_s > 0 and s.timed_to_target_s is not None and s.test_acc is not None
    assert s.timed_to_target_s <= s.whiten_s + s.train_s + s.val_s + 1e-6
    import csv

    rows = list(csv.DictReader(open(f"{s.run_dir}/metrics.csv")))
    n_train = s.num_train
    assert float(rows[1]["train_img_per_s"]) * float(rows[1]["epoch_s"]) == pytest.approx(
        min(n_train, 32 * (round(1.5 * math.ceil(n_train / 32)) - math.ceil(n_train / 32))), rel=0.01)


# ------------------------------------------------------------------------------ recipes and bench

@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_resolves_and_cites_its_source(name):
    from harness.run.config import load_config
    from harness.run.resolve import resolve

    text = recipe_path(name).read_text()
    assert text.startswith("#") and any(w in text.split("\n\n")[0] for w in ("arXiv", "figure", "fig."))
    resolve(load_config(recipe_path(name)))


def test_recipe_flag_errors_are_one_line(capsys):
    assert main(["run", "--recipe", "speed9"]) == 2
    assert "unknown recipe 'speed9'; did you mean speed94?" in capsys.readouterr().err
    assert main(["run", "--recipe", "speed94", "--config", "x.yaml"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", "--recipe", "speed94", "--print-config", "--tta", "flip", "--ema", "ema"]) == 0
    out = capsys.readouterr().out
    assert "arch: airbench94" in out and "tta: flip" in out and "ema: ema" in out


@pytest.fixture
def clean_sha(monkeypatch):
    """Rows name a fixed committed sha (stated by HARNESS_GIT_SHA), whatever state this checkout is in."""
    from harness.provenance import git_sha

    git_sha.cache_clear()
    monkeypatch.setenv("HARNESS_GIT_SHA", "0123456789")
    yield
    git_sha.cache_clear()


def test_bench_speed_writes_speed_rows(tmp_path, capsys, clean_sha):
    from harness.report.docs import render_speed_docs
    from harness.results_csv import THROUGHPUT_COLUMNS, append_rows

    out = tmp_path / "throughput.csv"
    argv = ["bench", "speed", "--recipe", "speed94", "--recipe", "resnet20", "--target", "0.01", "--runs", "1",
            "--runs-dir", str(tmp_path), "--out", str(out), "--stop-at-target"]
    for k, v in {**SYN, "model.arch": "tiny_cnn", "model.whiten": False, "model.whiten_bias_epochs": 0,
                 "train.epochs": 1, "train.batch_size": 32, "train.tta": "flip"}.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "speed94" in text and "resnet20" in text and "peer:" in text  # the airbench peer: run or a skip line
    rows = read_rows(out)
    assert [r["kind"] for r in rows] == ["speed", "speed"] and rows[0]["ratio"] == "1"
    assert rows[0]["reached"] == "1" and rows[0]["tta"] == "flip" and float(rows[0]["time_s"]) > 0
    page = render_speed_docs(tmp_path, tmp_path / "docs").read_text()  # one table for the call, then the records
    assert "## Target 0.01 val" in page and page.count("| speed94 | tiny_cnn |") == 1 and "| 1.00 | flip |" in page
    assert "| 100 % |" in page and "94.01" in page
    assert "| 0123456789 (HARNESS_GIT_SHA) |" in page, "each row names its own sha"
    # A row made by uncommitted code stays in the CSV but is not published.
    append_rows(out, [{**rows[0], "git_sha": "cf12163377+dirty", "date": "2026-01-01T00:00:00+00:00"}],
                THROUGHPUT_COLUMNS)
    page = render_speed_docs(tmp_path, tmp_path / "docs").read_text()
    assert "cf12163377+dirty" not in page.split("Not published")[0] and "2026-01-01" not in page
    assert "Not published: 1 speed row(s)" in page and "cf12163377+dirty" in page
    assert rows[0]["seeds"] == "0" and rows[0]["runs"] == "1"
    assert main(["bench", "speed", "--recipe", "nope"]) == 2
    assert main(["bench", "speed", "--recipe", "speed94", "--target", "2"]) == 2


def test_speed_page_time_cell_says_how_many_runs_reached():
    from harness.report.docs import _speed_time

    assert _speed_time({"time_s": "1457.4", "time_s_std": "0", "reached": "0.5", "runs": "2"}) == "1457.4 (1 of 2 runs)"
    assert _speed_time({"time_s": "330.07", "time_s_std": "2.28", "reached": "1", "runs": "2"}) == "330.1 ± 2.3"
    assert _speed_time({"time_s": "", "reached": "0", "runs": "2"}) == "–"


def test_airbench_peer_files_are_the_same_images_in_airbench_layout(tmp_path):
    """The peer's data: what airbench 0.1.x's CifarLoader reads (uint8 NHWC ``images``, ``labels``, ``classes``),
    holding the harness's own train and test images, so both sides train and test on the same data."""
    from harness.bench.speed import airbench_files
    from loaders.types import RawData

    g = torch.Generator().manual_seed(0)
    raw = RawData(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(6) % 2,
                  torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(4) % 2,
                  ("a", "b"), "synthetic")
    airbench_files(tmp_path / "cifar10", raw)
    for name, x, y in (("train.pt", raw.train_x, raw.train_y), ("test.pt", raw.test_x, raw.test_y)):
        d = torch.load(tmp_path / "cifar10" / name)
        assert d["images"].dtype == torch.uint8 and d["images"].shape == (len(x), 32, 32, 3)
        assert torch.equal(d["images"].permute(0, 3, 1, 2), x)  # as CifarLoader turns them back into NCHW
        assert torch.equal(d["labels"], y) and d["classes"] == ["a", "b"]


def test_resumed_run_goes_on_averaging_where_it_stopped(tmp_path):
    """``last.pt`` carries the averaged weights: an interrupted --ema run resumes to the same result as one
    that never stopped (restarting the average from the live weights would change the selected weights)."""
    from harness.run.trainer import fit

    over = {**SYN, "model.arch": "tiny_cnn", "train.epochs": 3, "train.batch_size": 16, "train.ema": "ema",
            "train.ema_decay": 0.9, "train.ema_every": 1, "train.checkpoint_every": 1, "data.img_size": 16}
    whole = fit(apply_overrides(RunConfig(), {**over, "out": str(tmp_path / "a")}))

    def stop_after_epoch_1(m: dict) -> None:
        if not m.get("done") and m.get("epoch") == 1:
            raise KeyboardInterrupt

    cfg = apply_overrides(RunConfig(), {**over, "out": str(tmp_path / "b")})
    run_dir = tmp_path / "b" / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, run_dir=run_dir, report=stop_after_epoch_1)
    assert torch.load(run_dir / "last.pt", weights_only=False)["averager"]["steps"] > 0
    resumed = fit(cfg, run_dir=run_dir, resume=True)
    assert resumed.epochs_run == 3
    assert resumed.val_loss == pytest.approx(whole.val_loss, rel=1e-5)
    assert resumed.test_acc == whole.test_acc
