"""The trials of a sweep: what each one runs, and :func:`run_trial`, the Tune trainable that runs it.

The design follows Ray's guidance for Train V2 (Ray >= 2.43): Tune runs a *function trainable*
(:func:`run_trial`). With one worker per trial it trains in the trial's own process, reporting each
epoch with ``ray.tune.report``; with more it builds and fits a ``TorchTrainer`` whose workers'
reports reach the trial through ``TuneReportCallback`` (both are :func:`harness.run.trainer.fit`).
The test split is only touched by :func:`fit` at the end of a trial that ASHA did not stop.

A grid or random sweep's trials are *cells* (:func:`trial_cells`): one configuration of the matrix
x one seed x one fold, handed to Tune as a grid over ``{"cell": ...}``. Optuna's trials are points
of the matrix's search space, resolved by the matrix. Either way :func:`trial_overrides` turns a
trial's Tune config into the dotted overrides of its :class:`RunConfig`.

A trial that raises, or diverges, reports its error and ends; the sweep goes on. A trial whose
summary had already been written (a sweep resumed after its driver was killed) replays it instead
of training again; one that was cut short continues its run from ``last.pt``.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.files import CONFIG_FILE, RERUN_DIR, TRACEBACK_FILE, TRIAL_FILE, TRIAL_RUN_DIR
from harness.provenance import provenance
from harness.report.records import read_trial
from harness.run.config import RunConfig, apply_overrides, config_id, config_to_dict, parse_override
from harness.run.summary import RunSummary
from harness.sweep.matrix import Matrix, parse_matrix, select
from harness.sweep.settings import METRIC, RERUN, SweepSettings, search_phase, search_seeds

# An Optuna suggestion the matrix excludes is reported as this, and is not a run.
_EXCLUDED = {"status": "excluded", METRIC: None}


def trial_cells(m: Matrix, s: SweepSettings) -> list[dict[str, Any]]:
    """The trials of a grid or random sweep's first phase: each configuration x seeds x folds.

    With ``--rerun-top`` the first phase is a search and runs one seed; the seeds are phase two's
    (:func:`harness.sweep.phases.rerun_cells`).
    """
    configs = m.configurations(s.search or m.search, s.num_samples)
    # A report row answered by a search (reference `via`) is run by that search, not as a fixed config.
    configs = [c for c in configs if not c["references"] or not all(r.get("via") for r in c["references"])] or configs
    if s.only:
        configs = select(configs, s.only, m)
    cells = []
    phase = search_phase(s)
    for ci, c in enumerate(configs):
        for seed in range(search_seeds(s)):
            for fold in range(max(1, s.folds)):
                cells.append({"index": len(cells), "config_index": ci, "axes": c["axes"], "overrides": c["overrides"],
                              "references": c["references"], "seed": seed, "fold": fold if s.folds else None,
                              "phase": phase})
    return cells


# Every trial of a sweep parses the same saved matrix text; parse it once per process.
_MATRIX_CACHE: dict[str, Matrix] = {}


def matrix_of(s: SweepSettings) -> Matrix:
    """The matrix saved in ``s`` (``matrix_text``, as read when the sweep started)."""
    if s.matrix_text not in _MATRIX_CACHE:
        _MATRIX_CACHE[s.matrix_text] = parse_matrix(s.matrix_text, s.matrix_path, Path(s.matrix_path).stem)
    return _MATRIX_CACHE[s.matrix_text]


def trial_overrides(config: dict, s: SweepSettings) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(dotted overrides, info)`` for one trial's Tune config; None when the matrix excludes it (Optuna).

    ``info`` holds the trial's ``axes`` (axis name -> label), ``seed``, ``fold``, ``phase`` (search,
    rerun or single) and ``cell`` (the matrix's axes, overrides and references: what a rerun repeats).

    Raises:
        HarnessError: an axis value or a ``--set`` override that does not resolve.
    """
    if "cell" in config:
        cell = trial_cell(config)
        overrides, seed, fold, axes = dict(cell["overrides"]), cell["seed"], cell["fold"], cell["axes"]
        refs = cell.get("references", [])
        phase = cell.get("phase") or search_phase(s)
    else:  # Optuna suggests axis values; the matrix turns them into overrides
        m = matrix_of(s)
        axes = {a.name: config[a.name] for a in m.axes}
        resolved = m.resolve(axes)
        if resolved is None:
            return None
        overrides, seed, fold, refs = resolved, 0, None, m.references(axes)
        phase = search_phase(s)
    matrix_cell = {"axes": axes, "overrides": dict(overrides), "references": refs}
    d = dict(overrides)
    for o in s.overrides:
        k, v = parse_override(o)
        d[k] = v
    if s.max_epochs:
        # --max-epochs caps an epochs axis, and otherwise sets the epochs of every trial.
        epochs = float(d.get("train.epochs", RunConfig().train.epochs))  # (keeps a fraction such as 9.9)
        capped = d.get("train.epochs", RunConfig().train.epochs) if epochs <= s.max_epochs else s.max_epochs
        d["train.epochs"] = capped if matrix_of(s).has_epochs_axis else s.max_epochs
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
    report = Path(s.matrix_path).stem if refs else ""
    return d, {"axes": axes, "seed": seed, "fold": fold, "phase": phase, "cell": matrix_cell,
               "references": [{"report": report, **r} for r in refs]}


