"""``harness sweep``: a matrix of runs as one Ray Tune experiment with ASHA early stopping.

:func:`run_sweep` resolves and checks every trial before Ray starts (:mod:`harness.sweep.trials`),
sizes them to the cluster (:mod:`harness.sweep.resources`), loads each dataset once, and runs
:func:`harness.sweep.trials.run_trial` under Tune. ``ASHAScheduler`` on ``val_acc`` (max) stops
hopeless trials at its rungs. The driver prints the progress table and records each trial's
outcome (:mod:`harness.sweep.progress`) and logs every trial to W&B
(:mod:`harness.sweep.wandb_logging`).

What makes it safe to leave running:

- Resources are sized to the cluster before anything starts: a trial that cannot fit is an error,
  not a hang.
- A trial that raises, or diverges, reports its error and ends; the sweep goes on.
- The experiment lives at ``<storage>/<name>`` and is saved as it goes. After Ctrl-C or
  ``kill -9`` of the driver, ``--resume`` restores it with ``Tuner.restore``: finished trials are
  kept, unfinished ones continue from their run's ``last.pt`` (a trial whose summary had already
  been written replays it instead of training again).
- At the end (and after an interruption) the leaderboard CSVs and ``docs/leaderboard.md`` are
  merged from whatever finished (:mod:`harness.report`), and a closing table ranks this sweep's
  full-budget runs (:mod:`harness.report.closing`).

With ``--rerun-top K`` the sweep has two phases (:mod:`harness.sweep.phases`): the ASHA search above,
then, once every search trial has ended, a second Tune experiment (``<sweep>/rerun``, no early
stopping) that reruns the best K configurations of each architecture with ``--seeds`` seeds. Ray
starts once for both. ``--resume`` finishes whichever phase was cut short: a sweep whose search had
finished goes straight to phase two and runs only its missing trials.

Ray is imported only once the checks have passed, so that a bad option fails at once.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import LEADERBOARD_CSV, OUTCOME_FILE, PRUNED_CSV, RERUN_DIR, SWEEP_FILE, THROUGHPUT_CSV
from harness.raycluster import init_ray
from harness.report.closing import closing_table
from harness.report.docs import render_docs
from harness.report.leaderboard import write_results
from harness.report.records import collect
from harness.results_csv import results_dir
from harness.run.config import RunConfig, epoch_count
from harness.run.data import data_options
from harness.run.resources import ClusterShape, cluster_shape, local_cpus, local_shape
from harness.sweep.asha import asha_params, asha_warning
from harness.sweep.interrupt import SweepInterrupt
from harness.sweep.matrix import GRID_KINDS, Matrix, load_matrix
from harness.sweep.phases import plan_rerun, read_state, selection_lines
from harness.sweep.resources import check_fits_locally, largest_step_gflops, needs_step_cost, trial_resources
from harness.sweep.settings import (
    METRIC,
    MODE,
    RERUN,
    SEARCH,
    SINGLE,
    TIME_ATTR,
    SweepSettings,
    resume_flags,
    setting_fields,
    validate_settings,
    wandb_mode,
)
from harness.sweep.trials import (
    grid_cells,
    matrix_of,
    one_line,
    run_trial,
    trial_cell,
    trial_cells,
    trial_config,
    trial_label,
)

_NAME = re.compile(r"[A-Za-z0-9_.=+-]+")
_TUNE_STATE_GLOB = "experiment_state-*.json"  # Tune's saved experiment, which Tuner.restore reads
# The driver's environment that trials on a cluster need too; a local cluster's workers inherit it.
# A Ray job's runtime_env must not set these (tests/test_cluster_configs.py checks cluster/).
_CLUSTER_ENV_VARS = ("WANDB_MODE", "WANDB_SILENT", "WANDB_CONSOLE", "HARNESS_DATA_DIR", "HARNESS_CACHE_DIR")


# An in-process trial runs in a reused Ray worker where one is free: a fresh one per trial cost ~3 s of
# `import torch` each (a null trial trains for 0.1 s). Trials find their folder by the name Tune gives the
# reused actor (harness.sweep.trials.trial_storage_dir). A DDP trial's actor (a TorchTrainer inside) is
# not reused: Tune refused to reset it and failed the next trial.
def _reuse_actors(s: SweepSettings) -> bool:
    return s.workers_per_trial <= 1


def run_sweep(s: SweepSettings, resume: bool = False, given: Collection[str] | None = None) -> int:
    """Run (or resume) a sweep, then merge the leaderboards and regenerate the docs page.

    Args:
        s: the sweep's settings.
        resume: finish the saved sweep ``s.name``.
        given: the settings given on the command line; with ``resume``, each must be the saved sweep's
            (None: those that differ from their default, where a caller cannot tell).

    Returns:
        0 when every trial ended, 130 when the sweep was interrupted (``--resume`` finishes it).

    Raises:
        HarnessError: a bad matrix or option, a sweep name that exists (without ``--resume``) or does
            not (with it), or trials that cannot fit this machine.
    """
    storage = Path(s.storage).expanduser().resolve() if s.storage else default_storage()
    if s.name and not _NAME.fullmatch(s.name):
        raise HarnessError(f"--name '{s.name}': use letters, digits and _ . = + - only")
    s, m = _resumed_settings(s, storage, given) if resume else _new_settings(s, storage)
    if resume and not _has_experiment(storage / s.name):
        # Stopped in its first seconds, before Tune saved the experiment: no trial ran, so the saved sweep
        # starts from the beginning (refusing would leave a folder that neither start nor --resume takes).
        print(f"sweep {s.name}: stopped before any trial started; starting it from the beginning", flush=True)
        resume = False
    validate_settings(s, m)
    if not os.environ.get("RAY_ADDRESS"):  # a trial bigger than this machine would wait for its resources forever
        check_fits_locally(s)
    _make_paths_absolute(s)
    cells = trial_cells(m, s) if (s.search or m.search) != "optuna" else None
    mode = wandb_mode(s.wandb)
    # imports ray (heavy): only a running sweep needs it
    from harness.sweep.wandb_logging import setup_wandb_env

    setup_wandb_env(mode)
    if s.data_dir:
        os.environ["HARNESS_DATA_DIR"] = s.data_dir
    # Per-worker CPUs and GPUs are settled from the cluster first, so trials are checked as they will
    # run: a GPU trial (fp16, say) from a CPU-only head is checked against the cluster's GPUs.
    shape = _cluster_shape(s)
    step = largest_step_gflops(_trial_configs(m, dataclasses.replace(s, gpus_per_worker=1), cells)) \
        if needs_step_cost(s, shape) else None
    resources = trial_resources(s, shape, step)
    configs = _check_trials(m, s, cells, sum(n.gpus for n in shape.gpu_nodes))
    asha = _asha(s, m, configs)
    if not resume:
        warning = asha_warning(*asha, max((c.sched.warmup_epochs for c in configs), default=0.0))
        if warning:
            print(warning, file=sys.stderr, flush=True)
        _prepare_data(configs)
    n_trials = len(cells) if cells is not None else (s.num_samples or m.num_samples)
    exp_dir = storage / s.name
    with SweepInterrupt(s.name) as stop:  # from Ray's start to the last line: no phase swallows a Ctrl-C
        elapsed, n_rerun = _run_tune(s, m, cells, n_trials, storage, mode, resume, asha, stop, resources)
        return _finish(s, exp_dir, elapsed, mode, n_trials + n_rerun, stop)


def _resumed_settings(s: SweepSettings, storage: Path,
                      given: Collection[str] | None = None) -> tuple[SweepSettings, Matrix]:
    """The settings saved by the sweep ``s.name``; only where results and docs go may change."""
    if not s.name:
        raise HarnessError("--resume needs --name NAME (the sweep to resume)")
    exp_dir = storage / s.name
    if not (exp_dir / SWEEP_FILE).is_file():
        raise HarnessError(f"--resume: no sweep '{s.name}' under {storage} (start it without --resume)")
    saved = _saved_settings(exp_dir / SWEEP_FILE)
    # The saved definition wins: the trials that ran and the ones still to run are one sweep. An option
    # given again that would change it is refused rather than ignored (a new --only, say, would silently
    # finish the old selection instead of running the new one).
    changed = _changed_on_resume(s, saved, given)
    if changed:
        raise HarnessError(f"--resume: sweep '{s.name}' was started with {changed}; only {resume_flags()} may change "
                           "(leave the option out, or start a sweep under another name)")
    keep = {f.key: getattr(s, f.key) for f in setting_fields() if f.resume}  # where results go, what is shown
    s = SweepSettings(**{**saved, **{k: v for k, v in keep.items() if v is not None}})
    return s, matrix_of(s)  # the matrix as saved, even if its file changed since


def _saved_settings(path: Path) -> dict[str, Any]:
    """The settings a sweep saved at its start; one line where the file is damaged or not a sweep's."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HarnessError(f"--resume: {path} cannot be read ({e}); start the sweep under another name") from None
    if not isinstance(saved, dict) or not saved.get("matrix_text"):
        raise HarnessError(f"--resume: {path} holds no matrix (damaged, or not written by harness sweep); "
                           "start the sweep under another name")
    return saved


