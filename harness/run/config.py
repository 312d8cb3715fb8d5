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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.registry import suggest
from harness.run.knobs import NONE, REPLICATE, RESULT, FieldInfo, knob, problem, walk


@dataclass
class ModelConfig:
    """Which architecture, and how it is built."""

    arch: str = knob("resnet20", "model name (harness list models)", registry="model",
                     flag="--arch", axis="arch")
    init: str = knob("default", "scratch init of conv and linear layers (dirac: the builder's init, then the first "
                     "in_channels filters of every stride-1 3x3 conv are identity maps, as airbench does)",
                     choices=("default", "xavier", "kaiming", "dirac"), flag="--init", axis="init")
    whiten: bool = knob(False, "whitening init of the model's patch-whitening conv (airbench94's 2x2 conv, its top-level "
                        "`whiten`) from the covariance of training-split patches, computed at setup "
                        "and timed; its weights stay frozen", flag="--whiten")
    whiten_bias_epochs: int = knob(0, "model.whiten: epochs the whitening conv's bias trains before it is frozen "
                                   "(0: frozen from the start)", ge=0)
    kwargs: dict = knob(help="extra builder keywords, e.g. {dropout: 0.3}", factory=dict)


@dataclass
class DataConfig:
    """Dataset, its options, and the loader that feeds it."""

    dataset: str = knob("cifar10", "dataset", registry="dataset", flag="--dataset", axis="dataset")
    data_dir: str | None = knob(None, "data root (default: $HARNESS_DATA_DIR or ./data)", identity=NONE, sweep=True,
                                flag="--data-dir", resume=True)
    grayscale: bool = knob(False, "convert images to one channel", flag="--grayscale", axis="grayscale")
    img_size: int | None = knob(None, "resize images to this many pixels (raised to the model's minimum)",
                                flag="--img-size", axis="img_size", ge=8)
    val_fraction: float = knob(0.1, "fraction of the training split held out for validation (stratified, seeded)",
                               flag="--val-fraction")
    subset: int | None = knob(None, "keep the first N images of each class (train and test), for quick runs; "
                              "a class with fewer keeps all of them", flag="--subset", axis="subset", ge=1)
    download: bool = knob(False, "download the dataset where there is internet", identity=NONE,
                          flag="--download")
    loader: str = knob("auto", "loader backend (auto: ffcv on CUDA when its files exist, else tensor)",
                       registry="loader", flag="--loader", axis="loader")
    augment: str = knob("base", "augmentation preset", registry="augment", flag="--augment", axis="augment")
    flip: str = knob("preset", "horizontal flip: preset (as the preset says), random (p=0.5 each epoch), "
                     "alternating (random in the first epoch, then each image flipped the other way from the "
                     "epoch before; tensor backend), none", choices=("preset", "random", "alternating", "none"),
                     flag="--flip")
    translate: int | None = knob(None, "random translation by up to N pixels with reflect padding, replacing the "
                                 "preset's zero-padded crop (tensor and torchvision backends); unset: the preset's",
                                 flag="--translate", ge=0, le=8)
    layout: str = knob("uint8", "tensor loader: uint8 (the split as uint8, normalised per batch) or airbench (the "
                       "split normalised once on the device in bf16/fp16 channels_last, crop as a shift in the "
                       "padding; presets none and base; on CUDA with bf16/fp16 precision)",
                       choices=("uint8", "airbench"))
    num_workers: int | None = knob(None, "torchvision backend: DataLoader workers", identity=NONE)
    folds: int = knob(0, "k-fold CV: K folds of the training split (0: off)", sweep=True)
    fold: int = knob(0, "k-fold CV: the validation fold", identity=REPLICATE, sweep=True)
    num_classes: int = knob(10, "synthetic dataset only: classes", ge=2)
    synthetic_size: int | None = knob(None, "synthetic dataset only: training images", ge=1)


