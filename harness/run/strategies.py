"""Training strategies: how a model's weights start and which of them train.

- ``scratch``: fresh weights (``model.init``: default, xavier or kaiming).
- ``finetune``: torchvision weights (``--weights``, tv_* models) or an earlier harness run's
  checkpoint (``--init-from``), then a new head (1-4 layers), named frozen stages and per-group
  learning rates (``--head-lr``/``--body-lr``).
- ``linear_probe``: finetune with only the head trainable.
- ``transfer``: pretrain from scratch on one dataset, then finetune on another: two
  :class:`Stage` s, and the trainer hands stage one's directory to stage two as ``init_from``.

A strategy declares everything the rest of the harness needs to know about it: ``validate`` (one-line
errors before anything loads), ``rewrite`` (the config as it really runs, saved with the run),
``stages`` and ``prepare`` (the model of one stage).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.errors import ConfigError, HarnessError
from harness.files import BEST_CKPT, LAST_CKPT, PRETRAIN_DIR
from harness.registry import Registry, unknown_name_message
from harness.run.config import RunConfig, StrategyConfig


@dataclass
class Prepared:
    """A model ready to train, with what the optimizer and the loop need to know about it."""

    model: nn.Module
    head_prefix: str | None  # dotted name of the head, for per-group learning rates


@dataclass(frozen=True)
class Stage:
    """One training stage of a run: its config, and where its files go inside the run directory."""

    cfg: RunConfig
    subdir: str = ""  # "" is the run directory itself; transfer's stage one is PRETRAIN_DIR
    init_from_previous: bool = False  # start from the previous stage's weights (cfg.strategy.init_from)
    label: str = ""  # shown in progress lines, e.g. "pretraining on imagenette"


@dataclass(frozen=True)
class Strategy:
    """A registered strategy.

    Attributes:
        prepare: builds the model of one stage (``cfg, num_classes, in_chans, img_size -> Prepared``).
        validate: raises a one-line :class:`ConfigError` on options this strategy cannot use.
        rewrite: the config as this strategy runs it, applied once when the config is resolved.
        stages: the stages of one run, in order (most strategies have one).
    """

    name: str
    description: str
    prepare: Callable[[RunConfig, int, int, int], Prepared]
    validate: Callable[[RunConfig], None]
    rewrite: Callable[[RunConfig], RunConfig] = lambda cfg: cfg
    stages: Callable[[RunConfig], list[Stage]] = lambda cfg: [Stage(cfg)]


STRATEGIES: Registry[Strategy] = Registry("strategy")


# ---------------------------------------------------------------------------------------------
# helpers

def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise conv and linear layers with ``xavier`` or ``kaiming``; ``default`` keeps the builder's;
    ``dirac`` keeps it too, then makes identity filters (:func:`dirac_init`)."""
    if scheme == "default":
        return
    if scheme == "dirac":
        dirac_init(model)
        return
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def dirac_init(model: nn.Module) -> int:
    """The first ``in_channels`` filters of every stride-1, odd-kernel, ungrouped conv with at least as many
    outputs as inputs become identity maps (``nn.init.dirac_``), as airbench initialises its convs: each
    layer then starts by passing its input through, and the remaining filters keep the builder's init.

    Returns:
        How many convs were changed (a model with none is left as built).
    """
    n = 0
    with torch.no_grad():
        for m in model.modules():
            k = m.kernel_size if isinstance(m, nn.Conv2d) else None
            if (k and k[0] == k[1] and k[0] % 2 == 1 and m.stride == (1, 1) and m.groups == 1
                    and m.out_channels >= m.in_channels):
                nn.init.dirac_(m.weight[: m.in_channels])
                n += 1
    return n


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def replace_head(model: nn.Module, head_path: str, num_classes: int, layers: int = 1) -> None:
    """Put a fresh classifier head for ``num_classes`` at ``head_path``, ``layers`` linear layers deep.

    A deeper head (the reports tried 1-4 layers) halves the width at each hidden layer, with ReLU and
    dropout 0.2 between layers.
    """
    old = model.get_submodule(head_path)
    if isinstance(old, nn.Linear):
        width = old.in_features
        mods: list[nn.Module] = []
        for _ in range(layers - 1):
            nxt = max(width // 2, num_classes * 2)
            mods += [nn.Linear(width, nxt), nn.ReLU(inplace=True), nn.Dropout(0.2)]
            width = nxt
        mods.append(nn.Linear(width, num_classes))
        new: nn.Module = mods[0] if len(mods) == 1 else nn.Sequential(*mods)
    elif isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1):
        if layers != 1:
            raise ConfigError(f"strategy.head_layers={layers} needs a linear head; this model's head is a 1x1 conv")
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
    else:
        raise ConfigError(f"cannot replace head '{head_path}' of type {type(old).__name__}")
    _set_module(model, head_path, new.to(next(model.parameters()).device))