def trial_config(config: dict, s: SweepSettings) -> tuple[RunConfig, dict[str, Any]] | None:
    """The resolved :class:`RunConfig` of one trial, and its info; None when excluded."""
    r = trial_overrides(config, s)
    if r is None:
        return None
    d, info = r
    return apply_overrides(RunConfig(), d), info


def trial_label(config: dict) -> str:
    """What a trial is, for tables and names: its axis labels, then its seed and fold where set."""
    cell = trial_cell(config) or {}
    axes = cell.get("axes") if "cell" in config else config
    parts = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (axes or {}).values()]
    if cell.get("phase") == RERUN:
        parts.append("rerun")
    if cell.get("seed"):
        parts.append(f"seed {cell['seed']}")
    if cell.get("fold") is not None:
        parts.append(f"fold {cell['fold']}")
    return " / ".join(parts)


def trial_index(trial: Any) -> str:
    """``#007`` for the eighth cell of a grid or random sweep; Tune's trial id for an Optuna trial."""
    cell = trial_cell(trial.config) if isinstance(trial.config, dict) else None
    return f"#{cell['index']:03d}" if cell else trial.trial_id


def grid_cells(cells: list[dict]) -> list[str]:
    """The cells as the values of Tune's grid search: JSON text, read back by :func:`trial_cell`.

    Tune deep-copies its whole search spec for every trial it generates (``_grid_search_generator`` in
    ``ray.tune.search.variant_generator``), and the spec holds every cell: with cells as nested dicts that
    is O(N) a trial and O(N^2) a sweep (at N = 1,000 about half of the driver's CPU). A string is copied
    by reference. (A dict subclass that shares itself on copy does not survive: Tune rebuilds the config's
    dicts as it injects its placeholders.)
    """
    return [json.dumps(c, sort_keys=True) for c in cells]


def trial_cell(config: dict) -> dict | None:
    """The matrix cell of a trial's config (JSON text from :func:`grid_cells`, or a dict); None for Optuna's."""
    cell = config.get("cell")
    return json.loads(cell) if isinstance(cell, str) else cell


def is_excluded(result: dict) -> bool:
    """Whether a trial's result says the matrix excludes it (an Optuna suggestion that is not a run)."""
    return result.get("status") == _EXCLUDED["status"]


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``: an error as a table cell or a log line."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".strip()


