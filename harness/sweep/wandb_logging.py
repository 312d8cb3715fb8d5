"""W&B for a sweep: the environment W&B runs in, and the Tune callback that logs one W&B run per trial.

Each trial is a W&B run in the project ``$WANDB_PROJECT`` (default ``cnn-harness``), grouped by
sweep, tagged ``arch:``/``strategy:``/``dataset:``, with the trial's config and the text fields of
its summary as the run's config and every numeric report as its metrics. ``--wandb offline``
writes the runs next to each trial (``wandb sync`` uploads them later) and keeps ``WANDB_API_KEY``
away from every process and log. One logging actor (:class:`SweepLoggingActor`) writes every trial's
run, where Ray's callback starts two actors per trial.

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
from harness.sweep.trials import one_line, trial_label, trial_overrides

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


class SweepLoggingActor:
    """One Ray actor for every W&B run of a sweep (``wandb.init(reinit="create_new")`` per trial).

    Ray's callback starts a logging actor and a queue actor per trial: two fresh worker processes that
    each import W&B (~5 CPU-s, ~400 MB), and a blocking ``Queue.put`` in Tune's loop for every result.
    Here W&B is imported once, and the driver's calls are fire-and-forget: a single caller's calls to
    an actor run in the order they were made, so a trial's results arrive before its end.
    """

    def __init__(self, exclude: list[str], to_config: list[str]) -> None:
        import wandb  # heavy and optional: only this actor's process needs it

        os.environ["WANDB_START_METHOD"] = "thread"  # one process already: W&B's threads suffice
        self._wandb = wandb
        self._exclude, self._to_config = set(exclude), set(to_config)  # read by Ray's _handle_result
        self._runs: dict[str, Any] = {}

    def start(self, key: str, logdir: str, kwargs: dict[str, Any]) -> None:
        """Open the W&B run of trial ``key``, its files under ``logdir`` (the trial's staging folder)."""
        os.makedirs(logdir, exist_ok=True)
        # No symlinks in a trial's folder: Tune's sync to storage follows them, so every trial got a copy
        # of the run (``latest-run``) and of wandb-core's one log for the whole process (``debug-core.log``),
        # which grows with every trial the sweep has run: O(N) bytes a trial, O(N^2) a sweep.
        settings = self._wandb.Settings(symlink=False)
        run = self._wandb.init(**{**kwargs, "reinit": "create_new", "dir": logdir, "settings": settings})
        _unlink_core_log(run)
        run.config.update({"trial_log_path": logdir}, allow_val_change=True)
        self._runs[key] = run

    def log(self, key: str, result: dict[str, Any]) -> None:
        """Log one Tune result of trial ``key``: text keys to the run's config, numbers as metrics."""
        run = self._runs.get(key)
        if run is None:
            return
        log, config_update = _WandbLoggingActor._handle_result(self, result)  # Ray's split, reused
        run.config.update(config_update, allow_val_change=True)
        run.log(log, step=log.get("training_iteration"))
        _unlink_core_log(run)  # made after init returned: gone by the trial's first result, not waited for

    def end(self, key: str) -> None:
        """Finish the W&B run of trial ``key`` (its files are complete when this returns)."""
        run = self._runs.pop(key, None)
        if run is not None:
            run.finish()
            _unlink_core_log(run)

    def close(self) -> int:
        """Finish every run still open (trials that never ended: an interrupted sweep); how many."""
        keys = list(self._runs)
        for key in keys:
            self.end(key)
        self._wandb.teardown()  # wait for wandb-core to have written every run
        return len(keys)


def _unlink_core_log(run: Any) -> None:
    """Remove the link wandb-core puts in each run to its log for the whole process, where it is there yet.

    It is made whatever ``symlink`` says, as wandb-core starts the run: just after ``wandb.init`` returns,
    so the actor tries again at each result and at the end rather than wait for it (a wait here would
    hold every trial's logging behind one, in the one actor). The log stays in W&B's cache
    (~/.cache/wandb/logs), where it is written.
    """
    link = Path(run.settings.log_dir, "debug-core.log")
    if link.is_symlink():
        link.unlink(missing_ok=True)


class WandbCallback(WandbLoggerCallback):
    """One W&B run per trial: group = sweep, tags = arch/strategy/dataset, config = the trial's."""

    # Results keys that go to the W&B run's config rather than its metrics: text, not measurements.
    AUTO_CONFIG_KEYS = [*WandbLoggerCallback.AUTO_CONFIG_KEYS, *RunSummary.text_keys(), "config_id"]


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
        # ray is imported by this module already (Tune's W&B integration)
        import ray
        from ray.air.util.node import _force_on_current_node

        if getattr(self, "_sweep_actor", None) is None:
            # No runtime_env: Ray's callback would hand WANDB_API_KEY to the actor through one, which
            # Ray's runtime-env agent writes to its log; the actor inherits the driver's environment.
            cls = ray.remote(num_cpus=0, max_restarts=0, **_force_on_current_node())(SweepLoggingActor)
            self._sweep_actor = cls.remote(list(exclude_results), list(self.AUTO_CONFIG_KEYS))
        self._sweep_actor.start.remote(trial.trial_id, trial.local_path, wandb_init_kwargs)
        self._trial_logging_actors[trial] = self._sweep_actor

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        from ray.air.integrations.wandb import _clean_log

        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        self._sweep_actor.log.remote(trial.trial_id, _clean_log(result))  # not waited for: see SweepLoggingActor

    def _signal_logging_actor_stop(self, trial: Any) -> None:
        if self._trial_logging_actors.pop(trial, None) is not None:
            self._sweep_actor.end.remote(trial.trial_id)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self._signal_logging_actor_stop(trial)

    def _cleanup_logging_actors(self, timeout: int = 0, **_: Any) -> None:
        """Wait up to ``timeout`` s for every run to be finished, then end the actor (always: as Ray kills on timeout)."""
        actor = getattr(self, "_sweep_actor", None)
        if actor is None or not timeout:
            return
        import ray

        try:
            ray.get(actor.close.remote(), timeout=timeout)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
            print(f"W&B: the logging actor did not finish every run in {timeout} s: {one_line(e)}",
                  file=sys.stderr, flush=True)
        ray.kill(actor)
        self._sweep_actor = None
        self._trial_logging_actors = {}

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Finish every trial's W&B run (those of trials that never ended too), then copy the runs to storage.

        The runs are written under each trial's staging folder in Ray's temp dir, and Tune copies that
        folder to storage for the last time *before* it calls this hook: a trial that ended just before
        the experiment did was copied while wandb-core still buffered its records (a 7-byte ``.wandb``,
        or none). So the runs are copied again once the actor has finished them all.
        """
        self._cleanup_logging_actors(timeout=self._upload_timeout, kill_on_timeout=True)
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
        # Tune's syncs during the sweep follow symlinks, so one that ran while wandb-core's link to its log
        # for the whole process was still there copied that log (the actor removes the link at the next
        # result): a copy of up to the whole sweep's log. This runs after Tune's last sync, so none is left.
        for info in fs.get_file_info(pyarrow.fs.FileSelector(dest, recursive=True)):
            if info.base_name == "debug-core.log" and info.type == pyarrow.fs.FileType.File:
                fs.delete_file(info.path)
    except OSError as e:
        print(f"W&B: could not copy {src} to {dest}: {e}", file=sys.stderr, flush=True)


def wandb_callback(s: SweepSettings) -> WandbCallback:
    """The W&B callback of sweep ``s`` (call :func:`setup_wandb_env` first)."""
    # upload_timeout: how long the end of the sweep waits for W&B to finish every run (Ray's default: 1,800 s)
    return WandbCallback(s, project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, group=s.name,
                         excludes=["config"], upload_timeout=120)