def _changed_on_resume(s: SweepSettings, saved: dict[str, Any], given: Collection[str] | None = None) -> str:
    """The first option of ``s`` that was given (in ``given``; None: differs from its default) and differs
    from the saved sweep's, as "FLAG SAVED, not GIVEN"; "" when there is none."""
    default = SweepSettings()
    for f in setting_fields():
        if f.resume or not f.flag or f.key in ("name", "storage"):  # name and storage find the sweep
            continue
        now, was = getattr(s, f.key), saved.get(f.key)
        if f.key == "data_dir" and now and was:
            now, was = str(Path(now).expanduser().resolve()), str(Path(was).expanduser().resolve())
        # Given at its default value (--matrix quick) is still given: comparing with the default would miss it.
        was_given = f.key in given if given is not None else now != getattr(default, f.key)
        if was_given and now != was:
            return f"{f.flag} {_shown(was)}, not {_shown(now)}"
    return ""


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(value) if value else "(none)"
    return "(default)" if value is None else str(value)


def _new_settings(s: SweepSettings, storage: Path) -> tuple[SweepSettings, Matrix]:
    """``s`` with its matrix read and saved, its name (new under ``storage``) and its creation time."""
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
    return s, m


def _make_paths_absolute(s: SweepSettings) -> None:
    # Trials run in their own directories: every path they read must be absolute.
    if s.data_dir:
        s.data_dir = str(Path(s.data_dir).expanduser().resolve())
    for var in ("HARNESS_DATA_DIR", "HARNESS_CACHE_DIR"):
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())


