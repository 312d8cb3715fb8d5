"""The typed configuration of one run: a dataclass tree, YAML presets and dotted overrides.

Modelled on ffcv-imagenet's config: the schema is declared first with types, defaults and help, a
recipe is a YAML file, ``--set section.key=value`` overrides apply on top, and the resolved config is
validated, saved with the run and hashed into its id. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError


@dataclass
class ModelConfig:
    """Which architecture, and how it is built."""

    arch: str = "resnet20"  # a name from `harness list models`
    init: str = "default"  # default | xavier | kaiming (scratch training)
    kwargs: dict = field(default_factory=dict)  # extra builder keywords, e.g. {dropout: 0.3}


@dataclass
class DataConfig:
    """Dataset, its options, and the loader that feeds it."""

    dataset: str = "cifar10"
    data_dir: str | None = None  # --data-dir > $HARNESS_DATA_DIR > ./data
    grayscale: bool = False
    img_size: int | None = None  # resize; raised to the model's minimum input size if below it
    val_fraction: float = 0.1  # carved from the training split only, stratified and seeded
    subset: int | None = None  # first N images per class, for quick runs
    download: bool = False
    loader: str = "auto"  # auto | tensor | torchvision | ffcv
    augment: str = "base"  # none | base | strong | stronger
    num_workers: int | None = None  # torchvision backend only
    folds: int = 0  # k-fold CV: K folds of the training split ...
    fold: int = 0  # ... and this one is the validation fold
    num_classes: int = 10  # synthetic dataset only
    synthetic_size: int | None = None  # synthetic dataset only: training images


@dataclass
class OptimConfig:
    """Optimizer and per-group learning rates."""

    name: str = "sgd"  # sgd | adam | adamw | rmsprop
    lr: float = 0.05  # for the global batch actually used, after lr_scaling
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = False  # exclude BatchNorm and bias parameters from weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    head_lr: float | None = None  # learning rate of the classifier head (finetune); default lr
    body_lr: float | None = None  # learning rate of everything else (finetune); default lr
    lr_scaling: str = "none"  # none | linear: lr *= global_batch / base_batch
    base_batch: int = 128  # reference batch of the linear scaling rule


@dataclass
class SchedConfig:
    """Learning-rate schedule (torch.optim.lr_scheduler) and warm-up."""

    name: str = "cosine"  # constant|step|multistep|exponential|linear|poly|cosine|onecycle|cyclic|plateau
    warmup_epochs: float = 0.0  # linear warm-up from lr * warmup_start_factor
    warmup_start_factor: float = 0.1
    step_size: int = 30  # step: epochs between decays
    milestones: list[int] = field(default_factory=lambda: [50, 75])  # multistep: epochs
    gamma: float = 0.1  # step, multistep, exponential (per epoch), plateau factor
    power: float = 1.0  # poly
    min_lr: float = 0.0  # cosine floor; linear/poly end value
    pct_start: float = 0.25  # onecycle
    cycle_epochs: float = 2.0  # cyclic: epochs per half cycle
    base_lr_factor: float = 0.1  # cyclic: base_lr = lr * factor
    patience: int = 2  # plateau: epochs without val-loss improvement


@dataclass
class TrainConfig:
    """The loop: length, batch, regularisation, stopping, precision and reproducibility."""

    epochs: int = 10
    batch_size: int = 128  # per worker
    eval_batch_size: int = 512
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max gradient norm
    early_stop_patience: int | None = None  # epochs without val-loss improvement
    min_delta: float = 0.0
    budget: str | None = None  # wall-clock budget, e.g. 90s, 30m, 2h
    target_acc: float | None = None  # time_to_target_s = first time val_acc >= this
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (fp16 needs CUDA)
    channels_last: bool | None = None  # None: auto (on for CUDA, where it speeds up convolutions)
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    max_steps_per_epoch: int | None = None  # cap steps (smoke tests)
    measure_inference: bool = True  # inference images/s at batch 256 at the end
    progress: bool = True


@dataclass
class StrategyConfig:
    """How the weights start and which of them train."""

    name: str = "scratch"  # scratch | finetune | linear_probe | transfer
    weights: str | None = None  # torchvision weights name for tv_* models, e.g. IMAGENET1K_V1
    init_from: str | None = None  # run directory of an earlier harness run
    head_layers: int = 1  # 1..4 linear layers in the new head
    trainable: str | None = None  # comma list of stages that train, e.g. head,layer4,layer3
    freeze: str | None = None  # comma list of stages to freeze, or all-but-head
    pretrain_dataset: str | None = None  # transfer: stage-one dataset
    pretrain_epochs: int | None = None  # transfer: stage-one epochs (default: train.epochs)


@dataclass
class DistConfig:
    """Where it runs: in process (workers=0) or as Ray Train DDP with N workers."""

    workers: int = 0
    use_gpu: bool | None = None  # None: auto (CUDA present)
    cpus_per_worker: int | None = None  # None: share the machine's CPUs between workers
    max_failures: int = 0  # Ray Train restarts from the last checkpoint this many times
    storage: str | None = None  # Ray Train storage path for checkpoints


@dataclass
class RunConfig:
    """Everything that defines one run. Saved as config.yaml in the run directory."""

    name: str = ""  # run name prefix; the id adds the config hash
    out: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    dist: DistConfig = field(default_factory=DistConfig)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, with type checks

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the few safe cases (int -> float, str -> int)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where + ".")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip("[] ")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        from harness.registry import suggest

        k = unknown[0]
        close = suggest(k, names)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key '{where + k}'{hint} (valid in {where or 'top level'}: {', '.join(names)})")
    kwargs = {k: _coerce(v, hints[k], where + k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict, rejecting unknown keys and wrong types."""
    cfg = _from_dict(RunConfig, data or {})
    validate(cfg)
    return cfg


