"""The typed configuration of one run: a dataclass tree, YAML presets and dotted overrides.

Modelled on ffcv-imagenet's config: the schema is declared first with types, defaults and help, a
recipe is a YAML file, ``--set section.key=value`` overrides apply on top, and the resolved config is
validated, saved with the run and hashed into its id. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.registry import suggest

# Identity of a key: does changing it make a different configuration (a different leaderboard row)?
RESULT = "result"  # yes: part of config_id and config_hash
REPLICATE = "replicate"  # a replicate of the same configuration (seed, fold): config_hash only
NONE = "none"  # no: where things run or go, what is only measured or shown


def knob(default: Any = None, help: str = "", *, registry: str | None = None, choices: tuple[str, ...] = (),
         identity: str = RESULT, sweep: bool = False, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its metadata, read by the CLI help, validation, matrices and the config hash.

    Args:
        default: the default value (or ``factory`` for mutable defaults).
        help: one line for ``--help`` and the docs.
        registry: the registry kind its value is looked up in (see :func:`harness.run.names.registry_names`).
        choices: the fixed set of valid values, where there is no registry.
        identity: RESULT, REPLICATE or NONE (see above).
        sweep: the sweep owns this key (seeds, folds, resources, paths): a matrix may not set it.
    """
    md = {"help": help, "registry": registry, "choices": choices, "identity": identity, "sweep": sweep}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass
class ModelConfig:
    """Which architecture, and how it is built."""

    arch: str = knob("resnet20", "model name (harness list models)", registry="model")
    init: str = knob("default", "scratch init of conv and linear layers (dirac: the builder's init, then the first "
                     "in_channels filters of every stride-1 3x3 conv are identity maps, as airbench does)",
                     choices=("default", "xavier", "kaiming", "dirac"))
    whiten: bool = knob(False, "whitening init of the model's patch-whitening conv (airbench94's 2x2 conv, its top-level "
                        "`whiten`) from the covariance of training-split patches, computed at setup "
                        "and timed; its weights stay frozen")
    whiten_bias_epochs: int = knob(0, "model.whiten: epochs the whitening conv's bias trains before it is frozen "
                                   "(0: frozen from the start)")
    kwargs: dict = knob(help="extra builder keywords, e.g. {dropout: 0.3}", factory=dict)


@dataclass
class DataConfig:
    """Dataset, its options, and the loader that feeds it."""

    dataset: str = knob("cifar10", "dataset", registry="dataset")
    data_dir: str | None = knob(None, "data root (default: $HARNESS_DATA_DIR or ./data)", identity=NONE, sweep=True)
    grayscale: bool = knob(False, "convert images to one channel")
    img_size: int | None = knob(None, "resize images to this many pixels (raised to the model's minimum)")
    val_fraction: float = knob(0.1, "fraction of the training split held out for validation (stratified, seeded)")
    subset: int | None = knob(None, "keep the first N images of each class (train and test), for quick runs; "
                              "a class with fewer keeps all of them")
    download: bool = knob(False, "download the dataset where there is internet", identity=NONE)
    loader: str = knob("auto", "loader backend (auto: ffcv on CUDA when its files exist, else tensor)",
                       registry="loader")
    augment: str = knob("base", "augmentation preset", registry="augment")
    flip: str = knob("preset", "horizontal flip: preset (as the preset says), random (p=0.5 each epoch), "
                     "alternating (random in the first epoch, then each image flipped the other way from the "
                     "epoch before; tensor backend), none", choices=("preset", "random", "alternating", "none"))
    translate: int | None = knob(None, "random translation by up to N pixels with reflect padding, replacing the "
                                 "preset's zero-padded crop (tensor and torchvision backends); unset: the preset's")
    layout: str = knob("uint8", "tensor loader: uint8 (the split as uint8, normalised per batch) or airbench (the "
                       "split normalised once on the device in bf16/fp16 channels_last, crop as a shift in the "
                       "padding; presets none and base; on CUDA with bf16/fp16 precision)",
                       choices=("uint8", "airbench"))
    num_workers: int | None = knob(None, "torchvision backend: DataLoader workers", identity=NONE)
    folds: int = knob(0, "k-fold CV: K folds of the training split (0: off)", sweep=True)
    fold: int = knob(0, "k-fold CV: the validation fold", identity=REPLICATE, sweep=True)
    num_classes: int = knob(10, "synthetic dataset only: classes")
    synthetic_size: int | None = knob(None, "synthetic dataset only: training images")