@dataclass
class OptimConfig:
    """Optimizer and per-group learning rates."""

    name: str = knob("sgd", "optimizer", registry="optimizer", flag="--optimizer", axis="optimizer")
    lr: float = knob(0.05, "learning rate (the resolved config holds it after lr_scaling)",
                     flag="--lr", axis="lr", gt=0)
    momentum: float = knob(0.9, "SGD/RMSprop momentum", flag="--momentum", axis="momentum", ge=0, lt=1)
    nesterov: bool = knob(False, "Nesterov momentum", flag="--nesterov")
    weight_decay: float = knob(5e-4, "weight decay", flag="--weight-decay", axis="weight_decay", ge=0)
    no_decay_bn_bias: bool = knob(False, "exclude BatchNorm and bias parameters from weight decay")
    betas: list[float] = knob(help="Adam betas", factory=lambda: [0.9, 0.999])
    eps: float = knob(1e-8, "Adam/RMSprop epsilon")
    amsgrad: bool = knob(False, "Adam/AdamW: the AMSGrad variant (the step divides by the running maximum of the "
                         "squared-gradient average; Reddi et al. 2018)", flag="--amsgrad", axis="amsgrad")
    head_lr: float | None = knob(None, "learning rate of the classifier head (finetune); default lr",
                                 flag="--head-lr", axis="head_lr", ge=0)
    body_lr: float | None = knob(None, "learning rate of everything else (finetune); default lr",
                                 flag="--body-lr", axis="body_lr", ge=0)
    decoupled: bool = knob(False, "airbench's units (sgd, muon): optim.lr is per 1024 examples (torch lr = lr x "
                           "batch / (1024 (1 + 1/(1 - momentum)))) and optim.weight_decay is independent of lr "
                           "and of the group multipliers (each group's torch decay is divided by its lr)",
                           flag="--decoupled")
    bn_bias_lr_mult: float = knob(1.0, "learning-rate multiplier of BatchNorm biases (airbench: 64); under "
                                  "optim.decoupled their weight decay stays that of the other weights", gt=0)
    muon_lr: float = knob(0.24, "muon: learning rate of the conv filters (Muon, flattened to 2-D); the rest "
                          "take optim.lr with Nesterov SGD", gt=0)
    muon_momentum: float = knob(0.6, "muon: Muon momentum of the conv filters", ge=0, lt=1)
    lr_scaling: str = knob("none", "linear: lr x global batch / base_batch (applied when the config is resolved)",
                           choices=("none", "linear"), flag="--lr-scaling")
    base_batch: int = knob(128, "reference batch of the linear scaling rule")


@dataclass
class SchedConfig:
    """Learning-rate schedule (torch.optim.lr_scheduler) and warm-up."""

    name: str = knob("cosine", "learning-rate schedule", registry="scheduler",
                     flag="--scheduler", axis="scheduler")
    warmup_epochs: float = knob(0.0, "linear warm-up length in epochs (schedules that take one)",
                                flag="--warmup-epochs", axis="warmup_epochs", ge=0)
    warmup_start_factor: float = knob(0.1, "warm-up starts at lr x this")
    step_size: int = knob(30, "step: epochs between decays", ge=1)
    milestones: list[int] = knob(help="multistep: epochs", factory=lambda: [50, 75])
    gamma: float = knob(0.1, "step, multistep, exponential (per epoch), plateau factor", gt=0)
    power: float = knob(1.0, "poly: power")
    min_lr: float = knob(0.0, "cosine floor; linear/poly end value")
    pct_start: float = knob(0.25, "onecycle: fraction of steps rising", gt=0, lt=1)
    cycle_epochs: float = knob(2.0, "cyclic: epochs per half cycle")
    base_lr_factor: float = knob(0.1, "cyclic: base_lr = lr x factor")
    patience: int = knob(2, "plateau: epochs without val-loss improvement")
    poly_epochs: float = knob(10.0, "poly_cyclic: epochs of polynomial decay before the cyclic phase")
    peak_at: float = knob(0.23, "piecewise: fraction of training steps at which lr peaks (linear from lr x "
                          "sched.warmup_start_factor up to lr)", ge=0, lt=1)
    floor_factor: float = knob(0.07, "piecewise: lr x this at the last step (linear decay from the peak)", ge=0)


