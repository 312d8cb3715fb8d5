"""``harness sweep``: a matrix of runs as one Ray Tune experiment with ASHA early stopping.

The design follows Ray's guidance for Train V2 (Ray >= 2.43): Tune runs a *function trainable*
(:func:`run_trial`). With one worker per trial it trains in the trial's own process, reporting each
epoch with ``ray.tune.report``; with more it builds and fits a ``TorchTrainer`` whose workers'
reports reach the trial through ``TuneReportCallback`` (both are :func:`harness.run.trainer.fit`).
``ASHAScheduler`` on ``val_acc`` (max) stops hopeless trials at its rungs; the test split is only
touched by :func:`fit` at the end of a trial that was not stopped.

What makes it safe to leave running:

- Resources are sized to the cluster before anything starts: a trial that cannot fit is an error,
  not a hang. In-process trials reserve ``cpus_per_worker`` CPUs (and GPUs); a ``TorchTrainer``
  trial reserves no CPU itself and its workers' share caps how many trials run at once.
- A trial that raises, or diverges, reports its error and ends; the sweep goes on.
- The experiment lives at ``<storage>/<name>`` and is saved as it goes. After Ctrl-C or
  ``kill -9`` of the driver, ``--resume`` restores it with ``Tuner.restore``: finished trials are
  kept, unfinished ones run again (a trial whose summary had already been written replays it
  instead of training again).
- At the end (and after an interruption) the leaderboard CSVs and ``docs/leaderboard.md`` are
  merged from whatever finished (:mod:`harness.report.leaderboard`).

Seeds and folds are replicate trials of one configuration (``--seeds S`` x ``--folds K``); the
leaderboard aggregates them into one row with mean and standard deviation, and with folds the
mean validation accuracy over the folds is the row's selection metric.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.run.config import RunConfig, apply_overrides, config_to_dict
from harness.errors import ConfigError, HarnessError
from harness.sweep.matrix import Matrix, load_matrix, parse_matrix

METRIC, MODE, TIME_ATTR = "val_acc", "max", "epoch"
SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"
OUTCOME_FILE = "outcome.json"
WANDB_PROJECT = "cnn-harness"
# Tune fills these into every result; a replayed summary must not carry the old ones.
_TUNE_KEYS = {"training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "date", "pid", "hostname",
              "node_ip", "config", "time_since_restore", "iterations_since_restore", "trial_id", "experiment_tag",
              "done", "checkpoint_dir_name", "should_checkpoint", "timesteps_total", "episodes_total",
              "timesteps_since_restore"}


@dataclass
class SweepSettings:
    """Everything that defines a sweep; saved as ``sweep.json`` so that ``--resume`` needs only the name."""

    matrix: str = "quick"
    name: str = ""
    search: str | None = None  # None: the matrix's
    num_samples: int | None = None  # None: the matrix's
    max_epochs: int | None = None  # None: the matrix's epochs
    grace_period: int | None = None
    reduction_factor: float | None = None
    workers_per_trial: int = 1
    cpus_per_worker: int | None = None  # None: 1 on CPU-only machines, an equal share per GPU otherwise
    gpus_per_worker: float | None = None  # None: 1 where there are GPUs, else 0
    max_concurrent: int | None = None
    seeds: int = 1
    folds: int = 0
    target_acc: float | None = None
    wandb: str = "auto"  # auto | online | offline | off
    storage: str | None = None  # None: ./sweeps
    data_dir: str | None = None
    overrides: list[str] = field(default_factory=list)  # --set key=value, on top of every trial
    results_dir: str | None = None  # None: $HARNESS_RESULTS_DIR or ./results
    docs_dir: str | None = None  # None: $HARNESS_DOCS_DIR or ./docs; "" skips the docs page
    num_cpus: int | None = None  # CPUs of a local Ray cluster (None: this machine's)
    verbose: bool = False
    # Filled in by the sweep:
    matrix_text: str = ""
    matrix_path: str = ""
    created: str = ""


# ---------------------------------------------------------------------------------------------
# Trials


def _cells(m: Matrix, s: SweepSettings) -> list[dict[str, Any]]:
    """The trials of a grid or random sweep: each configuration x seeds x folds."""
    configs = m.configurations(s.search or m.search, s.num_samples)
    cells = []
    for ci, c in enumerate(configs):
        for seed in range(s.seeds):
            for fold in range(max(1, s.folds)):
                cells.append({"index": len(cells), "config_index": ci, "axes": c["axes"], "overrides": c["overrides"],
                              "seed": seed, "fold": fold if s.folds else None})
    return cells


_MATRIX_CACHE: dict[str, Matrix] = {}


def _matrix_of(s: SweepSettings) -> Matrix:
    if s.matrix_text not in _MATRIX_CACHE:
        _MATRIX_CACHE[s.matrix_text] = parse_matrix(s.matrix_text, s.matrix_path, Path(s.matrix_path).stem)
    return _MATRIX_CACHE[s.matrix_text]


def trial_overrides(config: dict, s: SweepSettings) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(dotted overrides, info)`` for one trial's Tune config; None when the matrix excludes it (Optuna)."""
    if "cell" in config:
        cell = config["cell"]
        overrides, seed, fold, axes = dict(cell["overrides"]), cell["seed"], cell["fold"], cell["axes"]
    else:  # Optuna suggests axis values; the matrix turns them into overrides
        m = _matrix_of(s)
        axes = {a.name: config[a.name] for a in m.axes}
        resolved = m.resolve(axes)
        if resolved is None:
            return None
        overrides, seed, fold = resolved, 0, None
    d = dict(overrides)
    for o in s.overrides:
        k, v = o.split("=", 1)
        import yaml

        d[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    if s.max_epochs:
        # --max-epochs caps an epochs axis, and otherwise sets the epochs of every trial.
        m = _matrix_of(s)
        has_axis = any(a.key == "train.epochs" or any("train.epochs" in v for v in a.values) for a in m.axes)
        epochs = int(d.get("train.epochs", RunConfig().train.epochs))
        d["train.epochs"] = min(epochs, s.max_epochs) if has_axis else s.max_epochs
    d["train.seed"] = seed
    if s.folds:
        d["data.folds"], d["data.fold"] = s.folds, fold
    if s.target_acc is not None:
        d["train.target_acc"] = s.target_acc
    if s.data_dir:
        d["data.data_dir"] = s.data_dir
    d["dist.workers"] = s.workers_per_trial if s.workers_per_trial > 1 else 0
    d["dist.cpus_per_worker"] = s.cpus_per_worker
    d["dist.use_gpu"] = bool(s.gpus_per_worker)
    d["train.progress"] = False
    d["name"] = s.name
    return d, {"axes": axes, "seed": seed, "fold": fold}


def trial_config(config: dict, s: SweepSettings) -> tuple[RunConfig, dict[str, Any]] | None:
    """The resolved :class:`RunConfig` of one trial, and its info; None when excluded."""
    r = trial_overrides(config, s)
    if r is None:
        return None
    d, info = r
    return apply_overrides(RunConfig(), d), info


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def run_trial(config: dict, settings: dict) -> None:
    """The Tune function trainable: one configuration, one seed, one fold.

    Reports every epoch's metrics (``epoch``, ``val_acc``, ...) and then the run's summary. An
    exception or a divergence is reported (``status``, ``error``) and ends the trial, not the sweep.
    """
    import torch
    from ray import tune

    from harness.report.leaderboard import read_trial
    from harness.run.config import config_id
    from harness.provenance import provenance

    s = SweepSettings(**settings)
    trial_dir = Path(tune.get_context().get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)

    def fail(e: BaseException) -> None:
        (trial_dir / "traceback.txt").write_text("".join(traceback.format_exception(e)))
        tune.report({"status": "failed", "stop_reason": "error", "error": _one_line(e), METRIC: None})

    try:
        resolved = trial_config(config, s)
    except HarnessError as e:
        fail(e)
        return
    if resolved is None:  # Optuna suggested a combination the matrix excludes
        tune.report({"status": "excluded", METRIC: None})
        return
    cfg, info = resolved
    cid = config_id(cfg)

    prev = read_trial(trial_dir) if (trial_dir / TRIAL_FILE).is_file() else None
    if prev is not None and prev.summary is not None:
        # A resumed sweep restarts trials it had not yet saved as finished; this one had. Replay its
        # summary (no `epoch` key, so ASHA ignores it) instead of training it again.
        tune.report({k: v for k, v in prev.summary.items() if k not in _TUNE_KEYS} | {"replayed": True})
        return

    cpus = s.cpus_per_worker or 1
    prov = provenance("cuda" if s.gpus_per_worker else "cpu")
    prov["device"] = "cuda" if s.gpus_per_worker else "cpu"
    (trial_dir / TRIAL_FILE).write_text(json.dumps({
        "sweep": s.name, "config": config_to_dict(cfg), "config_id": cid, **info, "provenance": prov,
        "started": prov["date"],
    }, indent=2, default=str))

    tags = {"config_id": cid, "seed": info["seed"]}
    if info["fold"] is not None:
        tags["fold"] = info["fold"]

    def report(metrics: dict) -> None:
        m = {k: v for k, v in metrics.items() if k != "done"}
        if "date" in m:
            m["run_date"] = m.pop("date")  # Tune overwrites `date` with its own clock format
        m.setdefault(METRIC, None)
        tune.report({**m, **tags})

    from harness.run.trainer import fit

    in_process = s.workers_per_trial <= 1
    if in_process:
        torch.set_num_threads(cpus)  # Ray pins the trial to its CPU share; more threads only thrash
    try:
        fit(cfg, trial_dir / "run", report=report if in_process else None, tune_report=not in_process)
    except Exception as e:  # noqa: BLE001 - any failure is recorded with the trial, and the sweep goes on
        fail(e)


# ---------------------------------------------------------------------------------------------
# Driver-side callbacks: outcomes, progress table, W&B tags


def _trial_label(config: dict) -> str:
    axes = config.get("cell", {}).get("axes") if "cell" in config else config
    parts = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (axes or {}).values()]
    cell = config.get("cell") or {}
    if cell.get("seed"):
        parts.append(f"seed {cell['seed']}")
    if cell.get("fold") is not None:
        parts.append(f"fold {cell['fold']}")
    return " / ".join(parts)


