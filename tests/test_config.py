"""The config tree: YAML, dotted overrides, type checks, unknown keys and impossible values."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.run.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    load_config,
    parse_duration,
)


def test_defaults_round_trip():
    cfg = RunConfig()
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_overrides_are_typed():
    cfg = apply_overrides(RunConfig(), ["optim.lr=0.2", "train.epochs=3", "data.grayscale=true",
                                        "sched.milestones=[2, 4]", "model.kwargs.dropout=0.3"])
    assert cfg.optim.lr == 0.2 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and cfg.data.grayscale is True
    assert cfg.sched.milestones == [2, 4]
    assert cfg.model.kwargs == {"dropout": 0.3}


@pytest.mark.parametrize("override,needle", [
    (["optim.lrr=0.1"], "did you mean optim.lr"),
    (["nope.lr=0.1"], "unknown config key 'nope'"),
    (["train.epochs=many"], "train.epochs: expected an integer"),
    (["optim.lr=-1"], "optim.lr must be > 0"),
    (["train.batch_size=0"], "train.batch_size must be >= 1"),
    (["train.precision=fp8"], "train.precision must be"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["train.budget=soon"], "bad duration"),
    (["optim.lr"], "must look like"),
])
def test_bad_values_raise_one_line(override, needle):
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), override)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  arch: tiny_cnn\noptim:\n  lr: 0.01\n")
    cfg = load_config(p)
    assert cfg.model.arch == "tiny_cnn" and cfg.optim.lr == 0.01
    p.write_text("model:\n  arch: [tiny\n")
    with pytest.raises(ConfigError, match=r"r.yaml: line \d+"):
        load_config(p)
    p.write_text("modle:\n  arch: x\n")
    with pytest.raises(ConfigError, match="did you mean model"):
        load_config(p)


def test_hash_ignores_output_location_only():
    a = RunConfig()
    b = apply_overrides(a, {"out": "/elsewhere", "data.data_dir": "/d"})
    c = apply_overrides(a, {"optim.lr": 0.5})
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_durations():
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    with pytest.raises(ConfigError):
        parse_duration("2 days")