@dataclass
class TrainConfig:
    """The loop: length, batch, regularisation, stopping, precision and reproducibility."""

    epochs: int | float = knob(10, "training epochs; a fraction (9.9) ends the last epoch after that fraction of "
                               "its steps", flag="--epochs", axis="epochs", ge=1)
    batch_size: int = knob(128, "batch size per worker", flag="--batch-size", axis="batch_size", ge=1)
    eval_batch_size: int = knob(512, "evaluation batch size", ge=1)
    label_smoothing: float = knob(0.0, "label smoothing",
                                  flag="--label-smoothing", axis="label_smoothing", ge=0, lt=1)
    grad_clip: float | None = knob(None, "max gradient norm", flag="--grad-clip", gt=0)
    early_stop_patience: int | None = knob(None, "stop after this many epochs without val-loss improvement",
                                           flag="--early-stop", ge=1)
    min_delta: float = knob(0.0, "smallest val-loss improvement that counts", flag="--min-delta", ge=0)
    budget: str | None = knob(None, "wall-clock budget, e.g. 90s, 30m, 2h (still tests at the end)",
                              flag="--budget")
    target_acc: float | None = knob(None, "record the time when val accuracy first reaches this",
                                    flag="--target-acc", gt=0, le=1)
    stop_at_target: bool = knob(False, "stop after the epoch whose val accuracy first reaches train.target_acc "
                                "(AlgoPerf's time to target; the test still runs)")
    precision: str = knob("auto", "auto (bf16 on GPUs with native bf16, else fp16 + GradScaler; on a CPU what "
                          "`harness bench probe` measures fastest: bf16 only where native and >= 1.2x), "
                          "fp32 (TF32 matmuls on CUDA), bf16 or fp16 (CUDA); the resolved config holds what ran",
                          choices=("auto", "fp32", "bf16", "fp16"), flag="--precision", axis="precision")
    channels_last: bool | None = knob(None, "channels_last memory format (unset: on for CUDA; on a CPU "
                                         "where the probe measures it >= 1.05x faster)", flag="--channels-last")
    compile: bool = knob(False, "torch.compile the model: static shapes (the short last training batch is dropped, "
                         "evaluation pads its last batch), compile time measured apart from epoch 1",
                         flag="--compile")
    seed: int = knob(0, "random seed (weights, split, augmentation)", identity=REPLICATE, sweep=True,
                     flag="--seed", ge=0)
    deterministic: bool = knob(False, "deterministic algorithms (errors on ops without one; on CUDA also "
                               "CUBLAS_WORKSPACE_CONFIG, cuDNN deterministic, no TF32)", flag="--deterministic")
    checkpoint_every: int = knob(5, "write last.pt every N epochs (and at the last) for --resume and Ray Train "
                                 "restarts, which continue from the last one written; 0: never", identity=NONE,
                                 flag="--checkpoint-every", ge=0)
    max_steps_per_epoch: int | None = knob(None, "cap steps per epoch (smoke tests)", ge=1)
    max_steps: int | None = knob(None, "stop after this many optimizer steps in all (a budget that does not depend "
                                 "on the hardware, e.g. a report's step count); stop reason: max_steps", ge=1)
    measure_inference: bool = knob(True, "measure inference images/s at batch 256 at the end", identity=NONE)
    save_best: bool = knob(True, "write best.pt (the weights selected on validation) at the end of the run; a "
                           "sweep's null trials skip it", identity=NONE)
    progress: bool = knob(True, "per-epoch progress lines", identity=NONE, sweep=True,
                          flag="--no-progress", resume=True)
    tta: str = knob("none", "test-time augmentation of validation and test: none, flip (2 views), flip_translate "
                    "(6 views: flip, and both shifted 1 px diagonally with reflect padding; airbench)",
                    choices=("none", "flip", "flip_translate"), flag="--tta")
    ema: str = knob("none", "weight averaging: ema (an exponential moving average, evaluated and selected), "
                    "lookahead (the weights are pulled back to the average at every update; airbench94); "
                    "evaluation and best.pt use the averaged weights", choices=("none", "ema", "lookahead"),
                    flag="--ema")
    ema_decay: float = knob(0.95, "weight averaging: decay per optimizer step", gt=0, lt=1)
    ema_every: int = knob(5, "weight averaging: optimizer steps between updates (the decay is decay^every)",
                          ge=1)
    ema_ramp: float = knob(3.0, "weight averaging: the decay is scaled by (step / total steps)^ramp, so the "
                           "average follows early weights closely (airbench: 3); 0: constant", ge=0)