def _run_tune(s: SweepSettings, m: Matrix, cells: list[dict] | None, n_trials: int, storage: Path,
              mode: str | None, resume: bool, asha: tuple[int, int, float], stop: SweepInterrupt,
              resources: tuple[dict, int | None]) -> tuple[float, int]:
    """Start Ray, run (or restore and finish) the search and, with ``--rerun-top``, the rerun; stop Ray.

    ``resources``: each trial's reservation and the cap on trials at once (:func:`trial_resources`).

    A Ctrl-C recorded in ``stop`` ends the running phase and skips the ones after it.

    Returns:
        The seconds Tune ran, and the number of phase two's trials (0 when there is none, or when the
        search did not finish).
    """
    # ray is heavy: imported only where Ray is used
    import ray
    from ray import tune

    # The legacy reporter honours verbose=0; our progress table replaces Tune's.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    _init_ray(s)
    try:
        res, cap = resources
        exp_dir = storage / s.name
        if not resume:
            exp_dir.mkdir(parents=True, exist_ok=True)
            (exp_dir / SWEEP_FILE).write_text(json.dumps(dataclasses.asdict(s), indent=2))
        trainable = tune.with_resources(tune.with_parameters(run_trial, settings=dataclasses.asdict(s)), res)
        elapsed = 0.0

        if not (resume and read_state(exp_dir).search_done) and not stop.interrupted:
            _print_start(s, m, n_trials, cap, mode, exp_dir, asha)
            if resume:
                # Tune restores the run config it saved, our callbacks included.
                tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                           resume_errored=False, restart_errored=True)
            else:
                tuner = _new_tuner(s, m, cells, n_trials, storage, trainable, cap, mode, asha)
            elapsed += _fit(s, tuner, stop)
        if not s.rerun_top or stop.interrupted:
            return elapsed, 0
        rerun = _plan_rerun(s, exp_dir, n_trials)
        if not rerun or stop.interrupted:  # the search was cut short (--resume finishes it), or nothing to rerun
            return elapsed, 0
        elapsed += _fit(s, _rerun_tuner(s, exp_dir, rerun, trainable, cap, mode), stop)
        return elapsed, len(rerun)
    finally:
        ray.shutdown()