def config_to_dict(cfg: RunConfig) -> dict:
    """The config as a plain nested dict (YAML/JSON-safe)."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: RunConfig) -> str:
    """A short stable hash of everything that changes results (not where outputs go)."""
    d = config_to_dict(cfg)
    d.pop("out", None)
    d.pop("name", None)
    d["data"].pop("data_dir", None)
    d["train"].pop("progress", None)
    d["dist"].pop("storage", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# Keys that do not make a different configuration: replicates, where files go, and what is only measured.
NOT_IDENTITY = {"train.seed": 0, "data.fold": 0, "train.progress": False, "train.measure_inference": True,
               "dist.max_failures": 0, "data.download": False, "data.num_workers": None,
               "dist.cpus_per_worker": None, "dist.use_gpu": None}

def config_id(cfg: RunConfig | dict) -> str:
    """The identity of a configuration: its config hash with the seed and the fold taken out."""
    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    return config_hash(apply_overrides(cfg, dict(NOT_IDENTITY)))


def load_config(path: str | Path) -> RunConfig:
    """Load a YAML recipe (any subset of the tree) on top of the defaults.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or holds unknown keys or bad values.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{line} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def set_dotted(d: dict, key: str, value: Any) -> None:
    """Set ``d['a']['b'] = value`` for ``key='a.b'``, checking each part exists in the schema."""
    parts = key.split(".")
    cur = d
    for i, part in enumerate(parts[:-1]):
        if part not in cur or not isinstance(cur[part], dict):
            raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in override '{key}'")
        cur = cur[part]
    if parts[-1] not in cur and not (len(parts) >= 2 and parts[-2] == "kwargs"):
        from harness.registry import suggest

        close = suggest(parts[-1], list(cur))
        hint = f"; did you mean {', '.join('.'.join([*parts[:-1], c]) for c in close)}?" if close else ""
        raise ConfigError(f"unknown config key '{key}'{hint}")
    cur[parts[-1]] = value


def apply_overrides(cfg: RunConfig, overrides: list[str] | dict[str, Any]) -> RunConfig:
    """Apply dotted overrides (``["optim.lr=0.05", ...]`` or ``{"optim.lr": 0.05}``) and re-validate."""
    d = config_to_dict(cfg)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for k, v in items:
        set_dotted(d, k, v)
    return config_from_dict(d)


def parse_override(o: str) -> tuple[str, Any]:
    """Split ``section.key=value`` into the key and the YAML-parsed value."""
    if "=" not in o:
        raise ConfigError(f"override '{o}' must look like section.key=value")
    k, v = o.split("=", 1)
    try:
        parsed = yaml.safe_load(v) if v.strip() else ""
    except yaml.YAMLError:
        parsed = v
    return k.strip(), parsed


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90``, ``90s``, ``30m`` or ``2h``."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"bad duration '{text}' (use e.g. 90s, 30m or 2h)")
    n = float(m.group(1))
    unit = (m.group(2) or "s")[0]
    return n * {"s": 1, "m": 60, "h": 3600}[unit]


def validate(cfg: RunConfig) -> None:
    """Reject impossible values with one line naming the key, the value and what is allowed."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    t, o, d, s = cfg.train, cfg.optim, cfg.data, cfg.sched
    need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {t.eval_batch_size}")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    for k in ("head_lr", "body_lr"):
        v = getattr(o, k)
        need(v is None or v >= 0, f"optim.{k} must be >= 0, got {v}")
    need(o.lr_scaling in ("none", "linear"), f"optim.lr_scaling must be none or linear, got '{o.lr_scaling}'")
    need(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    need(t.grad_clip is None or t.grad_clip > 0, f"train.grad_clip must be > 0, got {t.grad_clip}")
    need(t.precision in ("auto", "fp32", "bf16", "fp16"),
         f"train.precision must be auto, fp32, bf16 or fp16, got '{t.precision}'")
    need(t.early_stop_patience is None or t.early_stop_patience >= 1,
         f"train.early_stop_patience must be >= 1, got {t.early_stop_patience}")
    need(t.target_acc is None or 0 < t.target_acc <= 1, f"train.target_acc must be in (0, 1], got {t.target_acc}")
    if t.budget is not None:
        need(parse_duration(t.budget) > 0, f"train.budget must be positive, got '{t.budget}'")
    need(0 < d.val_fraction < 1 or d.folds > 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    need(d.subset is None or d.subset >= 1, f"data.subset must be >= 1, got {d.subset}")
    need(d.img_size is None or d.img_size >= 8, f"data.img_size must be >= 8, got {d.img_size}")
    need(d.folds == 0 or d.folds >= 2, f"data.folds must be 0 or >= 2, got {d.folds}")
    need(d.folds == 0 or 0 <= d.fold < d.folds, f"data.fold must be in [0, {d.folds}), got {d.fold}")
    need(cfg.model.init in ("default", "xavier", "kaiming"),
         f"model.init must be default, xavier or kaiming, got '{cfg.model.init}'")
    need(1 <= cfg.strategy.head_layers <= 4, f"strategy.head_layers must be 1..4, got {cfg.strategy.head_layers}")
    need(cfg.dist.workers >= 0, f"dist.workers must be >= 0, got {cfg.dist.workers}")
    need(s.warmup_epochs >= 0, f"sched.warmup_epochs must be >= 0, got {s.warmup_epochs}")
    need(s.step_size >= 1, f"sched.step_size must be >= 1, got {s.step_size}")
    need(s.gamma > 0, f"sched.gamma must be > 0, got {s.gamma}")
    need(0 < s.pct_start < 1, f"sched.pct_start must be in (0, 1), got {s.pct_start}")


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
