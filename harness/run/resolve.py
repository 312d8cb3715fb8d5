"""From the config a user asked for to the config that runs: checked, rewritten and settled once.

:func:`resolve` runs before the run directory is named, so ``config.yaml``, the directory's hash and
the summary's ``config_hash`` all describe what really ran:

- every registry name and strategy option is checked (:func:`check`), with one line per problem;
- the strategy rewrites what it implies (``linear_probe`` trains the head only);
- ``dist.use_gpu`` records the target device, and ``auto`` speed options become its choice: bf16 autocast
  and channels_last on CUDA; on a CPU, the layout and precision the probe measured fastest for this model
  here (:mod:`harness.run.probe`);
- ``optim.lr_scaling: linear`` is applied: ``optim.lr`` (and head/body lrs) hold the scaled values and
  the rule is marked as applied (``none``), so the same run is one configuration however it was asked.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import torch
from torch import nn

from architectures import create_model, model_info
from harness.errors import ConfigError
from harness.run.config import RunConfig, fields, flat_config, validate
from harness.run.data import augment_spec
from harness.run.names import check_name
from harness.run.optim import takes_warmup, warmup_error
from harness.run.probe import settle_cpu_auto
from harness.run.strategies import STRATEGIES, read_init_checkpoint, resolve_frozen
from harness.run.whiten import whiten_layer
from loaders import BACKENDS


@dataclasses.dataclass(eq=False)
class ResolvedConfig(RunConfig):
    """A :class:`RunConfig` as :func:`resolve` returned it: checked, rewritten by its strategy, its device and
    speed options settled. The type says it is resolved, so the layers below (:func:`harness.run.trainer.fit`)
    take it as it is instead of checking and rewriting it again; a plain ``RunConfig`` is resolved there once.
    ``config.yaml`` holds a resolved config, so :func:`as_resolved` marks one read back (``--resume``)."""

    def __eq__(self, other: object) -> bool:
        """Equal to any ``RunConfig`` with the same values: being resolved is a fact about the value, not a
        second kind of config (the dataclass default would compare the classes first)."""
        if not isinstance(other, RunConfig):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(RunConfig))


def as_resolved(cfg: RunConfig) -> ResolvedConfig:
    """``cfg`` typed as resolved, without checking it: only for a config that :func:`resolve` wrote."""
    if isinstance(cfg, ResolvedConfig):
        return cfg
    return ResolvedConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)})


def target_device_type(cfg: RunConfig, cluster_gpus: float | None = None) -> str:
    """``cuda`` or ``cpu``: where the run's workers train.

    ``dist.use_gpu`` when set (on a Ray cluster it must be: :func:`harness.run.resources.require_cluster_device`).
    Otherwise, for Ray Train workers on a private local Ray, whether it has GPUs (``cluster_gpus``, from
    :mod:`harness.run.resources`): the process resolving may be a CPU-only head whose workers are GPU
    nodes, so CUDA on *this* machine says nothing about them. In process, whether CUDA is here.
    """
    if cfg.dist.use_gpu is not None:
        return "cuda" if cfg.dist.use_gpu else "cpu"
    if cfg.dist.workers > 0 and cluster_gpus is not None:
        return "cuda" if cluster_gpus > 0 else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def check(cfg: RunConfig, cluster_gpus: float | None = None) -> None:
    """Fail fast, before any data loads, on names and combinations that cannot work.

    Raises:
        HarnessError: one line naming the problem and the valid choices.
    """
    flat = flat_config(cfg)
    for key, f in fields().items():
        if f.registry:
            try:
                check_name(key, flat[key])
            except ConfigError as e:  # name the key: the flag's help shows it ([model.arch])
                raise ConfigError(f"{key}: {e}") from None
    STRATEGIES.get(cfg.strategy.name).validate(cfg)
    if cfg.strategy.trainable or cfg.strategy.freeze:
        _check_stage_names(cfg)
    if cfg.strategy.init_from:
        read_init_checkpoint(cfg.strategy.init_from)  # missing or corrupt: one line before any data loads
    if cfg.strategy.weights:
        # Fetch (or find cached) pretrained weights now: offline, that is a one-line error before any data loads.

        create_model(cfg.model.arch, num_classes=10, weights=cfg.strategy.weights)
    cuda = target_device_type(cfg, cluster_gpus) == "cuda"
    if cfg.train.precision == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU (GradScaler); use bf16 on CPU")
    # In process, the GPU must be here; a sweep checks against its cluster's GPUs (cluster_gpus) instead.
    if cfg.dist.use_gpu and cfg.dist.workers == 0 and cluster_gpus is None and not torch.cuda.is_available():
        raise ConfigError(f"dist.use_gpu=true but CUDA not available on this machine ({os.uname().nodename}); "
                          "drop dist.use_gpu, or run where there is a GPU")
    if cfg.data.layout == "airbench":
        if cfg.data.loader not in ("tensor", "auto"):
            raise ConfigError(f"data.layout=airbench is a layout of the tensor loader, not of {cfg.data.loader}")
        if cuda and cfg.train.precision == "fp32":
            raise ConfigError("data.layout=airbench stores the split in bf16/fp16 on CUDA: use train.precision "
                              "bf16, fp16 or auto")
    if cfg.sched.warmup_epochs and not takes_warmup(cfg.sched.name):
        raise ConfigError(warmup_error(cfg.sched.name))
    _check_recipe_options(cfg)


def _check_recipe_options(cfg: RunConfig) -> None:
    """The speed-recipe options (whitening, decoupled units, augmentation modes) against what can do them."""
    if cfg.optim.decoupled and cfg.optim.name not in ("sgd", "muon"):
        raise ConfigError(f"optim.decoupled is defined for momentum SGD (sgd, muon), not optim.name={cfg.optim.name}")
    if cfg.model.whiten:
        with torch.device("meta"):
            whiten_layer(create_model(cfg.model.arch, num_classes=10, **cfg.model.kwargs), cfg.model.arch)
        if cfg.model.whiten_bias_epochs and cfg.dist.workers > 1:
            raise ConfigError("model.whiten_bias_epochs freezes a parameter mid-run, which DDP does not allow; "
                              "use model.whiten_bias_epochs=0 with dist.workers > 1")
    elif cfg.model.whiten_bias_epochs:
        raise ConfigError("model.whiten_bias_epochs needs model.whiten=true")

    backend = BACKENDS.get(cfg.data.loader)
    if isinstance(backend, type):  # a loader class; auto picks one later, and that one checks
        backend.check_spec(augment_spec(cfg))


def _meta_model(cfg: RunConfig) -> nn.Module:
    """The run's model built on the meta device (no memory, no weights, no data), to inspect its layers.

    Shared between calls with the same model: only read it. A sweep resolves every trial, most trials
    share a few models, and building one was most of ``harness plan --matrix full``'s time.
    """
    info = model_info(cfg.model.arch)
    in_chans = 1 if cfg.data.grayscale else 3
    if in_chans not in info.in_chans:
        in_chans = info.in_chans[0]
    img_size = max(cfg.data.img_size or info.default_img_size, info.min_img_size)
    key = (cfg.model.arch, in_chans, img_size, repr(sorted(cfg.model.kwargs.items())))
    if key not in _META_MODELS:
        with torch.device("meta"):
            _META_MODELS[key] = create_model(cfg.model.arch, num_classes=10, in_chans=in_chans, img_size=img_size,
                                             **cfg.model.kwargs)
    return _META_MODELS[key]


_META_MODELS: dict[tuple, nn.Module] = {}  # (arch, in_chans, img_size, kwargs) -> meta-device model


def _check_stage_names(cfg: RunConfig) -> None:
    """Resolve --trainable/--freeze against the meta-device model."""
    resolve_frozen(_meta_model(cfg), model_info(cfg.model.arch).head, cfg.strategy.trainable, cfg.strategy.freeze,
                   cfg.model.arch)


def check_deterministic_cuda(cfg: RunConfig) -> None:
    """Refuse ``train.deterministic`` on CUDA for a model whose backward has no deterministic CUDA kernel.

    Adaptive average pooling to more than 1x1 (tv_vgg16's 7x7, tv_alexnet's 6x6: the only registered models
    with such a layer) has none, nor have the other layers :func:`nondeterministic_cuda_backward` names, and
    ``torch.use_deterministic_algorithms`` raises at the first backward, after the data has loaded;
    pooling to 1x1 is a mean, which is deterministic. The pool's backward runs only when a layer before
    it trains, so a linear probe (only the head after it trains) is allowed. ``cfg`` is rewritten by its
    strategy already (linear_probe's ``trainable: head``).

    Raises:
        ConfigError: one line naming the model, the layer and the ways out.
    """
    model = _meta_model(cfg)
    frozen = resolve_frozen(model, model_info(cfg.model.arch).head, cfg.strategy.trainable, cfg.strategy.freeze,
                            cfg.model.arch)
    trains_before = False  # a trainable parameter registered before this module (torchvision's order is the graph's)
    for name, mod in model.named_modules():
        own = (f"{name}.{n}" if name else n for n, _ in mod.named_parameters(recurse=False))
        trains_before = trains_before or any(not any(p == f or p.startswith(f + ".") for f in frozen) for p in own)
        if trains_before and nondeterministic_cuda_backward(mod):
            raise ConfigError(f"train.deterministic=true: {cfg.model.arch}'s {name} ({mod}) has no deterministic "
                              "CUDA backward; drop --deterministic, train on the CPU (dist.use_gpu=false), or train "
                              "only the layers after it (--strategy linear_probe)")


#: Module types whose CUDA backward always lacks a deterministic kernel (``torch.use_deterministic_algorithms``
#: lists them); adaptive average pools and upsampling depend on their settings (see below).
_NONDETERMINISTIC_BACKWARD = (nn.AvgPool3d, nn.AdaptiveMaxPool2d, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d,
                              nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d, nn.ReflectionPad1d, nn.ReflectionPad2d,
                              nn.ReflectionPad3d)


def nondeterministic_cuda_backward(mod: nn.Module) -> bool:
    """Whether ``mod``'s own backward has no deterministic CUDA kernel (it raises under ``--deterministic``).

    An adaptive average pool to 1x1 is a mean (deterministic); to anything larger it is not, whether or not
    its input divides evenly. Upsampling is not in its interpolating modes, and is in ``nearest``.
    """
    if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        return _beyond_1x1(mod.output_size)
    if isinstance(mod, nn.Upsample):
        return mod.mode in ("linear", "bilinear", "bicubic", "trilinear")
    return isinstance(mod, _NONDETERMINISTIC_BACKWARD)


def _beyond_1x1(output_size: int | None | tuple) -> bool:
    """Whether an adaptive pool's ``output_size`` is more than one value per channel (None keeps the input's)."""
    sizes = output_size if isinstance(output_size, tuple) else (output_size,)
    return any(s != 1 for s in sizes)


def auto_precision(device_type: str, native_bf16: bool | None) -> str:
    """What ``train.precision: auto`` becomes on a GPU.

    bf16 where the GPU computes it natively (Ampere and later: no loss scaling needed), else fp16 with a
    GradScaler. ``torch.cuda.is_bf16_supported()`` alone counts emulated bf16 (pre-Ampere GPUs), which is
    slow: ``native_bf16`` is the check without emulation, or None when no GPU is visible here (a CPU head
    resolving for GPU workers), where bf16 is assumed. On a CPU the probe decides
    (:func:`harness.run.probe.settle_cpu_auto`); without it, fp32.
    """
    if device_type != "cuda":
        return "fp32"
    return "fp16" if native_bf16 is False else "bf16"


def native_bf16() -> bool | None:
    """Whether the visible GPU computes bf16 natively; None without a visible GPU."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.is_bf16_supported(including_emulation=False)


