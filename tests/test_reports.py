"""The report reproductions: their matrices, the features they need, and `harness reproduce` (issue 10).

Every report matrix parses, every row resolves to a valid config, and every distinct code path among
its rows trains one step on synthetic data at a tiny size. The features the reports need (resized
crop, hue, local weights files, resize_to, the activation study, poly_cyclic) are each checked against
the library they stand in for. `harness reproduce` is checked on leaderboard rows written by a real
sweep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import child_env
from torchvision.transforms.v2 import functional as TF

from harness.cli import main
from harness.errors import ConfigError
from harness.results_csv import read_rows
from harness.run.config import RunConfig, apply_overrides
from harness.run.resolve import resolve
from harness.run.trainer import fit
from harness.sweep.matrix import load_matrix, parse_matrix, select

REPORTS = ["allcnn", "optuna", "kfold", "attention", "strategies"]
SEARCHES = ["optuna-search", "kfold-grid"]

TINY = {"data.dataset": "synthetic", "data.synthetic_size": 64, "train.epochs": 1, "train.batch_size": 4,
        "train.eval_batch_size": 16, "train.max_steps_per_epoch": 1, "train.measure_inference": False,
        "train.progress": False, "train.budget": None, "data.grayscale": False}


def test_list_presets_names_the_five_report_matrices(capsys):
    assert main(["list", "presets"]) == 0
    out = capsys.readouterr().out
    for name in REPORTS + SEARCHES:
        assert name in out
    from harness.report.reproduce import report_names

    assert sorted(report_names()) == sorted(REPORTS)


@pytest.mark.parametrize("name", REPORTS)
def test_every_report_row_has_a_reference_and_a_valid_config(name):
    m = load_matrix(name)
    refs = m.all_references()
    assert refs and m.report["title"] and m.report["protocol"]
    assert all(r["metric"] in ("test", "val") for r in refs)
    for trial in m.configurations():
        assert trial["references"], trial["axes"]
        cfg = apply_overrides(RunConfig(), trial["overrides"])
        assert cfg.model.arch


def test_strategies_covers_every_table_row():
    ids = {r["row"] for r in load_matrix("strategies").all_references()}
    counts = {"S1": 6, "S2": 7, "S3": 9, "S4": 11, "S5": 6, "S6": 5, "S7": 6}
    for table, n in counts.items():
        assert {f"{table}.{i}" for i in range(1, n + 1)} <= ids, table
    assert len(ids) == 50


def test_repeated_rows_run_once_and_answer_both():
    m = load_matrix("strategies")
    by_label = {t["axes"]["row"]: t for t in m.configurations()}
    assert "S2.1" not in by_label and "S4.1" not in by_label  # S2.1 and S3.3 are S1.1, S4.1 is S3.1
    assert {r["row"] for r in by_label["S1.1"]["references"]} == {"S1.1", "S2.1", "S3.3"}
    assert {r["row"] for r in by_label["S3.1"]["references"]} == {"S3.1", "S4.1"}


def test_only_selects_labels_and_merged_rows():
    m = load_matrix("strategies")
    picked = select(m.configurations(), ["row=S2.1,S4.[23]"], m)
    assert sorted(t["axes"]["row"] for t in picked) == ["S1.1", "S3.7", "S4.2"]  # S4.3 is S3.7
    with pytest.raises(ConfigError, match="no trial"):
        select(m.configurations(), ["row=Z*"], m)
    with pytest.raises(ConfigError, match="unknown axis"):
        select(m.configurations(), ["rwo=S1.1"], m)


@pytest.mark.parametrize("bad, msg", [
    ("{label: r1, lr: 0.1, reference: {row: X1, metric: train, figure: 0.5}}", "metric must be test or val"),
    ("{label: r1, lr: 0.1, reference: {row: X1, metric: test, figure: 57}}", "fraction in"),
    ("{label: r1, lr: 0.1, reference: {row: X1, metric: test, figur: 0.5}}", "unknown reference key 'figur'"),
    ("{label: r1, lr: 0.1, reference: {figure: 0.5}}", "a reference is"),
])
def test_bad_references_are_one_line_errors_with_the_line(bad, msg):
    text = f"axes:\n  row:\n    - {bad}\n"
    with pytest.raises(ConfigError, match=msg) as e:
        parse_matrix(text, "m.yaml")
    assert str(e.value).startswith("m.yaml:") and "\n" not in str(e.value)


def _weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def _one_step_configs(name: str, tmp_path: Path) -> list[dict]:
    """The matrix's rows, one per distinct code path (model and its keywords, strategy, augment, schedule,
    optimizer, head), at tiny sizes; pretrained weights come from a file the test writes."""
    weights = str(_weights_file(tmp_path))
    m = load_matrix(name)
    trials = m.configurations() if m.search != "optuna" else [{"overrides": m.resolve(
        {a.name: a.labels[0] if a.labels else (int(a.low) if a.kind == "randint" else a.low) for a in m.axes})}]
    seen, out = set(), []
    for t in trials:
        o = {k: v for k, v in t["overrides"].items() if k not in ("data.img_size", "data.dataset")}
        if o.get("strategy.weights"):
            if o.get("model.arch") != "tv_resnet18":
                o["strategy.weights"] = None  # only ResNet-18's file is written here
                o["strategy.name"] = "scratch"
                o.pop("strategy.trainable", None)
            else:
                o["strategy.weights"] = weights
        if o.get("strategy.pretrain_dataset"):
            o["strategy.pretrain_dataset"] = "synthetic"
        key = json.dumps({k: o.get(k) for k in ("model.arch", "model.kwargs", "strategy.name", "strategy.trainable",
                                                "strategy.head_layers", "strategy.freeze", "data.augment",
                                                "sched.name", "optim.name")}, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out


@pytest.mark.parametrize("name", REPORTS + SEARCHES)
def test_every_row_trains_one_step_on_synthetic_data(name, tmp_path):
    for i, o in enumerate(_one_step_configs(name, tmp_path)):
        cfg = apply_overrides(RunConfig(), {**o, **TINY, "out": str(tmp_path / f"runs{i}")})
        if cfg.model.arch == "attn_backbone":  # the report's 18.7M-parameter model: one narrow backbone here
            kw = dict(cfg.model.kwargs)
            kw["channels"] = [[3, 8, 16]] if len(kw.get("channels", [[0, 0, 0]])[0]) == 3 else [[3, 4, 4, 4, 4, 8]]
            cfg.model.kwargs = kw
        s = fit(resolve(cfg), tmp_path / f"run{i}")
        assert s.stop_reason == "completed" and s.test_acc is not None, (o, s.error)


# ---------------------------------------------------------------------------------------------
# The features the reports need


def test_hue_shift_matches_torchvision():
    from loaders.augment import adjust_hue

    x = torch.rand(3, 3, 9, 7)
    for f in (-0.5, -0.2, 0.0, 0.1, 0.45):
        ours = adjust_hue(x, torch.full((3,), f))
        ref = torch.stack([TF.adjust_hue(xi, f) for xi in x])
        assert torch.allclose(ours, ref, atol=1e-5), f


def test_resized_crop_is_torchvisions_crop_and_resize_and_stays_in_its_scale_range():
    from loaders.augment import AugmentSpec, float_stage, sample_params

    spec = AugmentSpec("t", resized_crop=(0.5, 0.9))
    gen = np.random.default_rng(0)
    p = sample_params(spec, 400, 32, 32, gen)
    theta = p.crop
    cw, ch = theta[:, 0, 0] * 32, theta[:, 1, 1] * 32
    area = cw * ch / (32 * 32)
    assert area.min() >= 0.5 - 0.05 and area.max() <= 0.9 + 0.05  # rounding to whole pixels
    assert np.all(np.exp(np.abs(np.log(cw / ch))) <= 4 / 3 + 0.1)
    # One box, applied by our batched op and by torchvision's resized_crop (bilinear, no antialias).
    x = torch.rand(1, 3, 32, 32)
    one = type(p)(p.dy[:1], p.dx[:1], p.flip[:1], None, None, None, theta[:1], None)
    ours = float_stage(x, spec, one)
    left = round((theta[0, 0, 2] + 1) * 32 / 2 - cw[0] / 2)
    top = round((theta[0, 1, 2] + 1) * 32 / 2 - ch[0] / 2)
    ref = TF.resized_crop(x, top, left, round(float(ch[0])), round(float(cw[0])), [32, 32], antialias=False)
    assert (ours - ref).abs().mean() < 0.02


@pytest.mark.parametrize("preset", ["resized", "color"])
def test_new_presets_run_in_the_tensor_and_torchvision_backends(preset):
    from loaders.build import build_loader
    from loaders.splits import load_splits
    from loaders.types import DataOptions

    splits = load_splits(DataOptions(dataset="synthetic", synthetic_size=64))
    for backend in ("tensor", "torchvision"):
        loader = build_loader(splits.train, splits.meta, backend=backend, train=True, batch_size=16,
                              augment=preset, num_workers=0)
        x, y = next(iter(loader))
        assert x.shape == (16, *splits.meta.shape) and torch.isfinite(x).all(), backend


_OPENED: list[str] | None = None  # while a list, the audit hook below appends every path the process opens


def _count_opens(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, os.PathLike)):
        _OPENED.append(os.fspath(args[0]))


sys.addaudithook(_count_opens)  # audit hooks cannot be removed: it records only while _OPENED is a list


def test_finetune_from_a_local_weights_file_offline(tmp_path, capsys):
    global _OPENED
    weights = _weights_file(tmp_path)
    args = ["run", "--arch", "tv_resnet18", "--strategy", "finetune", "--weights", str(weights), "--dataset",
            "synthetic", "--epochs", "1", "--set", "data.synthetic_size=64", "--set", "train.max_steps_per_epoch=1",
            "--set", "train.measure_inference=false", "--set", "strategy.trainable=head,layer4",
            "--out", str(tmp_path / "runs")]
    env_before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path / "no-hub")  # nothing cached: the file is the only source
    _OPENED = []
    try:
        assert main(args) == 0
        opened = _OPENED
    finally:
        _OPENED = None
        if env_before is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = env_before
    assert "stop_reason=completed" in capsys.readouterr().out
    # the config is resolved once: the file is read when the run is checked and when the model is built
    assert opened.count(str(weights)) == 2, opened.count(str(weights))


def test_weights_file_loads_the_files_tensors(tmp_path):
    from architectures import create_model

    src = torchvision.models.resnet18()
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model = create_model("tv_resnet18", num_classes=10, weights=str(path))
    assert torch.equal(model.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert model.fc.out_features == 10


@pytest.mark.parametrize("content, msg", [
    (None, "no such file"), ({"a": 1}, "no state dict of tensors"), ("text", "not a torch state-dict file"),
    ({"fc.weight": torch.zeros(3, 3)}, "does not fit"),
])
def test_bad_weights_files_are_one_line_errors(tmp_path, capsys, content, msg):
    path = tmp_path / "w.pth"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        torch.save(content, path)
    rc = main(["run", "--arch", "tv_resnet18", "--strategy", "finetune", "--weights", str(path), "--dataset",
               "synthetic", "--epochs", "1", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resize_to_feeds_the_model_imagenet_sized_input():
    from architectures import create_model

    seen = []
    model = create_model("tv_alexnet", num_classes=10, resize_to=224)
    model.features[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 10)
    assert seen == [(2, 3, 224, 224)]
    assert "classifier.6" in dict(model.named_modules())  # module names (for --trainable) unchanged


def test_forward_mflops_counts_grey_and_colour_apart():
    from harness.report.rows import forward_mflops

    grey = apply_overrides(RunConfig(), {"model.arch": "all_cnn", "data.dataset": "imagenette", "data.grayscale": True})
    colour = apply_overrides(grey, {"data.grayscale": False})
    # All-CNN's first conv: 64 x 3 x 3 multiply-adds a pixel per input channel, at 64 x 64 (imagenette's size)
    extra = 2 * 64 * 9 * 2 * 64 * 64 / 1e6
    assert forward_mflops(colour) - forward_mflops(grey) == pytest.approx(extra, rel=0.01)


@pytest.mark.parametrize("act, cls", [("relu", torch.nn.ReLU), ("leaky_relu", torch.nn.LeakyReLU), ("elu", torch.nn.ELU)])
def test_tiny_cnn_takes_the_activation_study(act, cls):
    from architectures import create_model

    model = create_model("tiny_cnn", num_classes=10, activation=act)
    assert any(isinstance(m, cls) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 25_578


def test_poly_cyclic_decays_polynomially_then_cycles():
    from harness.run.config import SchedConfig
    from harness.run.optim import build_schedule

    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    s = build_schedule(opt, SchedConfig(name="poly_cyclic", poly_epochs=2, cycle_epochs=1), 6, 10)
    lrs = []
    for _ in range(60):
        opt.step()
        s.scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(a > b for a, b in zip(lrs[:18], lrs[1:19]))  # 20 steps of linear (power 1) decay
    assert max(lrs[25:]) == pytest.approx(0.1) and min(lrs[25:]) == pytest.approx(0.01)  # then 0.01 <-> 0.1


def test_simple_cnn_bn_search_knobs_change_the_model():
    from architectures import create_model

    base = create_model("simple_cnn_bn", num_classes=10)
    wide = create_model("simple_cnn_bn", num_classes=10, filters1=16, filters2=128, kernel_size=5, dense=512)
    assert sum(p.numel() for p in base.parameters()) == 1_070_890  # the O1 defaults (architectures/basic.py)
    assert wide.layer1[0].kernel_size == (5, 5) and wide.head.in_features == 512
    with pytest.raises(Exception, match="odd"):
        create_model("simple_cnn_bn", num_classes=10, kernel_size=4)


# ---------------------------------------------------------------------------------------------
# harness reproduce


def test_verdicts_hold_within_noise_and_never_number_a_row_not_run():
    from harness.report.rows import Row

    ref = {"row": "X", "figure": 0.6, "metric": "test"}
    assert Row(ref, {}, ours=0.62, std=0.005, n=2).verdict == "holds"
    assert Row(ref, {}, ours=0.55, std=0.005, n=2).verdict == "worse"
    assert Row(ref, {}, ours=0.55, std=0.03, n=2).verdict == "holds"  # 2 x std = 6 pp
    assert Row(ref, {}, ours=0.70, std=None, n=1).verdict == "better"
    assert Row(ref, {}).verdict == "not run" and Row(ref, {}).diff is None
    assert Row({**ref, "figure": None}, {}, ours=0.5, n=2).verdict == "no figure"


@pytest.mark.parametrize("ours, std, verdict", [
    (0.63, None, "holds"), (0.57, None, "holds"),  # exactly 3 pp either way
    (0.6301, None, "better"), (0.5699, None, "worse"),
    (0.64, 0.02, "holds"), (0.56, 0.02, "holds"),  # exactly 2 x std = 4 pp
    (0.6401, 0.02, "better"), (0.5599, 0.02, "worse"),
    (0.6301, 0.01, "better"),  # 2 x std = 2 pp is below the 3 pp floor: the floor applies
])
def test_verdict_holds_at_exactly_max_3pp_2std(ours, std, verdict):
    from harness.report.rows import Row

    assert Row({"row": "X", "figure": 0.6, "metric": "test"}, {}, ours=ours, std=std, n=2).verdict == verdict


REPORTS_MD = Path(__file__).resolve().parents[2] / "shared" / "reports.md"  # ../shared/reports.md of the checkout
T3_NAMES = {"step": "StepLR", "cyclic": "CyclicLR", "onecycle": "OneCycleLR", "plateau": "ReduceLROnPlateau"}


def _reported_figure(text: str, row: str, metric: str) -> float | None:
    """The figure ``reports.md`` gives for ``row`` on ``metric``, as a fraction; None where it gives none."""
    cells = {}  # row id or range -> the "reported" cell of its table line
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(parts) >= 3 and re.fullmatch(r"[A-Z]\d+(\.\d+)?(-[A-Z]\d+\.\d+)?", parts[0]):
            cells[parts[0]] = parts[-1]
    if row == "T4":  # the SequentialLR schedule, in the prose after the attention table
        return float(re.search(r"SequentialLR \(PolyLR then CyclicLR:\s+(\d+\.\d+) %", text)[1]) / 100
    if row.startswith("T3."):
        return float(re.search(rf"{T3_NAMES[row[3:]]} (\d+\.\d+) %", cells["T3"])[1]) / 100
    for key, cell in cells.items():
        if "-" in key:  # "S1.1-S1.6": the cell's decimals, in row order
            head, last = key.split("-")
            stem = head.rsplit(".", 1)[0]
            n = int(last.rsplit(".", 1)[1])
            numbers = re.findall(r"\d+\.\d+", cell)
            assert len(numbers) == n, (key, numbers)
            if row.rsplit(".", 1)[0] == stem and 1 <= int(row.rsplit(".", 1)[1]) <= n:
                return float(numbers[int(row.rsplit(".", 1)[1]) - 1])
    found = re.search(rf"\b{metric} (\d+(?:\.\d+)?) %", cells[row])
    return float(found[1]) / 100 if found else None


@pytest.mark.skipif(not REPORTS_MD.is_file(), reason=f"{REPORTS_MD} is not in this workspace")
@pytest.mark.parametrize("name", ["allcnn", "optuna", "optuna-search", "kfold", "attention", "strategies"])
def test_every_reference_figure_is_the_reports_own(name):
    """Each matrix reference's figure (and its metric) is the number ``../shared/reports.md`` prints for that row."""
    from harness.sweep.matrix import load_matrix

    text = REPORTS_MD.read_text()
    refs = load_matrix(name).all_references()
    assert refs
    for ref in refs:
        want = _reported_figure(text, ref["row"], ref["metric"])
        got = ref.get("figure")
        assert (got is None and want is None) or got == pytest.approx(want, abs=1e-9), (name, ref)