@dataclass
class OptimConfig:
    """Optimizer and per-group learning rates."""

    name: str = knob("sgd", "optimizer", registry="optimizer")
    lr: float = knob(0.05, "learning rate (the resolved config holds it after lr_scaling)")
    momentum: float = knob(0.9, "SGD/RMSprop momentum")
    nesterov: bool = knob(False, "Nesterov momentum")
    weight_decay: float = knob(5e-4, "weight decay")
    no_decay_bn_bias: bool = knob(False, "exclude BatchNorm and bias parameters from weight decay")
    betas: list[float] = knob(help="Adam betas", factory=lambda: [0.9, 0.999])
    eps: float = knob(1e-8, "Adam/RMSprop epsilon")
    head_lr: float | None = knob(None, "learning rate of the classifier head (finetune); default lr")
    body_lr: float | None = knob(None, "learning rate of everything else (finetune); default lr")
    decoupled: bool = knob(False, "airbench's units (sgd, muon): optim.lr is per 1024 examples (torch lr = lr x "
                           "batch / (1024 (1 + 1/(1 - momentum)))) and optim.weight_decay is independent of lr "
                           "and of the group multipliers (each group's torch decay is divided by its lr)")
    bn_bias_lr_mult: float = knob(1.0, "learning-rate multiplier of BatchNorm biases (airbench: 64); under "
                                  "optim.decoupled their weight decay stays that of the other weights")
    muon_lr: float = knob(0.24, "muon: learning rate of the conv filters (Muon, flattened to 2-D); the rest "
                          "take optim.lr with Nesterov SGD")
    muon_momentum: float = knob(0.6, "muon: Muon momentum of the conv filters")
    lr_scaling: str = knob("none", "linear: lr x global batch / base_batch (applied when the config is resolved)",
                           choices=("none", "linear"))
    base_batch: int = knob(128, "reference batch of the linear scaling rule")


@dataclass
class SchedConfig:
    """Learning-rate schedule (torch.optim.lr_scheduler) and warm-up."""

    name: str = knob("cosine", "learning-rate schedule", registry="scheduler")
    warmup_epochs: float = knob(0.0, "linear warm-up length in epochs (schedules that take one)")
    warmup_start_factor: float = knob(0.1, "warm-up starts at lr x this")
    step_size: int = knob(30, "step: epochs between decays")
    milestones: list[int] = knob(help="multistep: epochs", factory=lambda: [50, 75])
    gamma: float = knob(0.1, "step, multistep, exponential (per epoch), plateau factor")
    power: float = knob(1.0, "poly: power")
    min_lr: float = knob(0.0, "cosine floor; linear/poly end value")
    pct_start: float = knob(0.25, "onecycle: fraction of steps rising")
    cycle_epochs: float = knob(2.0, "cyclic: epochs per half cycle")
    base_lr_factor: float = knob(0.1, "cyclic: base_lr = lr x factor")
    patience: int = knob(2, "plateau: epochs without val-loss improvement")
    poly_epochs: float = knob(10.0, "poly_cyclic: epochs of polynomial decay before the cyclic phase")
    peak_at: float = knob(0.23, "piecewise: fraction of training steps at which lr peaks (linear from lr x "
                          "sched.warmup_start_factor up to lr)")
    floor_factor: float = knob(0.07, "piecewise: lr x this at the last step (linear decay from the peak)")