def _fit(s: SweepSettings, tuner: Any, stop: SweepInterrupt) -> float:
    """Run one Tune experiment to its end (or to Ctrl-C); the seconds it ran."""
    t0 = time.monotonic()
    if stop.interrupted:  # a Ctrl-C while the Tuner was built: do not start the phase
        return 0.0
    try:
        with stop.fit():
            tuner.fit()
    except Exception as e:  # noqa: BLE001 - e.g. the local Ray node was killed; keep what finished
        print(f"sweep {s.name}: Tune stopped: {one_line(e)}", file=sys.stderr, flush=True)
    return time.monotonic() - t0


def _search_ended(exp_dir: Path) -> int:
    """How many search trials have ended (the driver writes each one's ``outcome.json`` as it ends)."""
    return sum(1 for _ in exp_dir.glob(f"*/{OUTCOME_FILE}"))


def _plan_rerun(s: SweepSettings, exp_dir: Path, n_trials: int) -> list[dict] | None:
    """Phase two's cells once every search trial has ended (saved in ``phases.json``); None before that."""
    if _search_ended(exp_dir) < n_trials:  # interrupted: --resume finishes the search first
        return None
    records = [r for r in collect([exp_dir]) if r.phase == SEARCH]
    picks, cells = plan_rerun(exp_dir, records, s.rerun_top or 1, s.seeds)
    print(f"sweep {s.name}: search done; phase two reruns {len(picks)} configuration(s) at full budget with "
          f"{s.seeds} seed(s) each ({len(cells)} trials), the best {s.rerun_top} per architecture by val_acc at "
          "the deepest rung the compared trials reached:", flush=True)
    print("\n".join(selection_lines(picks, s.seeds)), flush=True)
    return cells


def _rerun_tuner(s: SweepSettings, exp_dir: Path, cells: list[dict], trainable: Any, cap: int | None,
                 mode: str | None) -> Any:
    """Phase two's Tune experiment (``<sweep>/rerun``): restored where it was started, else new, never pruned."""
    # ray is heavy: imported only where Ray is used
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    rerun_dir = exp_dir / RERUN_DIR
    if _has_experiment(rerun_dir):
        return tune.Tuner.restore(str(rerun_dir), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=True)
    tune_config = tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=FIFOScheduler(), num_samples=1,
                                  max_concurrent_trials=cap, reuse_actors=_reuse_actors(s), trial_name_creator=_trial_name,
                                  trial_dirname_creator=_trial_name)
    run_config = tune.RunConfig(name=RERUN_DIR, storage_path=str(exp_dir), verbose=0,
                                callbacks=_make_callbacks(s, len(cells), mode, f"{s.name}/{RERUN_DIR}"),
                                log_to_file=True, failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, param_space={"cell": tune.grid_search(grid_cells(cells))}, tune_config=tune_config,
                      run_config=run_config)


def _init_ray(s: SweepSettings) -> None:
    # The dashboard serves Ray's State API, which Ray Train's placement-group cleaner needs to free
    # the workers of a TorchTrainer trial that Tune ended; without it the next trial waits for CPUs
    # forever. In-process trials do not need it.
    env_vars = {k: os.environ[k] for k in _CLUSTER_ENV_VARS if k in os.environ}
    init_ray(num_cpus=local_cpus(s.num_cpus), dashboard=s.workers_per_trial > 1, verbose=s.verbose, env_vars=env_vars)


def _asha(s: SweepSettings, m: Matrix, configs: list[RunConfig]) -> tuple[int, int, float]:
    """ASHA's ``max_t``, grace period and reduction factor: the options', else the matrix's, else the
    defaults of :mod:`harness.sweep.asha` (the trials' longest warm-up counts)."""
    warmup = max((c.sched.warmup_epochs for c in configs), default=0.0)
    grace = s.grace_period if s.grace_period is not None else m.grace_period
    rf = s.reduction_factor if s.reduction_factor is not None else m.reduction_factor
    return asha_params(s.max_epochs or _longest(m, configs), grace, rf, warmup)


