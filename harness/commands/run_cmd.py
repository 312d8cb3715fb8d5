"""``harness run``: one configuration becomes one run directory (the last line printed is its path)."""

from __future__ import annotations

import argparse

# shortcut flag -> (dotted config key, help). Values are parsed and checked by harness.run.config.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "--arch": ("model.arch", "model name (harness list models)"),
    "--init": ("model.init", "scratch init: default, xavier or kaiming"),
    "--dataset": ("data.dataset", "cifar10, mnist, imagenette or synthetic"),
    "--data-dir": ("data.data_dir", "data root (default: $HARNESS_DATA_DIR or ./data)"),
    "--img-size": ("data.img_size", "resize images to this many pixels"),
    "--subset": ("data.subset", "first N training images per class"),
    "--val-fraction": ("data.val_fraction", "fraction of the training split held out for validation"),
    "--loader": ("data.loader", "auto, tensor, torchvision or ffcv"),
    "--augment": ("data.augment", "none, base, strong or stronger"),
    "--strategy": ("strategy.name", "scratch, finetune, linear_probe or transfer"),
    "--weights": ("strategy.weights", "torchvision weights name for tv_* models, e.g. IMAGENET1K_V1"),
    "--init-from": ("strategy.init_from", "run directory of an earlier harness run to start from"),
    "--head-layers": ("strategy.head_layers", "layers in the new classifier head (1-4)"),
    "--trainable": ("strategy.trainable", "comma list of stages that train, e.g. head,layer4"),
    "--freeze": ("strategy.freeze", "comma list of stages to freeze, or all-but-head"),
    "--pretrain-dataset": ("strategy.pretrain_dataset", "transfer: dataset of stage one"),
    "--pretrain-epochs": ("strategy.pretrain_epochs", "transfer: epochs of stage one"),
    "--epochs": ("train.epochs", "training epochs"),
    "--batch-size": ("train.batch_size", "batch size per worker"),
    "--optimizer": ("optim.name", "sgd, adam, adamw or rmsprop"),
    "--lr": ("optim.lr", "learning rate"),
    "--momentum": ("optim.momentum", "SGD/RMSprop momentum"),
    "--weight-decay": ("optim.weight_decay", "weight decay"),
    "--head-lr": ("optim.head_lr", "learning rate of the head (finetune)"),
    "--body-lr": ("optim.body_lr", "learning rate of the rest (finetune)"),
    "--lr-scaling": ("optim.lr_scaling", "none or linear (lr x global batch / optim.base_batch)"),
    "--scheduler": ("sched.name", "constant, step, multistep, exponential, linear, poly, cosine, onecycle, cyclic, plateau"),
    "--warmup-epochs": ("sched.warmup_epochs", "linear warm-up length in epochs"),
    "--label-smoothing": ("train.label_smoothing", "label smoothing"),
    "--grad-clip": ("train.grad_clip", "max gradient norm"),
    "--early-stop": ("train.early_stop_patience", "stop after this many epochs without val-loss improvement"),
    "--min-delta": ("train.min_delta", "smallest val-loss improvement that counts"),
    "--budget": ("train.budget", "wall-clock budget, e.g. 90s, 30m, 2h (still tests at the end)"),
    "--target-acc": ("train.target_acc", "record the time when val accuracy first reaches this"),
    "--precision": ("train.precision", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16 (CUDA)"),
    "--seed": ("train.seed", "random seed"),
    "--workers": ("dist.workers", "0 = in process; N = Ray Train DDP with N workers"),
    "--cpus-per-worker": ("dist.cpus_per_worker", "CPUs per Ray Train worker"),
    "--max-failures": ("dist.max_failures", "Ray Train restarts from the last checkpoint this many times"),
    "--out": ("out", "directory that receives the run directory (default runs/)"),
    "--name": ("name", "run name prefix"),
}
FLAGS: dict[str, tuple[str, str]] = {
    "--grayscale": ("data.grayscale", "convert images to one channel"),
    "--channels-last": ("train.channels_last", "channels_last memory format (default: on for CUDA)"),
    "--compile": ("train.compile", "torch.compile the model"),
    "--deterministic": ("train.deterministic", "deterministic algorithms"),
    "--nesterov": ("optim.nesterov", "Nesterov momentum"),
    "--download": ("data.download", "download the dataset where there is internet"),
    "--no-progress": ("train.progress", "no per-epoch progress lines"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness run``."""
    p = sub.add_parser(
        "run", help="train one configuration (in process or as Ray Train DDP)",
        description="Train one configuration. Values come from the defaults, then --config YAML, then "
        "--set overrides, then the shortcut flags. The resolved config is saved in the run directory, "
        "whose path is the last line printed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="YAML recipe (any subset of the config tree)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set optim.lr=0.05 (repeatable)")
    for flag, (key, hlp) in SHORTCUTS.items():
        p.add_argument(flag, dest="sc_" + key.replace(".", "__"), default=None, metavar="V", help=f"{hlp} [{key}]")
    for flag, (key, hlp) in FLAGS.items():
        p.add_argument(flag, dest="fl_" + key.replace(".", "__"), action="store_true", help=f"{hlp} [{key}]")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    """The RunConfig from defaults, --config, --set and shortcut flags, in that order."""
    from harness.run.config import RunConfig, apply_overrides, load_config, parse_override

    cfg = load_config(args.config) if args.config else RunConfig()
    over: dict[str, object] = dict(parse_override(o) for o in args.set)
    for name, value in vars(args).items():
        if name.startswith("sc_") and value is not None:
            over[name[3:].replace("__", ".")] = value
        elif name.startswith("fl_") and value:
            key = name[3:].replace("__", ".")
            over[key] = key != "train.progress"
    return apply_overrides(cfg, over) if over else cfg


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, print the summary and the run directory."""
    import yaml

    from harness.run.config import config_to_dict
    from harness.run.trainer import fit

    cfg = resolve_config(args)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    try:
        summary = fit(cfg)
    finally:
        _shutdown_ray()
    keys = ["arch", "dataset", "strategy", "stop_reason", "epochs_run", "best_epoch", "val_acc", "test_acc",
            "test_loss", "time_to_target_s", "total_s", "train_img_per_s", "world_size", "device"]
    print("summary: " + "  ".join(f"{k}={_fmt(summary.get(k))}" for k in keys))
    print(summary["run_dir"])
    return 0


def _shutdown_ray() -> None:
    """Stop the local Ray instance, if any, so forwarded worker logs are flushed before our last lines."""
    import sys

    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
