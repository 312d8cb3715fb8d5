"""Each option is declared once (:func:`harness.run.knobs.knob`), and what is derived from the declaration holds:
``--help`` lists every config key and sweep setting, every declared range and choice is enforced with one line
naming the option, the flags set their keys, and ``sweep.json`` round-trips the settings."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from harness.cli import build_parser
from harness.commands.run_cmd import resolve_config
from harness.commands.sweep_cmd import settings_from_args
from harness.errors import HarnessError
from harness.run.config import RunConfig, apply_overrides, fields
from harness.run.knobs import FieldInfo, base_type, range_text
from harness.sweep.matrix import load_matrix
from harness.sweep.settings import SweepSettings, setting_fields, validate_settings


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


def _help(name: str) -> str:
    return " ".join(_subparser(name).format_help().split())  # wrapping aside


def test_run_help_lists_every_config_key():
    text = _help("run")
    missing = [key for key in fields() if f"[{key}]" not in text]
    assert not missing, f"harness run --help does not list {missing}"
    for key, f in fields().items():
        assert f"--set {key}=" in text or (f.flag and f"{f.flag} " in text), key


def test_sweep_help_lists_every_setting_with_a_flag():
    text = _help("sweep")
    for f in setting_fields():
        if f.flag:
            assert f"{f.flag} " in text and f.help.split(" (")[0][:30] in text, f.key


def _outside(f: FieldInfo) -> list:
    """Values just outside the declared range, in the key's type."""
    ge, gt, le, lt = f.bounds
    step = 1 if base_type(f.type) is int else 0.5
    return [v for v in (ge - step if ge is not None else None, gt, le + step if le is not None else None, lt)
            if v is not None]


RANGED = [f for f in fields().values() if any(b is not None for b in f.bounds)]


@pytest.mark.parametrize("f", RANGED, ids=[f.key for f in RANGED])
def test_every_declared_config_range_is_checked(f):
    outside = _outside(f)
    assert outside
    for value in outside:
        with pytest.raises(HarnessError) as e:
            apply_overrides(RunConfig(), {f.key: value})
        assert str(e.value).startswith(f"{f.key} must be {range_text(f)}, got "), e.value
    ge, _, le, _ = f.bounds
    for edge in (ge, le):  # closed bounds are valid values
        if edge is not None:
            assert apply_overrides(RunConfig(), {f.key: edge}) is not None


def test_range_words():
    def info(tp, **bounds):
        b = tuple(bounds.get(k) for k in ("ge", "gt", "le", "lt"))
        return FieldInfo("k", tp, None, "", None, (), "result", False, bounds=b)

    assert range_text(info(int, ge=1)) == ">= 1"
    assert range_text(info(float, gt=0)) == "> 0"
    assert range_text(info(float, ge=0, lt=1)) == "in [0, 1)"
    assert range_text(info(float | None, gt=0, le=1)) == "in (0, 1]"
    assert range_text(info(int, ge=1, le=4)) == "in 1..4"
    assert range_text(info(str)) == ""


def test_flags_set_their_keys():
    p = _subparser("run")
    args = p.parse_args(["--lr", "0.2", "--no-progress", "--grayscale", "--early-stop", "3", "--name", "x"])
    cfg = resolve_config(args)
    assert cfg.optim.lr == 0.2 and cfg.train.progress is False and cfg.data.grayscale is True
    assert cfg.train.early_stop_patience == 3 and cfg.name == "x"
    assert resolve_config(p.parse_args([])) == RunConfig()


RANGED_SETTINGS = [f for f in setting_fields() if any(b is not None for b in f.bounds)]


@pytest.mark.parametrize("f", RANGED_SETTINGS, ids=[f.key for f in RANGED_SETTINGS])
def test_every_declared_sweep_range_is_checked(f):
    m = load_matrix("quick")
    for value in _outside(f):
        with pytest.raises(HarnessError) as e:
            validate_settings(SweepSettings(**{f.key: value}), m, submitted=True)
        assert str(e.value).startswith(f"{f.flag} must be {range_text(f)}, got "), e.value


def test_sweep_flags_round_trip_through_sweep_json():
    p = _subparser("sweep")
    args = p.parse_args(["--matrix", "quick", "--name", "s1", "--seeds", "3", "--reduction-factor", "2.5",
                         "--search", "random", "--wandb", "off", "--set", "optim.lr=0.1", "--set", "train.epochs=2",
                         "--only", "arch=tiny*", "--verbose", "--gpus-per-worker", "0.5"])
    s = settings_from_args(args)
    assert (s.seeds, s.reduction_factor, s.search, s.wandb, s.verbose, s.gpus_per_worker) == (3, 2.5, "random",
                                                                                               "off", True, 0.5)
    assert s.overrides == ["optim.lr=0.1", "train.epochs=2"] and s.only == ["arch=tiny*"]
    assert SweepSettings(**json.loads(json.dumps(dataclasses.asdict(s)))) == s
    defaults = settings_from_args(p.parse_args([]))
    assert defaults == SweepSettings(), "a flag not given leaves the declared default"
    with pytest.raises(HarnessError, match="--name is empty"):
        settings_from_args(p.parse_args(["--name", ""]))


def test_sweep_resume_keeps_the_saved_definition_and_takes_the_resume_settings(tmp_path):
    """``harness sweep --resume``: the settings declared ``resume=True`` (where results go, what is shown) are
    the new ones; every other setting is the saved sweep's, read back from ``sweep.json``."""
    from harness.files import SWEEP_FILE
    from harness.sweep.driver import _resumed_settings
    from harness.sweep.matrix import matrix_path

    path = matrix_path("quick")
    saved = SweepSettings(matrix="quick", name="s1", seeds=2, results_dir="/old", verbose=False,
                          overrides=["optim.lr=0.1"], matrix_text=path.read_text(), matrix_path=str(path))
    exp = tmp_path / "s1"
    exp.mkdir()
    (exp / "experiment_state-2026.json").write_text("{}")  # what Tune leaves behind
    (exp / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(saved)))
    asked = SweepSettings(name="s1", results_dir="/new", verbose=True, num_cpus=2)
    s, m = _resumed_settings(asked, tmp_path)
    assert (s.results_dir, s.verbose, s.num_cpus) == ("/new", True, 2)
    assert (s.seeds, s.overrides, s.docs_dir) == (2, ["optim.lr=0.1"], None)
    assert {f.key for f in setting_fields() if f.resume} == {"results_dir", "docs_dir", "num_cpus", "verbose"}
    assert m.axes
    with pytest.raises(HarnessError, match="--seeds 2, not 5"):  # one that would change the sweep is refused
        _resumed_settings(SweepSettings(name="s1", seeds=5), tmp_path)