def device_defaults(cfg: RunConfig, device_type: str, probe: bool = True) -> None:
    """Settle the ``auto`` speed options for ``device_type`` in place.

    CUDA: see :func:`auto_precision`, and channels_last. CPU: what the probe measured fastest for this
    model's shape on this machine (:mod:`harness.run.probe`); fp32 NCHW with ``probe=False`` (the
    defaults as such, e.g. to tell which settings a run chose).
    """
    if device_type != "cuda":
        settle_cpu_auto(cfg, probe)
        return
    if cfg.train.precision == "auto":
        cfg.train.precision = auto_precision(device_type, native_bf16())
    if cfg.train.channels_last is None:
        cfg.train.channels_last = True


def settle_probe(asked: RunConfig, resolved: ResolvedConfig) -> ResolvedConfig:
    """``resolved`` (by ``resolve(asked, probe=False)``) with what ``asked`` left to ``auto`` on a CPU settled
    by the probe instead of the plain default.

    Why two steps: the probe times a few training steps (seconds on first use), so a command resolves
    without it, runs every check on what the user asked (a request this machine can never schedule is one
    line, not a probe's table and then that line), and only then settles the speed options.
    """
    if resolved.dist.use_gpu:
        return as_resolved(resolved)
    out = copy.deepcopy(resolved)
    if asked.train.precision == "auto":
        out.train.precision = "auto"
    if asked.train.channels_last is None:
        out.train.channels_last = None
    device_defaults(out, "cpu")
    return as_resolved(out)