def resolve_frozen(model: nn.Module, head_path: str, trainable: str | None, freeze: str | None, arch: str) -> list[str]:
    """Translate ``--trainable``/``--freeze`` stage names into frozen dotted prefixes.

    Stages are the model's top-level children; ``head`` names the classifier head itself.

    Raises:
        HarnessError: an unknown stage name, naming the valid ones.
    """
    stages = [n for n, c in model.named_children() if any(True for _ in c.parameters())]
    valid = ["head", *stages]

    def check(names: list[str]) -> list[str]:
        for n in names:
            if n not in valid:
                raise HarnessError(unknown_name_message(f"stage for {arch}", n, valid))
        return names

    if trainable and freeze:
        raise ConfigError("give either --trainable or --freeze, not both")
    if freeze == "all-but-head":
        trainable, freeze = "head", None
    if trainable:
        keep = check([t.strip() for t in trainable.split(",") if t.strip()])
        keep_prefixes = [head_path if k == "head" else k for k in keep]
        frozen = []
        for n, _ in model.named_parameters():
            if not any(n == k or n.startswith(k + ".") for k in keep_prefixes):
                frozen.append(n)
        return frozen
    if freeze:
        names = check([t.strip() for t in freeze.split(",") if t.strip()])
        return [head_path if k == "head" else k for k in names]
    return []


def apply_freeze(model: nn.Module, frozen: list[str]) -> None:
    """Turn off gradients for every parameter under a frozen prefix."""
    for n, p in model.named_parameters():
        if any(n == f or n.startswith(f + ".") for f in frozen):
            p.requires_grad_(False)


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except BatchNorm layers whose parameters are all frozen stay in eval mode.

    A frozen stage's BatchNorm must keep its running statistics, or fine-tuning silently changes the
    frozen features.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.eval()


def read_init_checkpoint(run_dir: str) -> dict[str, torch.Tensor]:
    """The weights of an earlier harness run for ``--init-from``: its ``best.pt``, else ``last.pt``.

    Raises:
        HarnessError: no checkpoint there, or one that is not readable (one line naming the file).
    """
    d = Path(run_dir)
    ckpt = next((p for p in (d / BEST_CKPT, d / LAST_CKPT) if p.is_file()), None)
    if ckpt is None:
        raise HarnessError(f"--init-from {run_dir}: no {BEST_CKPT} or {LAST_CKPT} there (give an earlier run's "
                           "directory)")
    try:
        # mmap: the file is opened twice per run (checked when the config is resolved, loaded when the model
        # is built); mapping it reads only what is used (harness checkpoints are zip files).
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        state = state.get("model", state)
        if not isinstance(state, dict):
            raise ValueError("no model weights in it")
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a truncated or foreign file
        raise HarnessError(f"--init-from {run_dir}: {ckpt} is not a readable checkpoint "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
    return state


def load_checkpoint_weights(model: nn.Module, run_dir: str, head_path: str) -> None:
    """Load an earlier harness run's weights (:func:`read_init_checkpoint`) into ``model``, except its head.

    Raises:
        HarnessError: no readable checkpoint there, or its body does not fit this model.
    """
    state = read_init_checkpoint(run_dir)
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not (k == head_path or k.startswith(head_path + "."))}
    bad = [k for k, v in body.items() if k not in own or own[k].shape != v.shape]
    if bad:
        k = bad[0]
        got = tuple(body[k].shape)
        want = tuple(own[k].shape) if k in own else "missing"
        raise HarnessError(f"--init-from {run_dir}: weights do not fit this model ({k}: checkpoint {got}, model {want}); "
                           "same arch, in_chans (--grayscale) and img_size are needed")
    model.load_state_dict(body, strict=False)


def build_model(cfg: RunConfig, num_classes: int, in_chans: int, img_size: int, **extra: object) -> nn.Module:
    """``create_model`` with the config's architecture and builder keywords."""
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures import create_model

    return create_model(cfg.model.arch, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                        **cfg.model.kwargs, **extra)


def _head_path(arch: str) -> str:
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures import model_info

    return model_info(arch).head


# ---------------------------------------------------------------------------------------------
# the strategies

_NEEDS_WEIGHTS = ("strategy {name} needs pretrained weights: --weights NAME (models that have them, see "
                  "`harness list models`) or --init-from RUN_DIR (an earlier harness run)")


def _validate_scratch(cfg: RunConfig) -> None:
    if cfg.strategy.weights or cfg.strategy.init_from:
        raise ConfigError("strategy scratch starts from fresh weights; use --strategy finetune with --weights/--init-from")
    _no_pretrain_dataset(cfg)


def _no_pretrain_dataset(cfg: RunConfig) -> None:
    if cfg.strategy.pretrain_dataset:
        raise ConfigError("--pretrain-dataset is only used by --strategy transfer")