def _report_matrix(path: Path) -> Path:
    path.write_text("""
description: a test report
report: {title: "Test report", source: tests, protocol: "single runs", chosen: ["batch 32: not stated"]}
asha: {grace_period: 9, reduction_factor: 3}
base: {data.dataset: synthetic, data.synthetic_size: 256, train.batch_size: 32, train.epochs: 2,
       train.measure_inference: false, arch: tiny_cnn, sched.name: constant, optim.lr: 0.05}
axes:
  row:
    - {label: R1, reference: {row: R1, table: "Tab. 1", metric: test, figure: 0.1, setting: base}}
    - {label: R2, optim.lr: 1.0e-7, reference: {row: R2, table: "Tab. 1", metric: val, figure: 0.99, setting: "lr 1e-7"}}
    - {label: R3, arch: resnet20, reference: {row: R3, table: "Tab. 2", metric: test, figure: 0.5, setting: "not run"}}
""")
    return path


@pytest.mark.slow
def test_reproduce_reads_a_real_sweeps_rows_and_writes_the_page(tmp_path, monkeypatch, capsys):
    """A two-row sweep with 2 seeds on a real local Ray cluster, then the page: ours beside reported,
    n = 2, a verdict per row, the row not run as *not run* with a cost, the plot and the index."""
    import harness.sweep.matrix as matrix_mod

    presets = tmp_path / "presets"
    presets.mkdir()
    for p in matrix_mod.presets_dir().glob("*.yaml"):
        (presets / p.name).write_text(p.read_text())
    _report_matrix(presets / "testrep.yaml")
    monkeypatch.setattr(matrix_mod, "presets_dir", lambda: presets)
    env = child_env(HARNESS_RESULTS_DIR=str(tmp_path / "results"), HARNESS_SWEEPS_DIR=str(tmp_path / "sweeps"),
                    HARNESS_DOCS_DIR=str(tmp_path / "docs"))
    out = subprocess.run([sys.executable, "-m", "harness", "sweep", "--matrix", str(presets / "testrep.yaml"),
                          "--only", "row=R1,R2", "--seeds", "2", "--num-cpus", "2", "--wandb", "off",
                          "--name", "t"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert sorted(r["reference"] for r in rows) == ["testrep R1: test 0.1", "testrep R2: val 0.99"]
    assert main(["reproduce", "testrep", "--results-dir", str(tmp_path / "results"),
                 "--docs-dir", str(tmp_path / "docs")]) == 0
    page = (tmp_path / "docs" / "reports" / "testrep.md").read_text()
    assert "| R1 | base | test 10.0 % |" in page and "(n=2)" in page and "| R3 |" in page
    r3 = next(line for line in page.splitlines() if line.startswith("| R3 |"))
    # Not run: no number in ours, and the cost column says what it would cost (here: not measured yet, and
    # its stated GPU time).
    assert r3.split("|")[4].strip() == "not run" and "on one GPU (stated)" in r3
    assert "not measured on a CPU yet (`harness reproduce testrep --estimate`)" in r3, r3
    r2 = next(line for line in page.splitlines() if line.startswith("| R2 |"))
    assert r2.split("|")[6].strip() == "worse"  # 99 % val at lr 1e-7 is out of reach (the cost column follows)
    assert "batch 32: not stated" in page and "single runs" in page
    assert (tmp_path / "docs" / "reports" / "img" / "testrep.png").stat().st_size > 1000
    assert "testrep.md" in (tmp_path / "docs" / "reports" / "README.md").read_text()


def test_the_index_says_why_each_row_is_not_run(tmp_path):
    """On an empty results folder every row is not run, and the index splits each count by its reason."""
    from harness.report.reproduce import write_index

    (tmp_path / "docs").mkdir()
    text = write_index(tmp_path / "docs", tmp_path / "results").read_text()
    lines = {ln.split("](")[0].split("[")[-1]: ln for ln in text.splitlines() if ".md](" in ln}
    assert set(lines) >= {"allcnn.md", "attention.md", "kfold.md", "optuna.md", "strategies.md"}
    for line in lines.values():
        found = re.search(r"not run (\d+) \(([^)]*)\)", line)
        assert found, line
        parts = [p.rsplit(" ", 1) for p in found[2].split(", ")]
        assert sum(int(n) for _, n in parts) == int(found[1]), line
        assert {why for why, _ in parts} <= {"GPU queue", "ImageNet weights", "too long for this CPU", "CPU campaign"}
    assert "(GPU queue 7)" in lines["attention.md"], "the matrix queues every attention row for a GPU"
    assert "ImageNet weights" in lines["strategies.md"] and "GPU queue" in lines["strategies.md"]


def test_reproduce_bad_input_is_one_line(capsys):
    assert main(["reproduce", "strategie"]) == 2
    assert "did you mean strategies" in capsys.readouterr().err
    assert main(["reproduce", "kfold", "--only", "row=K1"]) == 2
    assert "add --run" in capsys.readouterr().err


def test_rows_compared_on_validation_say_optimistic_and_show_the_held_out_figure():
    from harness.report.reproduce import table_lines
    from harness.report.rows import Row

    val = Row({"row": "K1", "figure": 0.688, "metric": "val"}, {}, ours=0.70, std=0.01, n=2, test=0.66)
    test = Row({"row": "A2", "figure": 0.5645, "metric": "test"}, {}, ours=0.56, std=0.01, n=2)
    k1, a2 = table_lines([val, test], None)[2:]
    assert "optimistic" in k1 and "held-out test 66.0 %" in k1, k1
    assert "optimistic" not in a2 and "held-out" not in a2, a2


def test_plateau_rows_say_whether_the_schedule_cut_the_lr():
    from harness.report.reproduce import table_lines
    from harness.report.rows import Row

    ref = {"row": "S4.2", "figure": 0.5, "metric": "test"}
    never = Row(ref, {}, ours=0.5, n=2, source={"lr_reductions": "0 0"})
    twice = Row({**ref, "row": "S4.5"}, {}, ours=0.5, n=2, source={"lr_reductions": "2 1"})
    other = Row({**ref, "row": "S4.1"}, {}, ours=0.5, n=2, source={"lr_reductions": ""})
    a, b, c = table_lines([never, twice, other], None)[2:]
    assert "plateau never cut the lr (trained as constant lr)" in a
    assert "plateau cut the lr 2/1 time(s) per run" in b
    assert "plateau" not in c