@dataclass
class StrategyConfig:
    """How the weights start and which of them train."""

    name: str = knob("scratch", "training strategy", registry="strategy", flag="--strategy", axis="strategy")
    weights: str | None = knob(None, "pretrained weights of models that have them (harness list models): a "
                               "name such as IMAGENET1K_V1, or a local torchvision state-dict file (FILE.pth), "
                               "which works offline", flag="--weights", axis="weights")
    init_from: str | None = knob(None, "run directory of an earlier harness run to start from",
                                 flag="--init-from")
    head_layers: int = knob(1, "linear layers in the new classifier head",
                            flag="--head-layers", axis="head_layers", ge=1, le=4)
    trainable: str | None = knob(None, "comma list of stages that train, e.g. head,layer4,layer3",
                                 flag="--trainable", axis="trainable")
    freeze: str | None = knob(None, "comma list of stages to freeze, or all-but-head",
                              flag="--freeze", axis="freeze")
    pretrain_dataset: str | None = knob(None, "transfer: dataset of stage one", registry="dataset",
                                        flag="--pretrain-dataset", axis="pretrain_dataset")
    pretrain_epochs: int | None = knob(None, "transfer: epochs of stage one (default: train.epochs)",
                                       flag="--pretrain-epochs", axis="pretrain_epochs", ge=1)


@dataclass
class DistConfig:
    """Where it runs: in process (workers=0) or as Ray Train DDP with N workers."""

    workers: int = knob(0, "0 = in process; N = Ray Train DDP with N workers", sweep=True,
                        flag="--workers", ge=0)
    use_gpu: bool | None = knob(None, "train on GPUs (unset: when CUDA is present; on a Ray cluster, say it)",
                                identity=NONE, sweep=True)
    cpus_per_worker: int | None = knob(None, "CPUs per Ray Train worker (unset: on GPUs, the GPU nodes' CPUs per "
                                       "GPU; on CPUs, an equal share)", identity=NONE, sweep=True,
                                       flag="--cpus-per-worker", ge=1)
    max_failures: int = knob(0, "Ray Train restarts from the last checkpoint this many times", identity=NONE,
                             flag="--max-failures", ge=0)
    storage: str | None = knob(None, "Ray Train storage path for checkpoints", identity=NONE, sweep=True)


@dataclass
class RunConfig:
    """Everything that defines one run. Saved as config.yaml in the run directory."""

    name: str = knob("", "run name prefix; the id adds the config hash", identity=NONE, sweep=True,
                     flag="--name")
    out: str = knob("runs", "directory that receives the run directory", identity=NONE, sweep=True,
                    flag="--out")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    dist: DistConfig = field(default_factory=DistConfig)


_FIELDS: dict[str, FieldInfo] = {}


def fields() -> dict[str, FieldInfo]:
    """Every leaf of :class:`RunConfig` by dotted key, in declaration order."""
    if not _FIELDS:
        _FIELDS.update((f.key, f) for f in walk(RunConfig))
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
    """Reject impossible values with one line naming the key, the value and what is allowed.

    Each key's declared range and choices (:func:`harness.run.knobs.knob`) are checked here for every key;
    what follows are the checks that involve more than one key, or that a range cannot say.
    """

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    flat = flat_config(cfg)
    for key, f in fields().items():
        wrong = problem(f, flat[key])
        need(wrong is None, f"{key} {wrong}")
    t, d = cfg.train, cfg.data
    if t.budget is not None:
        try:
            budget = parse_duration(t.budget)
        except ConfigError as e:
            raise ConfigError(f"train.budget: {e}") from None
        need(budget > 0, f"train.budget must be positive, got '{t.budget}'")
    need(not t.stop_at_target or t.target_acc is not None, "train.stop_at_target needs train.target_acc")
    # with k-fold CV the folds are the validation split, and val_fraction is not used
    need(0 < d.val_fraction < 1 or d.folds > 1, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    need(d.folds == 0 or d.folds >= 2, f"data.folds must be 0 or >= 2, got {d.folds}")
    need(d.folds == 0 or 0 <= d.fold < d.folds, f"data.fold must be in [0, {d.folds}), got {d.fold}")


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