def _check_weights(cfg: RunConfig) -> None:
    """``--weights`` needs a model that declares pretrained weights, and names one of them."""
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures import model_info

    s, info = cfg.strategy, model_info(cfg.model.arch)
    if not s.weights:
        return
    if not info.weights:
        have = ", ".join(n for n in _models_with_weights())
        raise ConfigError(f"--weights {s.weights}: {cfg.model.arch} has no pretrained weights (models that have "
                          f"them: {have}); use --init-from RUN_DIR for harness models")


def _models_with_weights() -> list[str]:
    # torchvision is heavy: loaded when this runs, so importing this module stays light
    from architectures import list_models, model_info

    return [n for n in list_models() if model_info(n).weights]


def _validate_finetune(cfg: RunConfig) -> None:
    s = cfg.strategy
    if s.weights and s.init_from:
        raise ConfigError("give either --weights or --init-from, not both")
    if not (s.weights or s.init_from):
        raise ConfigError(_NEEDS_WEIGHTS.format(name=s.name))
    _check_weights(cfg)
    _no_pretrain_dataset(cfg)


def _validate_linear_probe(cfg: RunConfig) -> None:
    s = cfg.strategy
    if (s.trainable and s.trainable != "head") or (s.freeze and s.freeze != "all-but-head"):
        raise ConfigError("strategy linear_probe trains only the head; drop --trainable/--freeze or use finetune")
    _validate_finetune(cfg)


def _validate_transfer(cfg: RunConfig) -> None:
    s = cfg.strategy
    if not s.pretrain_dataset:
        raise ConfigError("strategy transfer needs --pretrain-dataset (e.g. imagenette)")
    if s.weights:
        raise ConfigError("strategy transfer pretrains from scratch on --pretrain-dataset; drop --weights "
                          "(or use --strategy finetune)")


def _scratch(cfg: RunConfig, num_classes: int, in_chans: int, img_size: int) -> Prepared:
    model = build_model(cfg, num_classes, in_chans, img_size)
    init_weights(model, cfg.model.init)
    head = _head_path(cfg.model.arch)
    frozen = resolve_frozen(model, head, cfg.strategy.trainable, cfg.strategy.freeze, cfg.model.arch)
    apply_freeze(model, frozen)
    return Prepared(model, head)


def _finetune(cfg: RunConfig, num_classes: int, in_chans: int, img_size: int) -> Prepared:
    s = cfg.strategy
    head = _head_path(cfg.model.arch)
    if s.weights:
        model = build_model(cfg, num_classes, in_chans, img_size, weights=s.weights)
    elif s.init_from:
        model = build_model(cfg, num_classes, in_chans, img_size)
        load_checkpoint_weights(model, s.init_from, head)
    else:  # validate() refuses this; a stage handed no weights is a bug, not bad input
        raise RuntimeError(_NEEDS_WEIGHTS.format(name=s.name))
    replace_head(model, head, num_classes, s.head_layers)
    frozen = resolve_frozen(model, head, s.trainable, s.freeze, cfg.model.arch)
    apply_freeze(model, frozen)
    return Prepared(model, head)


def _probe_rewrite(cfg: RunConfig) -> RunConfig:
    cfg = copy.deepcopy(cfg)
    cfg.strategy.trainable, cfg.strategy.freeze = "head", None
    return cfg


def _transfer_stages(cfg: RunConfig) -> list[Stage]:
    """Stage one pretrains from scratch on ``pretrain_dataset``; stage two finetunes from it on ``dataset``."""
    pre = copy.deepcopy(cfg)
    pre.strategy = StrategyConfig(name="scratch")
    pre.optim.head_lr = pre.optim.body_lr = None
    pre.data.dataset = cfg.strategy.pretrain_dataset
    pre.train.epochs = cfg.strategy.pretrain_epochs or cfg.train.epochs
    pre.train.target_acc = None
    return [Stage(pre, PRETRAIN_DIR, label=f"pretraining {cfg.model.arch} on {pre.data.dataset}"),
            Stage(cfg, "", init_from_previous=True, label=f"finetuning on {cfg.data.dataset}")]


STRATEGIES.register("scratch", Strategy("scratch", "train every weight from a fresh init", _scratch,
                                        _validate_scratch))
STRATEGIES.register("finetune", Strategy("finetune", "start from --weights or --init-from, new head, "
                                         "optional frozen stages and per-group lrs", _finetune, _validate_finetune))
STRATEGIES.register("linear_probe", Strategy("linear_probe", "finetune only the new head", _finetune,
                                             _validate_linear_probe, rewrite=_probe_rewrite))
STRATEGIES.register("transfer", Strategy("transfer", "pretrain on --pretrain-dataset, then finetune on --dataset",
                                         _finetune, _validate_transfer, stages=_transfer_stages))