@dataclass
class TrainConfig:
    """The loop: length, batch, regularisation, stopping, precision and reproducibility."""

    epochs: int | float = knob(10, "training epochs; a fraction (9.9) ends the last epoch after that fraction of "
                               "its steps")
    batch_size: int = knob(128, "batch size per worker")
    eval_batch_size: int = knob(512, "evaluation batch size")
    label_smoothing: float = knob(0.0, "label smoothing")
    grad_clip: float | None = knob(None, "max gradient norm")
    early_stop_patience: int | None = knob(None, "stop after this many epochs without val-loss improvement")
    min_delta: float = knob(0.0, "smallest val-loss improvement that counts")
    budget: str | None = knob(None, "wall-clock budget, e.g. 90s, 30m, 2h (still tests at the end)")
    target_acc: float | None = knob(None, "record the time when val accuracy first reaches this")
    stop_at_target: bool = knob(False, "stop after the epoch whose val accuracy first reaches train.target_acc "
                                "(AlgoPerf's time to target; the test still runs)")
    precision: str = knob("auto", "auto (bf16 on GPUs with native bf16, else fp16 + GradScaler; on a CPU what "
                          "`harness bench probe` measures fastest: bf16 only where native and >= 1.2x), "
                          "fp32 (TF32 matmuls on CUDA), bf16 or fp16 (CUDA); the resolved config holds what ran",
                          choices=("auto", "fp32", "bf16", "fp16"))
    channels_last: bool | None = knob(None, "channels_last memory format (unset: on for CUDA; on a CPU "
                                         "where the probe measures it >= 1.05x faster)")
    compile: bool = knob(False, "torch.compile the model: static shapes (the short last training batch is dropped, "
                         "evaluation pads its last batch), compile time measured apart from epoch 1")
    seed: int = knob(0, "random seed (weights, split, augmentation)", identity=REPLICATE, sweep=True)
    deterministic: bool = knob(False, "deterministic algorithms (errors on ops without one; on CUDA also "
                               "CUBLAS_WORKSPACE_CONFIG, cuDNN deterministic, no TF32)")
    checkpoint_every: int = knob(1, "write last.pt every N epochs (and at the last) for --resume and Ray Train "
                                 "restarts; 0: never", identity=NONE)
    max_steps_per_epoch: int | None = knob(None, "cap steps per epoch (smoke tests)")
    max_steps: int | None = knob(None, "stop after this many optimizer steps in all (a budget that does not depend "
                                 "on the hardware, e.g. a report's step count); stop reason: max_steps")
    measure_inference: bool = knob(True, "measure inference images/s at batch 256 at the end", identity=NONE)
    save_best: bool = knob(True, "write best.pt (the weights selected on validation) at the end of the run; a "
                           "sweep's null trials skip it", identity=NONE)
    progress: bool = knob(True, "per-epoch progress lines", identity=NONE, sweep=True)
    tta: str = knob("none", "test-time augmentation of validation and test: none, flip (2 views), flip_translate "
                    "(6 views: flip, and both shifted 1 px diagonally with reflect padding; airbench)",
                    choices=("none", "flip", "flip_translate"))
    ema: str = knob("none", "weight averaging: ema (an exponential moving average, evaluated and selected), "
                    "lookahead (the weights are pulled back to the average at every update; airbench94); "
                    "evaluation and best.pt use the averaged weights", choices=("none", "ema", "lookahead"))
    ema_decay: float = knob(0.95, "weight averaging: decay per optimizer step")
    ema_every: int = knob(5, "weight averaging: optimizer steps between updates (the decay is decay^every)")
    ema_ramp: float = knob(3.0, "weight averaging: the decay is scaled by (step / total steps)^ramp, so the "
                           "average follows early weights closely (airbench: 3); 0: constant")


@dataclass
class StrategyConfig:
    """How the weights start and which of them train."""

    name: str = knob("scratch", "training strategy", registry="strategy")
    weights: str | None = knob(None, "pretrained weights of models that have them (harness list models): a "
                               "name such as IMAGENET1K_V1, or a local torchvision state-dict file (FILE.pth), "
                               "which works offline")
    init_from: str | None = knob(None, "run directory of an earlier harness run to start from")
    head_layers: int = knob(1, "linear layers in the new classifier head (1-4)")
    trainable: str | None = knob(None, "comma list of stages that train, e.g. head,layer4,layer3")
    freeze: str | None = knob(None, "comma list of stages to freeze, or all-but-head")
    pretrain_dataset: str | None = knob(None, "transfer: dataset of stage one", registry="dataset")
    pretrain_epochs: int | None = knob(None, "transfer: epochs of stage one (default: train.epochs)")


@dataclass
class DistConfig:
    """Where it runs: in process (workers=0) or as Ray Train DDP with N workers."""

    workers: int = knob(0, "0 = in process; N = Ray Train DDP with N workers", sweep=True)
    use_gpu: bool | None = knob(None, "train on GPUs (unset: when CUDA is present)", identity=NONE, sweep=True)
    cpus_per_worker: int | None = knob(None, "CPUs per Ray Train worker (unset: an equal share)", identity=NONE,
                                       sweep=True)
    max_failures: int = knob(0, "Ray Train restarts from the last checkpoint this many times", identity=NONE)
    storage: str | None = knob(None, "Ray Train storage path for checkpoints", identity=NONE, sweep=True)


@dataclass
class RunConfig:
    """Everything that defines one run. Saved as config.yaml in the run directory."""

    name: str = knob("", "run name prefix; the id adds the config hash", identity=NONE, sweep=True)
    out: str = knob("runs", "directory that receives the run directory", identity=NONE, sweep=True)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    dist: DistConfig = field(default_factory=DistConfig)


@dataclass(frozen=True)
class FieldInfo:
    """One leaf of the config tree, with its metadata (see :func:`knob`)."""

    key: str  # dotted, e.g. "optim.lr"
    type: Any
    default: Any
    help: str
    registry: str | None
    choices: tuple[str, ...]
    identity: str
    sweep: bool