def _longest(m: Matrix, configs: list[RunConfig]) -> int:
    """The most epochs a trial of this sweep trains, counted as ``harness plan`` counts them: over its
    resolved trials, after ``--only`` and ``--set``, not over the whole matrix (30-epoch rows selected from
    a matrix whose longest row trains 50 have no rung placed for 50). An Optuna search's trials are drawn
    later, so a drawn epochs axis adds its top."""
    longest = max((epoch_count(c.train.epochs) for c in configs), default=1)
    if any(a.key == "train.epochs" and a.kind not in GRID_KINDS for a in m.axes):
        longest = max(longest, m.max_epochs())
    return longest


def _print_start(s: SweepSettings, m: Matrix, n_trials: int, cap: int | None, mode: str | None,
                 exp_dir: Path, asha: tuple[int, int, float]) -> None:
    max_t, grace, rf = asha
    phases = (f"; then the best {s.rerun_top} per architecture again at full budget with {s.seeds} seed(s)"
              if s.rerun_top else "")
    gpus = f" x {s.gpus_per_worker:g} GPU" if s.gpus_per_worker else ""
    print(f"sweep {s.name}: {n_trials} trials of matrix {m.name} ({s.search or m.search}), ASHA on {METRIC} "
          f"(grace {grace}, reduction {rf:g}, {max_t} epochs), {s.workers_per_trial} worker(s) x "
          f"{s.cpus_per_worker} CPU{gpus} per trial{f', at most {cap} at once' if cap else ''}; "
          f"W&B {mode or 'off'}; {exp_dir}{phases}", flush=True)


def _new_tuner(s: SweepSettings, m: Matrix, cells: list[dict] | None, n_trials: int, storage: Path,
               trainable: Any, cap: int | None, mode: str | None, asha: tuple[int, int, float]) -> Any:
    # ray is heavy: imported only where Ray is used
    from ray import tune

    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, scheduler=_scheduler(*asha), search_alg=_searcher(s.search or m.search),
        num_samples=1 if cells is not None else n_trials, max_concurrent_trials=cap,
        reuse_actors=_reuse_actors(s), trial_name_creator=_trial_name, trial_dirname_creator=_trial_name)
    run_config = tune.RunConfig(name=s.name, storage_path=str(storage), verbose=0,
                                callbacks=_make_callbacks(s, n_trials, mode), log_to_file=True,
                                failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, param_space=_param_space(m, cells), tune_config=tune_config, run_config=run_config)


def _make_callbacks(s: SweepSettings, total: int, mode: str | None, title: str | None = None) -> list:
    # imports ray (heavy): only a running sweep needs it
    from harness.sweep.progress import SweepProgress

    callbacks: list = [SweepProgress(title or s.name, total)]
    if mode is not None:
        from harness.sweep.wandb_logging import wandb_callback

        callbacks.append(wandb_callback(s))
    return callbacks


def _scheduler(max_t: int, grace: int, rf: float) -> Any:
    # Rungs must lie before the last epoch: a cut at the last epoch saves nothing and would lose the
    # test evaluation of a run that trained to the end. stop_last_trials=False: Tune never stops a
    # trial at max_t either; the trial ends itself after its summary.
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if grace >= max_t:  # no rung before the last epoch: nothing to stop early
        print(f"ASHA: --grace-period {grace} leaves no rung before epoch {max_t}; no trial will be stopped early",
              flush=True)
        return FIFOScheduler()
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t - 1, grace_period=grace, reduction_factor=rf,
                         stop_last_trials=False)


def _searcher(search: str) -> Any:
    if search != "optuna":
        return None
    # ray is heavy: imported only where Ray is used
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=0)


def _param_space(m: Matrix, cells: list[dict] | None) -> dict:
    # ray is heavy: imported only where Ray is used
    from ray import tune

    if cells is None:
        return m.tune_space()
    return {"cell": tune.grid_search(grid_cells(cells))}


def _trial_name(trial: Any) -> str:
    cfg = trial.config if isinstance(trial.config, dict) else {}
    label = trial_label(cfg) if cfg else ""
    idx = f"{trial_cell(cfg)['index']:03d}_" if "cell" in cfg else ""
    label = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label)[:60].strip("_")
    return f"{idx}{label}_{trial.trial_id}" if label else f"{idx}{trial.trial_id}"