def run_trial(config: dict, settings: dict) -> None:
    """The Tune function trainable: one configuration, one seed, one fold.

    Reports every epoch's metrics (``epoch``, ``val_acc``, ...) and then the run's summary. An
    exception or a divergence is reported (``status``, ``error``) and ends the trial, not the sweep.
    """
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch
    from ray import tune

    from harness.run.resolve import resolve
    from harness.run.trainer import fit

    s = SweepSettings(**settings)
    trial_dir = trial_storage_dir(s, config, Path(tune.get_context().get_trial_dir()).name)
    trial_dir.mkdir(parents=True, exist_ok=True)
    try:
        resolved = trial_config(config, s)
    except HarnessError as e:
        _report_failure(trial_dir, e)
        return
    if resolved is None:  # Optuna suggested a combination the matrix excludes
        tune.report(dict(_EXCLUDED))
        return
    cfg, info = resolved
    in_process = s.workers_per_trial <= 1
    if in_process:  # before resolving: the probe of an auto layout times steps at the trial's own thread count
        torch.set_num_threads(s.cpus_per_worker or 1)  # Ray pins the trial to its CPU share; more threads thrash
    try:
        cfg = resolve(cfg)  # trial.json and config_id hold what runs, as a `harness run` directory does
    except HarnessError as e:  # e.g. a GPU trial on a node without CUDA: a failed row, not a lost trial
        _write_trial_file(trial_dir, s, cfg, config_id(cfg), info)
        _report_failure(trial_dir, e)
        return
    cid = config_id(cfg)
    tags = {"config_id": cid, "seed": info["seed"]}
    if info["fold"] is not None:
        tags["fold"] = info["fold"]
    if _replay_summary(trial_dir, tags):
        return
    _write_trial_file(trial_dir, s, cfg, cid, info)

    def report(metrics: dict) -> None:
        m = {k: v for k, v in metrics.items() if k != "done"}
        m.setdefault(METRIC, None)
        tune.report({**m, **tags})

    run_dir = trial_dir / TRIAL_RUN_DIR
    # A trial restored after its sweep was stopped continues its run from last.pt (the finished epochs are
    # kept, not trained again), as `harness run --resume` would; a run that had not started starts afresh.
    resume = (run_dir / CONFIG_FILE).is_file()
    try:
        fit(cfg, run_dir, report=report if in_process else None, tune_report=not in_process, resume=resume)
    except Exception as e:  # noqa: BLE001 - any failure is recorded with the trial, and the sweep goes on
        _report_failure(trial_dir, e)


def trial_storage_dir(s: SweepSettings, config: dict, trial_dir_name: str) -> Path:
    """Where a trial writes its own files: its folder in the sweep's storage, from whichever node runs it.

    Tune gives a trial a staging folder in its node's Ray session (``get_trial_dir()``) and syncs only the
    driver's to ``<storage>/<sweep>/``: on a multi-node cluster what a worker node's trial wrote there
    never reached the leaderboard. ``--storage`` is the one path every node shares (NFS on a cluster, as
    Ray Train's checkpoints need anyway), so the trial writes ``trial.json`` and ``run/`` straight into
    it, and the driver's staging folder holds only Tune's files (``result.json``, ``outcome.json``).
    A resumed trial finds its ``last.pt`` there, in whatever Ray session it restarts.
    """
    phase = (trial_cell(config) or {}).get("phase") or search_phase(s)
    return Path(s.storage) / s.name / (RERUN_DIR if phase == RERUN else "") / trial_dir_name


def _report_failure(trial_dir: Path, e: BaseException) -> None:
    # ray is heavy: imported only where Ray is used
    from ray import tune

    (trial_dir / TRACEBACK_FILE).write_text("".join(traceback.format_exception(e)))
    tune.report(RunSummary.failure(one_line(e)).to_dict())  # val_acc: None, so ASHA and the table skip it


def _replay_summary(trial_dir: Path, tags: dict[str, Any]) -> bool:
    """Report the summary this trial already wrote, if it did; True when it did."""
    # ray is heavy: imported only where Ray is used
    from ray import tune

    # The run's own summary.json, written straight into storage before the trial reported it: Tune's
    # result.json reaches storage only at its next sync, so a driver killed in between (kill -9) left
    # a finished trial whose result.json had no summary, and --resume trained it again.
    prev = RunSummary.read(trial_dir / TRIAL_RUN_DIR)
    if prev is None:
        rec = read_trial(trial_dir)  # a trial of a sweep written before runs kept their summary here
        prev = rec.summary if rec is not None else None
    if prev is None or prev.status == "interrupted":  # a stopped sweep's trial: it continues from last.pt
        return False
    # A resumed sweep restarts trials it had not yet saved as finished; this one had. Replay its
    # summary (no `epoch` key, so ASHA ignores it) instead of training it again. Only the summary's
    # own fields go back: Tune adds its bookkeeping keys (time, date, pid, ...) afresh.
    tune.report({**prev.to_dict(), **tags, "replayed": True})
    return True


def _write_trial_file(trial_dir: Path, s: SweepSettings, cfg: RunConfig, cid: str, info: dict[str, Any]) -> None:
    """``trial.json``: what this trial runs and where, written before it trains (the leaderboard reads it)."""
    device = "cuda" if s.gpus_per_worker else "cpu"
    prov = provenance(device)
    prov["device"] = device
    (trial_dir / TRIAL_FILE).write_text(json.dumps({
        "sweep": s.name, "config": config_to_dict(cfg), "config_id": cid, **info, "provenance": prov,
        "started": prov["date"],
    }, indent=2, default=str))