def _walk(cls: type, prefix: str = "") -> list[FieldInfo]:
    hints = typing.get_type_hints(cls)
    out: list[FieldInfo] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _walk(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        md = f.metadata
        out.append(FieldInfo(prefix + f.name, tp, default, md.get("help", ""), md.get("registry"),
                             tuple(md.get("choices", ())), md.get("identity", RESULT), bool(md.get("sweep"))))
    return out


_FIELDS: dict[str, FieldInfo] = {}


def fields() -> dict[str, FieldInfo]:
    """Every leaf of :class:`RunConfig` by dotted key, in declaration order."""
    if not _FIELDS:
        _FIELDS.update((f.key, f) for f in _walk(RunConfig))
    return _FIELDS


def field_info(key: str) -> FieldInfo:
    """The metadata of one dotted key.

    Raises:
        ConfigError: no such key (naming the closest ones).
    """
    fs = fields()
    if key not in fs:
        close = suggest(key, list(fs))
        raise ConfigError(f"unknown config key '{key}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    return fs[key]


def keys_with(*, identity: str | None = None, sweep: bool | None = None) -> list[str]:
    """Dotted keys whose metadata matches (e.g. ``identity=NONE``, or ``sweep=True``)."""
    return [k for k, f in fields().items()
            if (identity is None or f.identity == identity) and (sweep is None or f.sweep == sweep)]


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, with type checks

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
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        close = suggest(k, names)
        hint = f"; did you mean {', '.join(where + c for c in close)}?" if close else ""
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


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as ``{dotted key: value}`` (``model.kwargs`` stays one mapping)."""
    return _flat(config_to_dict(cfg))


def _digest(cfg: RunConfig, leave_out: set[str]) -> str:
    flat = {k: v for k, v in flat_config(cfg).items() if k not in leave_out}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:10]


def config_hash(cfg: RunConfig) -> str:
    """A short stable hash of everything that changes results, the seed and fold included (the run id).

    The keys whose metadata says ``identity=NONE`` (where outputs go, what is only measured) are left out.
    """
    return _digest(cfg, set(keys_with(identity=NONE)))


def config_id(cfg: RunConfig | dict) -> str:
    """The identity of a configuration (a leaderboard row): :func:`config_hash` without replicates (seed, fold)."""
    if isinstance(cfg, dict):
        cfg = config_from_dict(cfg)
    return _digest(cfg, set(keys_with(identity=NONE)) | set(keys_with(identity=REPLICATE)))


#: Every key that does not count toward a configuration's identity, with its default.
NOT_IDENTITY: dict[str, Any] = {k: f.default for k, f in fields().items() if f.identity != RESULT}


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

    flat = flat_config(cfg)
    for key, f in fields().items():
        if f.choices:
            v = flat[key]
            need(v in f.choices, f"{key} must be {', '.join(f.choices[:-1])} or {f.choices[-1]}, got '{v}'")
    t, o, d, s = cfg.train, cfg.optim, cfg.data, cfg.sched
    need(t.epochs >= 1, f"train.epochs must be >= 1 (fractions such as 9.9 cut the last epoch), got {t.epochs}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0 (0: never), got {t.checkpoint_every}")
    need(t.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {t.eval_batch_size}")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    for k in ("head_lr", "body_lr"):
        v = getattr(o, k)
        need(v is None or v >= 0, f"optim.{k} must be >= 0, got {v}")
    need(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    need(t.grad_clip is None or t.grad_clip > 0, f"train.grad_clip must be > 0, got {t.grad_clip}")
    need(t.early_stop_patience is None or t.early_stop_patience >= 1,
         f"train.early_stop_patience must be >= 1, got {t.early_stop_patience}")
    need(t.target_acc is None or 0 < t.target_acc <= 1, f"train.target_acc must be in (0, 1], got {t.target_acc}")
    if t.budget is not None:
        try:
            budget = parse_duration(t.budget)
        except ConfigError as e:
            raise ConfigError(f"train.budget: {e}") from None
        need(budget > 0, f"train.budget must be positive, got '{t.budget}'")
    need(t.seed >= 0, f"train.seed must be >= 0, got {t.seed}")
    need(not t.stop_at_target or t.target_acc is not None, "train.stop_at_target needs train.target_acc")
    need(t.min_delta >= 0, f"train.min_delta must be >= 0, got {t.min_delta}")
    need(t.max_steps_per_epoch is None or t.max_steps_per_epoch >= 1,
         f"train.max_steps_per_epoch must be >= 1, got {t.max_steps_per_epoch}")
    need(t.max_steps is None or t.max_steps >= 1, f"train.max_steps must be >= 1, got {t.max_steps}")
    need(0 < d.val_fraction < 1 or d.folds > 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    need(d.subset is None or d.subset >= 1, f"data.subset must be >= 1, got {d.subset}")
    need(d.img_size is None or d.img_size >= 8, f"data.img_size must be >= 8, got {d.img_size}")
    need(d.folds == 0 or d.folds >= 2, f"data.folds must be 0 or >= 2, got {d.folds}")
    need(d.folds == 0 or 0 <= d.fold < d.folds, f"data.fold must be in [0, {d.folds}), got {d.fold}")
    need(1 <= cfg.strategy.head_layers <= 4, f"strategy.head_layers must be 1..4, got {cfg.strategy.head_layers}")
    need(cfg.dist.workers >= 0, f"dist.workers must be >= 0, got {cfg.dist.workers}")
    need(cfg.dist.cpus_per_worker is None or cfg.dist.cpus_per_worker >= 1,
         f"dist.cpus_per_worker must be >= 1, got {cfg.dist.cpus_per_worker}")
    need(cfg.dist.max_failures >= 0, f"dist.max_failures must be >= 0, got {cfg.dist.max_failures}")
    need(cfg.strategy.pretrain_epochs is None or cfg.strategy.pretrain_epochs >= 1,
         f"strategy.pretrain_epochs must be >= 1, got {cfg.strategy.pretrain_epochs}")
    need(d.synthetic_size is None or d.synthetic_size >= 1, f"data.synthetic_size must be >= 1, got {d.synthetic_size}")
    need(d.num_classes >= 2, f"data.num_classes must be >= 2, got {d.num_classes}")
    need(s.warmup_epochs >= 0, f"sched.warmup_epochs must be >= 0, got {s.warmup_epochs}")
    need(s.step_size >= 1, f"sched.step_size must be >= 1, got {s.step_size}")
    need(s.gamma > 0, f"sched.gamma must be > 0, got {s.gamma}")
    need(0 < s.pct_start < 1, f"sched.pct_start must be in (0, 1), got {s.pct_start}")
    need(0 <= s.peak_at < 1, f"sched.peak_at must be in [0, 1), got {s.peak_at}")
    need(s.floor_factor >= 0, f"sched.floor_factor must be >= 0, got {s.floor_factor}")
    need(o.bn_bias_lr_mult > 0, f"optim.bn_bias_lr_mult must be > 0, got {o.bn_bias_lr_mult}")
    need(o.muon_lr > 0, f"optim.muon_lr must be > 0, got {o.muon_lr}")
    need(0 <= o.muon_momentum < 1, f"optim.muon_momentum must be in [0, 1), got {o.muon_momentum}")
    need(0 < t.ema_decay < 1, f"train.ema_decay must be in (0, 1), got {t.ema_decay}")
    need(t.ema_every >= 1, f"train.ema_every must be >= 1, got {t.ema_every}")
    need(t.ema_ramp >= 0, f"train.ema_ramp must be >= 0, got {t.ema_ramp}")
    need(d.translate is None or 0 <= d.translate <= 8, f"data.translate must be in 0..8 pixels, got {d.translate}")
    need(cfg.model.whiten_bias_epochs >= 0,
         f"model.whiten_bias_epochs must be >= 0, got {cfg.model.whiten_bias_epochs}")


def epoch_count(epochs: float) -> int:
    """How many epochs a run of ``train.epochs`` starts: a fractional last epoch counts as one."""
    return max(1, math.ceil(epochs - 1e-9))


def planned_epochs(epochs: float, steps: int, max_steps: int | None) -> float:
    """The epochs a run trains: ``train.epochs``, or fewer where ``train.max_steps`` ends it first.

    ``max_steps / steps`` as a fraction, so :func:`steps_in_epoch` cuts the last epoch at exactly
    ``max_steps`` steps in all.
    """
    if max_steps is None or steps <= 0:
        return epochs
    return min(float(epochs), max_steps / steps)


def steps_in_epoch(epoch: int, epochs: float, steps: int) -> int:
    """Optimizer steps of epoch ``epoch`` (0-based) out of ``steps`` per epoch: the fractional last one is cut.

    ``round(epochs * steps)`` steps in all, so the schedule (built for that many) ends exactly at the last.
    """
    total = max(1, round(epochs * steps))
    return max(0, min(steps, total - epoch * steps))


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
