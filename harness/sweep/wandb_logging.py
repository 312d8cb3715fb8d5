"""W&B for a sweep: the environment W&B runs in, and the Tune callback that logs one W&B run per trial.

Each trial is a W&B run in the project ``$WANDB_PROJECT`` (default ``cnn-harness``), grouped by
sweep, tagged ``arch:``/``strategy:``/``dataset:``, with the trial's config and the text fields of
its summary as the run's config and every numeric report as its metrics. ``--wandb offline``
writes the runs next to each trial (``wandb sync`` uploads them later) and keeps ``WANDB_API_KEY``
away from every process and log.

Importing this module imports Ray's W&B integration (and so Ray Tune); the driver imports it only
once the sweep starts. Tune saves its callbacks with the experiment and unpickles them on
``--resume``: the classes here are module-level, so they unpickle by reference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

from harness.errors import ConfigError, HarnessError
from harness.run.config import RunConfig, apply_overrides
from harness.run.summary import RunSummary
from harness.sweep.settings import SweepSettings
from harness.sweep.trials import trial_label, trial_overrides

WANDB_PROJECT = "cnn-harness"


def setup_wandb_env(mode: str | None) -> None:
    """Set this process's (and so the trials' and the logging actors') W&B environment for ``mode``.

    Raises:
        ConfigError: ``online`` without an API key (``WANDB_API_KEY`` or ``wandb login``).
    """
    if mode is None:
        os.environ["WANDB_MODE"] = "disabled"
        return
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        netrc = Path.home() / ".netrc"
        if not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            raise ConfigError("--wandb online needs WANDB_API_KEY (or `wandb login`); use --wandb offline")
    if mode == "offline":
        os.environ.pop("WANDB_API_KEY", None)  # never needed offline, so never handed to a process or a log
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


class LoggingActor(_WandbLoggingActor):
    """Ray's W&B logging actor, which waits for W&B to have written the run before it returns."""

    def run(self) -> None:
        super().run()
        # finish() returns before wandb-core has written the run; the callback kills this actor
        # as soon as run() returns. Wait for W&B, so that a finished run() means closed files
        # (WandbCallback.on_experiment_end relies on that).
        self._wandb.teardown()


class WandbCallback(WandbLoggerCallback):
    """One W&B run per trial: group = sweep, tags = arch/strategy/dataset, config = the trial's."""

    # Results keys that go to the W&B run's config rather than its metrics: text, not measurements.
    AUTO_CONFIG_KEYS = [*WandbLoggerCallback.AUTO_CONFIG_KEYS, *RunSummary.text_keys(), "config_id"]

    _logger_actor_cls = LoggingActor

    def __init__(self, settings: SweepSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def log_trial_start(self, trial: Any) -> None:
        s = self.settings
        cfg: dict[str, Any] = {"sweep": s.name, "trial": trial_label(trial.config)}
        tags: list[str] = []
        try:
            r = trial_overrides(trial.config, s)
            if r is not None:
                d, info = r
                cfg.update({k: v for k, v in d.items() if k not in ("name",)})
                cfg.update(seed=info["seed"], fold=info["fold"])
                c = apply_overrides(RunConfig(), d)
                tags = [f"arch:{c.model.arch}", f"strategy:{c.strategy.name}", f"dataset:{c.data.dataset}"]
        except HarnessError:
            pass  # the trial reports its own error; its W&B run just goes untagged
        self.kwargs["config"] = cfg
        self.kwargs["tags"] = tags
        super().log_trial_start(trial)

    def _start_logging_actor(self, trial: Any, exclude_results: list, **wandb_init_kwargs: Any) -> None:
        # Ray's callback hands WANDB_API_KEY to its actor through a runtime_env, which Ray's
        # runtime-env agent writes to its log. The actor inherits the driver's environment on a
        # local cluster anyway, so keep the key out of the runtime_env.
        key = os.environ.pop("WANDB_API_KEY", None)
        try:
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
        finally:
            if key is not None:
                os.environ["WANDB_API_KEY"] = key

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Wait for every trial's W&B run (Ray's callback), then copy the finished runs to storage again.

        The actors write each run under the trial's staging folder in Ray's temp dir, and Tune copies
        that folder to storage for the last time *before* it calls this hook, where Ray's callback
        waits for the actors. A trial that ended just before the experiment did (typically one ASHA
        stopped at its first result) was copied while wandb-core still buffered its records: a 7-byte
        ``.wandb``, or none. That was the sweep test's one-in-seven flake.
        """
        # A trial that never ended (the sweep was interrupted, or stopped with it) never got its actor's END
        # message: Ray's callback would wait the whole upload_timeout for it, then kill it with its W&B run
        # unfinished (lost). Tell every actor still running to finish its run first.
        for trial in list(self._trial_queues):
            if trial in self._trial_logging_futures:
                self._signal_logging_actor_stop(trial)
        super().on_experiment_end(trials, **info)
        for trial in trials:
            _copy_wandb_to_storage(trial)


def _copy_wandb_to_storage(trial: Any) -> None:
    # pyarrow is heavy
    import pyarrow.fs

    if not (trial.storage and trial.storage.trial_dir_name):  # never started (pending at Ctrl-C)
        return
    src = os.path.join(trial.local_path, "wandb")
    if not os.path.isdir(src):
        return
    fs, dest = trial.storage.storage_filesystem, f"{trial.path}/wandb"
    if isinstance(fs, pyarrow.fs.LocalFileSystem) and os.path.realpath(src) == os.path.realpath(dest):
        return  # staging is storage: nothing to copy (and never copy a file onto itself)
    try:
        fs.create_dir(dest, recursive=True)
        pyarrow.fs.copy_files(src, dest, destination_filesystem=fs)
    except OSError as e:
        print(f"W&B: could not copy {src} to {dest}: {e}", file=sys.stderr, flush=True)


def wandb_callback(s: SweepSettings) -> WandbCallback:
    """The W&B callback of sweep ``s`` (call :func:`setup_wandb_env` first)."""
    return WandbCallback(s, project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, group=s.name,
                         excludes=["config"], upload_timeout=120)