def _outcome(trial: Any) -> str:
    r = trial.last_result or {}
    if trial.status == "ERROR":
        return "error"
    if r.get("status") == "failed":
        return "error"
    if r.get("status") == "excluded":
        return "excluded"
    if "stop_reason" in r:
        return "completed"
    return "stopped_by_scheduler"


def _make_callbacks(s: SweepSettings, total: int | None) -> list:
    from ray.tune import Callback

    class Progress(Callback):
        """Writes each trial's outcome next to it and prints the sweep's progress table."""

        def __init__(self) -> None:
            self.setup()

        def setup(self, **info) -> None:  # also after a resume, which unpickles this callback
            self.t0 = time.monotonic()
            self.last_print = 0.0
            self.events: list[str] = []
            self.trials: list = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.trials = trials

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.trials = trials
            out = _outcome(trial)
            _write_outcome(trial, out)
            r = trial.last_result or {}
            what = {"completed": f"finished: test_acc {_fmt(r.get('test_acc'))}",
                    "stopped_by_scheduler": f"stopped early by ASHA at epoch {r.get(TIME_ATTR, '?')}",
                    "error": f"FAILED: {r.get('error', '')}", "excluded": "excluded by the matrix"}[out]
            self.events.append(f"  {_trial_index(trial)} {_trial_label(trial.config)}: {what}")
            self.print_table(trials, force=True, ended=trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.trials = trials
            _write_outcome(trial, "error")
            self.events.append(f"  {_trial_index(trial)} {_trial_label(trial.config)}: FAILED (see error.txt)")
            self.print_table(trials, force=True, ended=trial)

        def on_step_end(self, iteration, trials, **info):
            self.trials = trials
            self.print_table(trials)

        def print_table(self, trials, force: bool = False, ended: Any = None) -> None:
            now = time.monotonic()
            if not force and now - self.last_print < 30:
                return
            self.last_print = now
            print(progress_table(s.name, trials, now - self.t0, total, self.events, ended), flush=True)
            self.events = []

    callbacks: list = [Progress()]
    mode = wandb_mode(s.wandb)
    if mode is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

        class LoggingActor(_WandbLoggingActor):
            def run(self):
                super().run()
                # finish() returns before wandb-core has written the run; the callback kills this actor
                # as soon as run() returns, which lost the last trial's offline data. Wait for W&B.
                self._wandb.teardown()

        class Wandb(WandbLoggerCallback):
            """One W&B run per trial: group = sweep, tags = arch/strategy/dataset, config = the trial's."""

            AUTO_CONFIG_KEYS = [*WandbLoggerCallback.AUTO_CONFIG_KEYS, "stop_reason", "status", "error", "arch",
                                "dataset", "strategy", "device", "hardware", "torch", "ray", "git_sha",
                                "config_id", "run_dir", "loader", "precision", "optimizer", "scheduler",
                                "augment", "run_date", "config_hash", "pretrain_dataset"]

            _logger_actor_cls = LoggingActor

            def log_trial_start(self, trial):
                cfg = {"sweep": s.name, "trial": _trial_label(trial.config)}
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
                    pass
                self.kwargs["config"] = cfg
                self.kwargs["tags"] = tags
                super().log_trial_start(trial)

            def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
                # Ray's callback hands WANDB_API_KEY to its actor through a runtime_env, which Ray's
                # runtime-env agent writes to its log. The actor inherits the driver's environment on a
                # local cluster anyway, so keep the key out of the runtime_env.
                key = os.environ.pop("WANDB_API_KEY", None)
                try:
                    super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
                finally:
                    if key is not None:
                        os.environ["WANDB_API_KEY"] = key

        callbacks.append(Wandb(project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, group=s.name,
                               excludes=["config"], upload_timeout=120))
    return callbacks


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def _trial_index(trial: Any) -> str:
    cell = trial.config.get("cell") if isinstance(trial.config, dict) else None
    return f"#{cell['index']:03d}" if cell else trial.trial_id


def _write_outcome(trial: Any, outcome: str) -> None:
    path = trial.local_path
    if path and Path(path).is_dir():
        (Path(path) / OUTCOME_FILE).write_text(json.dumps({"outcome": outcome, "status": trial.status}))


def progress_table(name: str, trials: list, elapsed: float, total: int | None, events: list[str],
                   ended: Any = None) -> str:
    """The terminal table: counts of running, pending, finished, stopped-early and failed trials, and the best.

    ``ended`` is a trial Tune is ending right now (its status still says RUNNING).
    """
    counts = {"running": 0, "pending": 0, "finished": 0, "stopped early": 0, "failed": 0}
    best = None
    running = []
    for t in trials:
        r = t.last_result or {}
        if t.status == "RUNNING" and t is not ended:
            counts["running"] += 1
            running.append(t)
        elif t.status in ("PENDING", "PAUSED"):
            counts["pending"] += 1
        elif t.status in ("TERMINATED", "ERROR") or t is ended:
            out = "error" if t is ended and t.status != "TERMINATED" and not r else _outcome(t)
            key = {"completed": "finished", "stopped_by_scheduler": "stopped early", "error": "failed"}.get(out)
            if key:
                counts[key] += 1
        v = r.get(METRIC)
        if isinstance(v, (int, float)) and (best is None or v > best[0]):
            best = (v, t)
    if total:
        counts["pending"] = max(counts["pending"], total - sum(counts.values()) + counts["pending"])
    mins, secs = divmod(int(elapsed), 60)
    head = f"[sweep {name} {mins:02d}:{secs:02d}] " + " | ".join(f"{v} {k}" for k, v in counts.items())
    lines = [head, *events]
    if best:
        v, t = best
        r = t.last_result or {}
        lines.append(f"  best so far: val_acc {v:.4f}  {_trial_index(t)} {_trial_label(t.config)}"
                     + (f"  test_acc {_fmt(r.get('test_acc'))}" if r.get("test_acc") is not None else ""))
    for t in running:
        r = t.last_result or {}
        ep = r.get(TIME_ATTR)
        lines.append(f"  running {_trial_index(t)} {_trial_label(t.config)}: "
                     + (f"epoch {ep} val_acc {_fmt(r.get(METRIC))}" if ep else "starting"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# W&B


def wandb_mode(choice: str) -> str | None:
    """``auto`` -> ``online`` with ``WANDB_API_KEY`` set, else ``offline``; ``off`` -> None."""
    if choice not in ("auto", "online", "offline", "off"):
        raise ConfigError(f"--wandb must be auto, online, offline or off, got '{choice}'")
    if choice == "off":
        return None
    if choice == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return choice


def _setup_wandb_env(mode: str | None) -> None:
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


# ---------------------------------------------------------------------------------------------
# The driver


def _default_storage() -> Path:
    return Path(os.environ.get("HARNESS_SWEEPS_DIR", "sweeps")).expanduser().resolve()


def _has_experiment(exp_dir: Path) -> bool:
    return exp_dir.is_dir() and any(exp_dir.glob("experiment_state-*.json"))


def _resources(s: SweepSettings, cluster: dict[str, float], local: bool) -> tuple[dict, int | None]:
    """Per-trial resources and the concurrency cap, sized so that trials fit the cluster.

    Raises:
        HarnessError: a trial needs more CPUs or GPUs than the (local) cluster has.
    """
    total_cpu = int(cluster.get("CPU", 0))
    total_gpu = int(cluster.get("GPU", 0))
    if s.gpus_per_worker is None:
        s.gpus_per_worker = 1 if total_gpu else 0
    if s.gpus_per_worker and not total_gpu and local:
        raise HarnessError(f"--gpus-per-worker {s.gpus_per_worker}: this machine has no GPU")
    if s.cpus_per_worker is None:
        if s.gpus_per_worker:
            s.cpus_per_worker = max(1, total_cpu // max(1, int(total_gpu / s.gpus_per_worker)))
        else:
            s.cpus_per_worker = 1  # small CNNs on CPU: more trials in parallel beats more threads per trial
    n, c, g = s.workers_per_trial, s.cpus_per_worker, s.gpus_per_worker
    need_cpu, need_gpu = n * c, n * g
    if local and need_cpu > total_cpu:
        raise HarnessError(f"a trial needs {n} worker(s) x {c} CPU(s) = {need_cpu} CPUs but this machine offers "
                           f"{total_cpu}; lower --workers-per-trial or --cpus-per-worker")
    if local and need_gpu > total_gpu:
        raise HarnessError(f"a trial needs {need_gpu:g} GPUs but this machine has {total_gpu}")
    cap = s.max_concurrent
    if n <= 1:
        res = {"cpu": c, "gpu": g} if g else {"cpu": c}
    else:
        # The trial only drives a TorchTrainer; its workers request their own resources. The trial
        # reserves no CPU, so the cap must keep the workers of all running trials within the cluster.
        res = {"cpu": 0, "memory": 2**20}
        fit_n = max(1, total_cpu // need_cpu) if total_cpu else 1
        if need_gpu:
            fit_n = min(fit_n, max(1, int(total_gpu // need_gpu)))
        cap = min(cap, fit_n) if cap else fit_n
    return res, cap


def _local_cpus(s: SweepSettings) -> int:
    if s.num_cpus:
        return s.num_cpus
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _init_ray(s: SweepSettings) -> bool:
    """Connect to ``$RAY_ADDRESS`` (a cluster) or start a private local Ray; True when local."""
    import ray

    if ray.is_initialized():
        return not os.environ.get("RAY_ADDRESS")
    env_vars = {k: os.environ[k] for k in ("WANDB_MODE", "WANDB_SILENT", "WANDB_CONSOLE", "HARNESS_DATA_DIR",
                                           "HARNESS_CACHE_DIR") if k in os.environ}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=s.verbose, runtime_env={"env_vars": env_vars})
        return False
    tmp = os.environ.get("RAY_TMPDIR")
    kwargs: dict[str, Any] = {"_temp_dir": tmp} if tmp else {}
    cpus = _local_cpus(s)
    # address="local" never attaches to a stale cluster file. The dashboard serves Ray's State API,
    # which Ray Train's placement-group cleaner needs to free the workers of a TorchTrainer trial that
    # Tune ended; without it the next trial waits for CPUs forever. It listens on 127.0.0.1 only.
    ddp = s.workers_per_trial > 1
    ray.init(address="local", num_cpus=cpus, include_dashboard=ddp, dashboard_host="127.0.0.1",
             log_to_driver=s.verbose, configure_logging=True, logging_level="ERROR" if not s.verbose else "INFO",
             **kwargs)
    return True


def _prepare_data(configs: list[RunConfig]) -> None:
    """Load each dataset a trial needs once, before the trials: fails fast with one line when data is
    missing, downloads where allowed, and fills the decode cache so parallel trials do not decode twice."""
    from harness.run.data import data_options
    from loaders import load_splits

    seen = set()
    for cfg in configs:
        d = cfg.data
        names = [d.dataset] + ([cfg.strategy.pretrain_dataset] if cfg.strategy.pretrain_dataset else [])
        for ds in names:
            key = (ds, d.data_dir, d.img_size, d.grayscale, d.subset, d.download, d.synthetic_size, d.num_classes)
            if key in seen:
                continue
            seen.add(key)
            t = time.monotonic()
            load_splits(data_options(cfg, dataset=ds, seed=0))
            print(f"data: {ds} ready ({time.monotonic() - t:.1f} s)", flush=True)


def _check_trials(m: Matrix, s: SweepSettings, cells: list[dict] | None) -> list[RunConfig]:
    """Resolve every trial and check it as `harness run` would, before Ray starts."""
    from harness.run.trainer import check_config

    configs = []
    if cells is None:  # Optuna: check the base config and each grid value on top of it
        probe = [{a.name: a.labels[0] if a.labels else a.low for a in m.axes}]
        for a in m.axes:
            for lab in a.labels[1:]:
                probe.append({**probe[0], a.name: lab})
        items = probe
    else:
        items = [{"cell": c} for c in cells]
    for item in items:
        try:
            r = trial_config(item, s)
            if r is None:
                continue
            cfg, info = r
            check_config(cfg)
        except HarnessError as e:
            axes = item["cell"]["axes"] if "cell" in item else item
            label = ", ".join(f"{k}={v}" for k, v in axes.items())
            raise HarnessError(f"{s.matrix_path}: trial {label}: {e}") from None
        configs.append(cfg)
    return configs


def _new_name(m: Matrix, storage: Path) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{m.name}-{stamp}"
    n = 1
    while (storage / name).exists():
        n += 1
        name = f"{m.name}-{stamp}-{n}"
    return name


def run_sweep(s: SweepSettings, resume: bool = False) -> int:
    """Run (or resume) a sweep, then merge the leaderboards and regenerate the docs page.

    Returns:
        0 when every trial ended, 130 when the sweep was interrupted (``--resume`` finishes it).

    Raises:
        HarnessError: a bad matrix or option, a sweep name that exists (without ``--resume``) or does
            not (with it), or trials that cannot fit this machine.
    """
    storage = Path(s.storage).expanduser().resolve() if s.storage else _default_storage()
    if s.name and not re.fullmatch(r"[A-Za-z0-9_.=+-]+", s.name):
        raise HarnessError(f"--name '{s.name}': use letters, digits and _ . = + - only")
    if resume:
        if not s.name:
            raise HarnessError("--resume needs --name NAME (the sweep to resume)")
        exp_dir = storage / s.name
        if not _has_experiment(exp_dir) or not (exp_dir / SWEEP_FILE).is_file():
            raise HarnessError(f"--resume: no sweep '{s.name}' under {storage} (start it without --resume)")
        saved = json.loads((exp_dir / SWEEP_FILE).read_text())
        # The saved definition wins; only where results and docs go may change on resume.
        keep = {"results_dir": s.results_dir, "docs_dir": s.docs_dir, "verbose": s.verbose, "num_cpus": s.num_cpus}
        s = SweepSettings(**{**saved, **{k: v for k, v in keep.items() if v is not None}})
        m = parse_matrix(s.matrix_text, s.matrix_path, Path(s.matrix_path).stem)
    else:
        m = load_matrix(s.matrix)
        s.matrix_path = str(m.path)
        s.matrix_text = Path(m.path).read_text()
        if s.name:
            if (storage / s.name).exists():
                raise HarnessError(f"sweep '{s.name}' already exists under {storage}: add --resume to finish it, "
                                   "or pick another --name")
        else:
            s.name = _new_name(m, storage)
        s.storage = str(storage)
        s.created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    _validate_settings(s, m)
    # Trials run in their own directories: every path they read must be absolute.
    if s.data_dir:
        s.data_dir = str(Path(s.data_dir).expanduser().resolve())
    for var in ("HARNESS_DATA_DIR", "HARNESS_CACHE_DIR"):
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())
    search = s.search or m.search
    for o in s.overrides:
        if "=" not in o:
            raise HarnessError(f"--set '{o}' must look like section.key=value")
    cells = _cells(m, s) if search != "optuna" else None
    configs = _check_trials(m, s, cells)
    exp_dir = storage / s.name

    if not os.environ.get("RAY_ADDRESS"):  # a local cluster: check that trials fit before starting anything
        import torch

        _resources(dataclasses.replace(s), {"CPU": _local_cpus(s), "GPU": torch.cuda.device_count()}, True)
    mode = wandb_mode(s.wandb)
    _setup_wandb_env(mode)
    if s.data_dir:
        os.environ["HARNESS_DATA_DIR"] = s.data_dir
    if not resume:
        _prepare_data(configs)

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    # The legacy reporter honours verbose=0; our progress table replaces Tune's.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    local = _init_ray(s)
    try:
        res, cap = _resources(s, ray.cluster_resources(), local)
        if not resume:
            exp_dir.mkdir(parents=True, exist_ok=True)
            (exp_dir / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(s), indent=2))
        trainable = tune.with_resources(tune.with_parameters(run_trial, settings=dataclasses.asdict(s)), res)
        max_t = s.max_epochs or m.max_epochs()
        grace = s.grace_period or m.grace_period
        rf = s.reduction_factor or m.reduction_factor
        n_trials = len(cells) if cells is not None else (s.num_samples or m.num_samples)
        print(f"sweep {s.name}: {n_trials} trials of matrix {m.name} ({search}), ASHA on {METRIC} "
              f"(grace {grace}, reduction {rf:g}, {max_t} epochs), {s.workers_per_trial} worker(s) x "
              f"{s.cpus_per_worker} CPU{f' x {s.gpus_per_worker:g} GPU' if s.gpus_per_worker else ''} per trial"
              f"{f', at most {cap} at once' if cap else ''}; W&B {mode or 'off'}; {exp_dir}", flush=True)
        if resume:
            # Tune restores the run config it saved, our callbacks included.
            tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=_param_space(m, cells),
                               tune_config=tune.TuneConfig(
                                   metric=METRIC, mode=MODE, scheduler=_scheduler(ASHAScheduler, max_t, grace, rf),
                                   search_alg=_searcher(search), num_samples=1 if cells is not None else n_trials,
                                   # A reused actor reports the previous trial's directory, which the
                                   # replay-on-resume logic reads: one actor per trial.
                                   max_concurrent_trials=cap, trial_name_creator=_trial_name, reuse_actors=False,
                                   trial_dirname_creator=_trial_name),
                               run_config=tune.RunConfig(name=s.name, storage_path=str(storage), verbose=0,
                                                         callbacks=_make_callbacks(s, n_trials),
                                                         log_to_file=True,
                                                         failure_config=tune.FailureConfig(max_failures=0)))
        t0 = time.monotonic()
        try:
            tuner.fit()
        except Exception as e:  # noqa: BLE001 - e.g. the local Ray node was killed; keep what finished
            print(f"sweep {s.name}: Tune stopped: {_one_line(e)}", file=sys.stderr, flush=True)
        elapsed = time.monotonic() - t0
    finally:
        ray.shutdown()
    return _finish(s, exp_dir, elapsed, mode, n_trials)


def _scheduler(cls: Any, max_t: int, grace: int, rf: float) -> Any:
    # Rungs must lie before the last epoch: a cut at the last epoch saves nothing and would lose the
    # test evaluation of a run that trained to the end. stop_last_trials=False: Tune never stops a
    # trial at max_t either; the trial ends itself after its summary.
    if grace >= max_t:  # no rung before the last epoch: nothing to stop early
        from ray.tune.schedulers import FIFOScheduler

        print(f"ASHA: --grace-period {grace} leaves no rung before epoch {max_t}; no trial will be stopped early",
              flush=True)
        return FIFOScheduler()
    return cls(time_attr=TIME_ATTR, max_t=max_t - 1, grace_period=grace, reduction_factor=rf,
               stop_last_trials=False)


def _searcher(search: str) -> Any:
    if search != "optuna":
        return None
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=0)


def _param_space(m: Matrix, cells: list[dict] | None) -> dict:
    from ray import tune

    if cells is None:
        return m.tune_space()
    return {"cell": tune.grid_search(cells)}


def _trial_name(trial: Any) -> str:
    cfg = trial.config if isinstance(trial.config, dict) else {}
    label = _trial_label(cfg) if cfg else ""
    idx = f"{cfg['cell']['index']:03d}_" if "cell" in cfg else ""
    label = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label)[:60].strip("_")
    return f"{idx}{label}_{trial.trial_id}" if label else f"{idx}{trial.trial_id}"


def _validate_settings(s: SweepSettings, m: Matrix) -> None:
    search = s.search or m.search
    if search not in ("grid", "random", "optuna"):
        raise HarnessError(f"--search must be grid, random or optuna, got '{search}'")
    if s.seeds < 1:
        raise HarnessError(f"--seeds must be >= 1, got {s.seeds}")
    if s.folds == 1 or s.folds < 0:
        raise HarnessError(f"--folds must be 0 (no cross-validation) or >= 2, got {s.folds}")
    if search == "optuna" and (s.seeds > 1 or s.folds):
        raise HarnessError("--search optuna tunes one run per suggestion; --seeds/--folds need --search grid or "
                           "random (each configuration then runs every seed and fold)")
    for k in ("num_samples", "max_epochs", "grace_period", "max_concurrent", "workers_per_trial"):
        v = getattr(s, k)
        if v is not None and v < 1:
            raise HarnessError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    if s.reduction_factor is not None and s.reduction_factor <= 1:
        raise HarnessError(f"--reduction-factor must be > 1, got {s.reduction_factor}")
    if s.cpus_per_worker is not None and s.cpus_per_worker < 1:
        raise HarnessError(f"--cpus-per-worker must be >= 1, got {s.cpus_per_worker}")
    if s.gpus_per_worker is not None and s.gpus_per_worker < 0:
        raise HarnessError(f"--gpus-per-worker must be >= 0, got {s.gpus_per_worker}")
    if s.target_acc is not None and not 0 < s.target_acc <= 1:
        raise HarnessError(f"--target-acc must be in (0, 1], got {s.target_acc}")
    wandb_mode(s.wandb)


def _finish(s: SweepSettings, exp_dir: Path, elapsed: float, mode: str | None, n_trials: int) -> int:
    """Merge the leaderboards, regenerate the docs page and print what happened."""
    from harness.report.leaderboard import collect, render_docs, write_results

    try:
        records = collect([exp_dir])
    except HarnessError:
        records = []
    results = Path(s.results_dir) if s.results_dir else None
    n_rows, n_tp = write_results(records, results)
    reasons: dict[str, int] = {}
    for r in records:
        reasons[r.stop_reason] = reasons.get(r.stop_reason, 0) + 1
    reasons.pop("incomplete", 0)
    excluded = sum(1 for p in exp_dir.glob(f"*/{OUTCOME_FILE}") if '"excluded"' in p.read_text())
    incomplete = n_trials - sum(reasons.values()) - excluded  # started but unfinished, or never started
    from harness.results_csv import results_dir

    rdir = results or results_dir()
    print(f"sweep {s.name}: {sum(reasons.values())} trials ended in {elapsed / 60:.1f} min ("
          + ", ".join(f"{v} {k}" for k, v in sorted(reasons.items())) + f"); {n_rows} configurations merged "
          f"into {rdir / 'leaderboard.csv'}, {n_tp} rows into {rdir / 'throughput.csv'}", flush=True)
    if s.docs_dir != "" and n_rows:
        docs = Path(s.docs_dir) if s.docs_dir else None
        out = render_docs(rdir, docs)
        print(f"docs: {out} and its plots in {out.parent / 'img'}", flush=True)
    if mode == "offline":
        print(f"W&B runs are offline; upload them with: wandb sync {exp_dir}/*/wandb/offline-run-*", flush=True)
    if incomplete > 0:
        print(f"sweep {s.name} was interrupted with {incomplete} trial(s) unfinished; finish it with: "
              f"harness sweep --name {s.name} --resume" + (f" --storage {s.storage}" if s.storage else ""),
              file=sys.stderr, flush=True)
        return 130
    return 0