def _prepare_data(configs: list[RunConfig]) -> None:
    """Load each dataset a trial needs once, before the trials: fails fast with one line when data is
    missing, downloads where allowed, and fills the decode cache so parallel trials do not decode twice."""
    # torch is heavy: loaded when this runs, so importing this module stays light
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


def _cluster_shape(s: SweepSettings) -> ClusterShape:
    """The nodes trials are sized to: this machine's (a private local Ray, not started yet), or those of the
    cluster in ``$RAY_ADDRESS`` (connecting to it) and the node types its autoscaler may add."""
    if not os.environ.get("RAY_ADDRESS"):
        return local_shape(s.num_cpus)
    _init_ray(s)
    return cluster_shape()


def _check_trials(m: Matrix, s: SweepSettings, cells: list[dict] | None,
                  cluster_gpus: float) -> list[RunConfig]:
    """Resolve every trial and check it as `harness run` would, against the cluster's GPUs (not this
    process's CUDA: the driver may be a CPU-only head)."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    from harness.run.resolve import check

    return _trial_configs(m, s, cells, lambda cfg: check(cfg, cluster_gpus))


def _trial_configs(m: Matrix, s: SweepSettings, cells: list[dict] | None,
                   check: Callable[[RunConfig], Any] | None = None) -> list[RunConfig]:
    """Each trial's configuration (for Optuna: the base config and each grid value on top of it), each
    passed to ``check`` first; a :class:`HarnessError` names the trial."""
    if cells is None:
        probe = [{a.name: a.labels[0] if a.labels else a.low for a in m.axes}]
        for a in m.axes:
            for lab in a.labels[1:]:
                probe.append({**probe[0], a.name: lab})
        items = probe
    else:
        items = [{"cell": c} for c in cells]
    configs = []
    for item in items:
        try:
            r = trial_config(item, s)
            if r is None:
                continue
            cfg, _ = r
            if check is not None:
                check(cfg)
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


def default_storage() -> Path:
    """Where sweeps live by default: ``$HARNESS_SWEEPS_DIR`` or ``./sweeps``."""
    return Path(os.environ.get("HARNESS_SWEEPS_DIR", "sweeps")).expanduser().resolve()


def _has_experiment(exp_dir: Path) -> bool:
    return exp_dir.is_dir() and any(exp_dir.glob(_TUNE_STATE_GLOB))


def _finish(s: SweepSettings, exp_dir: Path, elapsed: float, mode: str | None, n_trials: int,
            stop: SweepInterrupt) -> int:
    """Merge the leaderboards, regenerate the docs page, print what happened and the closing table.

    Returns:
        0, or 130 when trials are unfinished or a Ctrl-C came (``stop``, read at the end so that one
        during the merge counts).
    """
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
    rdir = results or results_dir()
    pruned = sum(1 for r in records if r.pruned)
    print(f"sweep {s.name}: {sum(reasons.values())} trials ended in {elapsed / 60:.1f} min ("
          + ", ".join(f"{v} {k}" for k, v in sorted(reasons.items())) + f"); {n_rows} configurations merged "
          f"into {rdir / LEADERBOARD_CSV}, {pruned} pruned trials into {rdir / PRUNED_CSV}, {n_tp} rows into "
          f"{rdir / THROUGHPUT_CSV}", flush=True)
    out = None
    if s.docs_dir != "" and n_rows:
        docs = Path(s.docs_dir) if s.docs_dir else None
        out = render_docs(rdir, docs)
        print(f"docs: {out} and its plots in {out.parent / 'img'}", flush=True)
    if mode == "offline":
        print(f"W&B runs are offline; upload them with: wandb sync {exp_dir}/*/wandb/offline-run-*"
              + (f" {exp_dir}/{RERUN_DIR}/*/wandb/offline-run-*" if s.rerun_top else ""), flush=True)
    if incomplete > 0 or stop.interrupted:
        print(f"sweep {s.name} was interrupted with {max(incomplete, 0)} trial(s) unfinished; finish it with: "
              f"harness sweep --name {s.name} --resume" + (f" --storage {s.storage}" if s.storage else ""),
              file=sys.stderr, flush=True)
        return 130
    print(closing_table(records, RERUN if s.rerun_top else SINGLE, out), flush=True)
    return 0