def scale_lr(cfg: RunConfig) -> None:
    """Apply ``optim.lr_scaling: linear`` in place: every lr times global batch / ``optim.base_batch``."""
    o = cfg.optim
    if o.lr_scaling != "linear":
        return
    factor = cfg.train.batch_size * max(1, cfg.dist.workers) / o.base_batch
    o.lr *= factor
    o.head_lr = o.head_lr * factor if o.head_lr is not None else None
    o.body_lr = o.body_lr * factor if o.body_lr is not None else None
    o.lr_scaling = "none"


def resolve(cfg: RunConfig, cluster_gpus: float | None = None, probe: bool = True) -> ResolvedConfig:
    """The config as it will run: checked, rewritten by its strategy, device defaults and lr scaling applied.

    Resolving a resolved config changes nothing, and a :class:`ResolvedConfig` is returned as it is (no
    second round of checks: ``check`` loads pretrained weights and inspects the model). The input is not
    modified. ``cluster_gpus``: the GPUs
    of the Ray cluster that DDP workers (``dist.workers > 0``) will run on (see
    :func:`target_device_type`). ``probe=False``: a CPU's ``auto`` speed options become fp32 NCHW without
    timing anything (:func:`device_defaults`).

    Raises:
        HarnessError: see :func:`check`.
    """
    if isinstance(cfg, ResolvedConfig):
        return cfg
    check(cfg, cluster_gpus)
    out = STRATEGIES.get(cfg.strategy.name).rewrite(copy.deepcopy(cfg))
    device = target_device_type(out, cluster_gpus)
    if out.train.deterministic and device == "cuda":  # after the rewrite: it says which layers train
        check_deterministic_cuda(out)
    out.dist.use_gpu = device == "cuda"  # the saved config says where it ran (not part of its identity)
    device_defaults(out, device, probe)
    scale_lr(out)
    validate(out)
    return as_resolved(out)
