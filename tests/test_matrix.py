"""Matrices: presets parse and expand as documented; bad files fail with one line naming file and line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.sweep.matrix import list_presets, load_matrix, parse_matrix
from harness.sweep.settings import SweepSettings
from harness.sweep.trials import trial_cells as _cells
from harness.sweep.trials import trial_config


def test_presets_are_listed_with_descriptions():
    presets = dict(list_presets())
    assert {"quick", "zoo", "full"} <= set(presets)
    assert all(presets[n] for n in ("quick", "zoo", "full"))


def test_quick_preset_is_most_of_the_cifar_split_with_an_lr_axis_per_architecture():
    m = load_matrix("quick")
    trials = m.configurations()
    archs = {t["overrides"]["model.arch"] for t in trials}
    assert len(archs) >= 4
    for arch in archs:  # every architecture has a learning-rate axis for ASHA to prune
        assert len({t["overrides"]["optim.lr"] for t in trials if t["overrides"]["model.arch"] == arch}) >= 2
    from architectures import model_info

    assert all(model_info(a).mflops < 20 for a in archs), "quick must stay sized for a 2-core CPU"
    for t in trials:
        o = t["overrides"]
        assert o["data.dataset"] == "cifar10" and o["data.subset"] >= 2500, "most of the training split"
        assert "train.max_steps_per_epoch" not in o and o["train.target_acc"], "full epochs, a stated target"
    # ASHA's first rung is at least a third of the epochs, with the anchors' reduction factor
    assert m.grace_period >= round(m.max_epochs() / 3) and m.reduction_factor == 3


def test_zoo_covers_every_registered_model_and_full_is_a_cross_product():
    from architectures import list_models

    zoo = load_matrix("zoo").configurations()
    assert sorted(t["overrides"]["model.arch"] for t in zoo) == list_models()
    full = load_matrix("full")
    trials = full.configurations()
    assert len(trials) > len(zoo) * 10
    for t in trials:  # the constraints hold in every trial
        o = t["overrides"]
        if o.get("strategy.name") in ("finetune", "linear_probe"):
            assert o["model.arch"].startswith("tv_")
        if o.get("strategy.name") == "transfer":
            assert o["data.dataset"] != "mnist" and o["strategy.pretrain_dataset"] != o["data.dataset"]


def test_exclusions_constraints_and_bundles(tmp_path):
    m = parse_matrix("""
base: {train.epochs: 3}
axes:
  arch: [resnet20, lenet_cnn, tv_alexnet]
  strategy:
    - scratch
    - {strategy: transfer, pretrain_dataset: imagenette, label: transfer}
exclude:
  - {arch: lenet_cnn, strategy: transfer}
constraints:
  - if: {arch: tv_alexnet}
    set: {img_size: 64}
  - if: {arch: "tv_*"}
    require: {strategy: scratch}
""", "m.yaml")
    trials = m.configurations()
    got = {(t["axes"]["arch"], t["axes"]["strategy"]) for t in trials}
    assert got == {("resnet20", "scratch"), ("resnet20", "transfer"), ("lenet_cnn", "scratch"),
                   ("tv_alexnet", "scratch")}
    alex = next(t for t in trials if t["axes"]["arch"] == "tv_alexnet")["overrides"]
    assert alex["data.img_size"] == 64
    assert all(t["overrides"]["train.epochs"] == 3 for t in trials)
    # Optuna's view: categorical labels, resolved back through the same exclusions.
    assert m.resolve({"arch": "lenet_cnn", "strategy": "transfer"}) is None
    assert m.resolve({"arch": "resnet20", "strategy": "transfer"})["strategy.pretrain_dataset"] == "imagenette"


def test_random_search_samples_distributions_in_range_and_is_reproducible():
    text = """
axes:
  arch: [resnet20, tiny_cnn]
  lr: {loguniform: [0.001, 0.1]}
  weight_decay: {uniform: [0.0, 0.001]}
  batch_size: {randint: [32, 65]}
  optimizer: {choice: [sgd, adamw]}
"""
    m = parse_matrix(text, "r.yaml")
    a = m.configurations("random", 20, seed=1)
    assert a == parse_matrix(text, "r.yaml").configurations("random", 20, seed=1)
    assert len(a) == 20
    for t in a:
        o = t["overrides"]
        assert 0.001 <= o["optim.lr"] <= 0.1 and 0 <= o["optim.weight_decay"] <= 0.001
        assert isinstance(o["train.batch_size"], int) and 32 <= o["train.batch_size"] < 65
    lrs = [t["overrides"]["optim.lr"] for t in a]
    assert min(lrs) < 0.01 < max(lrs), "loguniform should cover both decades"
    # grid: the grid axes crossed, every sampled axis drawn per cell
    g = m.configurations("grid", 3)
    assert len(g) == 2 * 3 and {t["axes"]["arch"] for t in g} == {"resnet20", "tiny_cnn"}
    space = m.tune_space()
    assert set(space) == {"arch", "lr", "weight_decay", "batch_size", "optimizer"}


def test_seeds_and_folds_are_replicate_trials_of_one_configuration():
    s = SweepSettings(matrix="quick", name="t", seeds=2, folds=3)
    m = load_matrix("quick")
    s.matrix_text, s.matrix_path = Path(m.path).read_text(), str(m.path)
    cells = _cells(m, s)
    n = len(m.configurations())
    assert len(cells) == n * 2 * 3
    cfg, info = trial_config({"cell": cells[5]}, s)
    assert (cfg.train.seed, cfg.data.folds, cfg.data.fold) == (info["seed"], 3, info["fold"])
    from harness.run.config import config_id

    ids = {config_id(trial_config({"cell": c}, s)[0]) for c in cells}
    assert len(ids) == n, "seeds and folds must not make new configurations"


def test_max_epochs_sets_or_caps_epochs():
    m = load_matrix("quick")
    s = SweepSettings(matrix="quick", name="t", max_epochs=2)
    s.matrix_text, s.matrix_path = Path(m.path).read_text(), str(m.path)
    cfg, _ = trial_config({"cell": _cells(m, s)[0]}, s)
    assert cfg.train.epochs == 2


BAD = {
    "unknown_arch": ("axes:\n  arch: [resnet20, resnet21]\n", 2, "unknown arch 'resnet21'"),
    "empty_axis": ("base: {train.epochs: 2}\naxes:\n  arch: []\n", 3, "empty"),
    "bad_distribution": ("axes:\n  arch: [tiny_cnn]\n  lr: {loguniform: [0, 0.1]}\n", 3, "loguniform needs low > 0"),
    "unknown_distribution": ("axes:\n  arch: [tiny_cnn]\n  lr: {normal: [0, 1]}\n", 3, "must be a list"),
    "distribution_arity": ("axes:\n  arch: [tiny_cnn]\n\n  lr: {uniform: [0.1]}\n", 4, "two numbers"),
    "yaml_syntax": ("axes:\n  arch: [tiny_cnn, resnet20\n  lr: [0.1]\n", 3, "not valid YAML"),
    "unknown_axis": ("axes:\n  arch: [tiny_cnn]\n  learning_rate: [0.1]\n", 3, "unknown axis or config key"),
    "unknown_top_key": ("axis:\n  arch: [tiny_cnn]\n", 1, "unknown key 'axis'"),
    "bad_value": ("axes:\n  arch: [tiny_cnn]\n  batch_size: [64, many]\n", 3, "train.batch_size"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_matrix_is_one_line_with_file_and_line_and_exit_2(case, tmp_path, capsys):
    text, line, needle = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    rc = main(["sweep", "--matrix", str(path), "--storage", str(tmp_path / "sweeps"), "--wandb", "off"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert f"{path}:{line}:" in err, err
    assert needle in err, err
    assert not (tmp_path / "sweeps").exists(), "nothing may start for a bad matrix"


def test_unknown_preset_names_the_closest(capsys):
    rc = main(["sweep", "--matrix", "quik", "--wandb", "off"])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean quick" in err and len(err.strip().splitlines()) == 1


def test_parse_errors_are_config_errors():
    with pytest.raises(ConfigError, match="randint takes integers"):
        parse_matrix("axes:\n  batch_size: {randint: [1.5, 9]}\n", "x.yaml")
    with pytest.raises(ConfigError, match="low < high"):
        parse_matrix("axes:\n  lr: {uniform: [0.2, 0.1]}\n", "x.yaml")
    m = parse_matrix("axes:\n  epochs: {randint: [2, 6]}\n", "x.yaml")
    assert m.max_epochs() == 5 and not math.isnan(m.axes[0].low)
