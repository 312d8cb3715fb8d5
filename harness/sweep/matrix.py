"""Sweep matrices: a YAML file of axes over the run config, turned into the trials of a sweep.

A matrix names the axes of a sweep (architecture, strategy, dataset, optimizer, scheduler,
augmentation, learning rate, weight decay, batch size, epochs, strategy options: any key of
:class:`harness.run.config.RunConfig`), what every trial shares (``base``), and which combinations
to leave out (``exclude``) or to complete (``constraints``). Presets ship in
``harness/sweep/matrices/*.yaml``; ``harness list presets`` shows them. The schema::

    description: one line for `harness list presets`
    search: grid                 # default of `harness sweep --search`: grid | random | optuna
    num_samples: 1               # default of --num-samples
    asha: {grace_period: 2, reduction_factor: 3}   # optional; default: a third of the epochs, 3
    base:                        # dotted RunConfig keys (or the axis aliases below), every trial
      data.dataset: cifar10
      train.epochs: 4
    axes:
      arch: [resnet20, tiny_cnn]                 # a list is a grid
      strategy: {grid: [scratch, {strategy: transfer, pretrain_dataset: imagenette, label: transfer}]}
      lr: {loguniform: [0.01, 0.2]}               # uniform | loguniform: [low, high]
      batch_size: {choice: [64, 128]}             # sampled, never crossed
      epochs: {randint: [2, 6]}                   # integers in [low, high), as Tune's randint
    exclude:                                      # drop every trial matching all these keys
      - {arch: lenet_cnn, strategy: transfer}
    constraints:
      - if: {arch: tv_alexnet}                    # match (a value, a list of values, or a glob)
        set: {img_size: 64}                       # ... then force these values
      - if: {arch: "tv_*"}
        require: {strategy: [finetune, scratch]}  # ... or keep only trials that also match these

A grid or choice value may be a mapping: a bundle of keys set together (its ``label`` names it in
tables). A report's matrix makes each table row a labelled bundle with a ``reference`` (what the
report got: ``{row: S1.1, figure: 0.57, metric: test, table: "Tab. 1", setting: ...}``) and adds a
top-level ``report: {title, source, protocol, chosen: [settings the report left out]}`` section;
``harness reproduce`` puts the two side by side. A pure grid runs identical cells once and merges their
references (reports repeat rows across tables), and ``harness sweep --only AXIS=GLOB[,GLOB]`` runs
the cells whose label (or merged report row) matches. An ``arch`` value with ``*`` or ``?`` expands to every registered model matching the glob.

How the axes become trials (:meth:`Matrix.configurations`): ``grid`` crosses the grid axes and draws
``num_samples`` values of each sampled axis for every cell; ``random`` draws ``num_samples`` trials,
every axis sampled (grid axes uniformly); exclusions drop trials before they are run. ``optuna``
hands :meth:`Matrix.tune_space` to Optuna (grid axes become categorical) and resolves each
suggestion with :meth:`Matrix.resolve`.

Every error is one line naming the file and, where it can, the line: an unknown key or name (with
the closest valid ones), an empty axis, a bad distribution, or YAML that does not parse.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, HarnessError
from harness.registry import suggest, unknown_name_message
from harness.run.config import (
    RunConfig,
    apply_overrides,
    config_to_dict,
    epoch_count,
    field_info,
    fields,
    keys_with,
)

#: Short axis names and the config keys they stand for, declared on the keys (``knob(axis=...)``).
#: Any dotted RunConfig key works as well.
AXIS_ALIASES: dict[str, str] = {f.axis: key for key, f in fields().items() if f.axis}

GRID_KINDS = ("grid", "choice")
DIST_KINDS = ("uniform", "loguniform", "randint")
TOP_KEYS = ("description", "search", "num_samples", "asha", "base", "axes", "exclude", "constraints", "report")
REPORT_KEYS = ("title", "source", "protocol", "chosen", "findings")
SEARCHES = ("grid", "random", "optuna")

# Keys a matrix must not set: the sweep owns them (seeds, folds, where things go, resources).
_SWEEP_OWNED = tuple(keys_with(sweep=True))  # declared on the config fields (knob(sweep=True))


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


def _line_index(node: yaml.Node | None, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[(*path, k.value)] = k.start_mark.line + 1
            _line_index(v, (*path, k.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[(*path, i)] = v.start_mark.line + 1
            _line_index(v, (*path, i), out)
    return out


class _Source:
    """The file a matrix came from, and where each key sits in it (for one-line errors)."""

    def __init__(self, path: str, lines: dict[tuple, int]) -> None:
        self.path = path
        self.lines = lines

    def where(self, *path: Any) -> str:
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        return f"{self.path}:{line}" if line else self.path

    def error(self, msg: str, *path: Any) -> ConfigError:
        return ConfigError(f"{self.where(*path)}: {msg}")


# ---------------------------------------------------------------------------------------------
# The matrix


@dataclass
class Axis:
    """One axis: a grid or choice of value bundles, or a distribution over one numeric key."""

    name: str  # as written in the file (an alias or a dotted key)
    key: str  # the dotted config key (for bundles: the key the label describes)
    kind: str  # grid | choice | uniform | loguniform | randint
    values: list[dict[str, Any]] = field(default_factory=list)  # grid/choice: dotted overrides per value
    labels: list[Any] = field(default_factory=list)  # grid/choice: what tables and Optuna call each value
    references: list[list[dict[str, Any]]] = field(default_factory=list)  # grid/choice: report rows per value
    low: float = 0.0
    high: float = 0.0
    line: str = ""  # file:line, for errors found later

    @property
    def sampled(self) -> bool:
        return self.kind != "grid"

    def sample(self, rng: random.Random) -> tuple[Any, dict[str, Any]]:
        """Draw one value: ``(label, overrides)``."""
        if self.kind in GRID_KINDS:
            i = rng.randrange(len(self.values))
            return self.labels[i], dict(self.values[i])
        if self.kind == "uniform":
            v: Any = rng.uniform(self.low, self.high)
        elif self.kind == "loguniform":
            v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            v = rng.randrange(int(self.low), int(self.high))
        if isinstance(v, float):
            v = float(f"{v:.4g}")  # readable labels; 4 significant digits are plenty for a sweep
        return v, {self.key: v}

    def lookup(self, label: Any) -> dict[str, Any]:
        """The overrides of the value called ``label`` (a suggestion from Optuna)."""
        if self.kind in GRID_KINDS:
            for lab, val in zip(self.labels, self.values):
                if lab == label or str(lab) == str(label):
                    return dict(val)
            raise ConfigError(f"{self.line}: axis '{self.name}' has no value '{label}'")
        return {self.key: label}


@dataclass
class Constraint:
    """``if`` a trial matches ``when``, ``set`` these values and/or ``require`` it to match these."""

    when: dict[str, Any]
    set: dict[str, Any]
    require: dict[str, Any]
    line: str = ""


@dataclass
class Matrix:
    """A parsed, validated matrix. Build it with :func:`load_matrix`."""

    name: str
    path: str
    description: str = ""
    search: str = "grid"
    num_samples: int = 1
    grace_period: int | None = None  # None: harness.sweep.asha's default (a third of the epochs, >= warm-up)
    reduction_factor: float | None = None  # None: 3
    base: dict[str, Any] = field(default_factory=dict)
    axes: list[Axis] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # a report matrix: title, source, protocol, chosen

    # -- trials ---------------------------------------------------------------------------------

    def configurations(self, search: str | None = None, num_samples: int | None = None,
                       seed: int = 0) -> list[dict[str, Any]]:
        """The trials of a grid or random sweep, excluded ones dropped.

        Args:
            search: ``grid`` or ``random`` (default: the matrix's).
            num_samples: samples per grid cell (grid) or trials (random); default: the matrix's.
            seed: seeds the draws, so the same command gives the same trials.

        Returns:
            One dict per trial: ``axes`` (axis name -> label) and ``overrides`` (dotted key -> value,
            base and constraints included).

        Raises:
            ConfigError: every trial is excluded, or a resolved trial is not a valid config.
        """
        search = search or self.search
        n = self.num_samples if num_samples is None else num_samples
        if n < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {n}")
        rng = random.Random(seed)
        out: list[dict[str, Any]] = []
        if search == "grid":
            grid = [a for a in self.axes if not a.sampled]
            cells = itertools.product(*[list(zip(a.labels, a.values)) for a in grid]) if grid else [()]
            for cell in cells:
                for _ in range(n):
                    point = {a.name: (lab, val) for a, (lab, val) in zip(grid, cell)}
                    for a in self.axes:
                        if a.sampled:
                            point[a.name] = a.sample(rng)
                    t = self._trial(point)
                    if t is not None:
                        out.append(t)
        elif search == "random":
            tries = 0
            while len(out) < n and tries < 100 * n:
                tries += 1
                t = self._trial({a.name: a.sample(rng) for a in self.axes})
                if t is not None:
                    out.append(t)
        else:
            raise ConfigError(f"configurations() takes search grid or random, not '{search}'")
        if not out:
            raise ConfigError(f"{self.path}: every trial of the matrix is excluded")
        # Repeated draws of sampled axes are samples, not duplicates; only a pure grid is deduplicated.
        return _dedupe(out) if search == "grid" and not any(a.sampled for a in self.axes) else out

    def _trial(self, point: dict[str, tuple[Any, dict[str, Any]]]) -> dict[str, Any] | None:
        overrides = dict(self.base)
        for _lab, val in point.values():
            overrides.update(val)
        overrides = self._apply_constraints(overrides)
        if overrides is None:
            return None
        axes = {name: lab for name, (lab, _v) in point.items()}
        return {"axes": axes, "overrides": overrides, "references": self.references(axes)}

    def references(self, axes: dict[str, Any]) -> list[dict[str, Any]]:
        """The report rows a trial reproduces (its bundles' ``reference`` entries), given its axis labels."""
        out: list[dict[str, Any]] = []
        for a in self.axes:
            if a.kind in GRID_KINDS and a.name in axes:
                for lab, refs in zip(a.labels, a.references):
                    if lab == axes[a.name]:
                        out += [dict(r) for r in refs]
        return out

    def all_references(self) -> list[dict[str, Any]]:
        """Every report row the matrix names, in file order (rows of every axis)."""
        return [dict(r) for a in self.axes if a.kind in GRID_KINDS for refs in a.references for r in refs]

    def _apply_constraints(self, overrides: dict[str, Any]) -> dict[str, Any] | None:
        for c in self.constraints:
            if _matches(overrides, c.when):
                overrides.update(c.set)
                if c.require and not _matches(overrides, c.require):
                    return None
        if any(_matches(overrides, ex) for ex in self.exclude):
            return None
        return overrides

    def tune_space(self) -> dict[str, Any]:
        """The axes as a Ray Tune search space (for Optuna): grid and choice axes are categorical."""
        # ray is heavy: imported only where Ray is used
        from ray import tune

        space: dict[str, Any] = {}
        for a in self.axes:
            if a.kind in GRID_KINDS:
                space[a.name] = tune.choice(list(a.labels))
            elif a.kind == "uniform":
                space[a.name] = tune.uniform(a.low, a.high)
            elif a.kind == "loguniform":
                space[a.name] = tune.loguniform(a.low, a.high)
            else:
                space[a.name] = tune.randint(int(a.low), int(a.high))
        return space

    def resolve(self, point: dict[str, Any]) -> dict[str, Any] | None:
        """Overrides for one suggested point (axis name -> label); None when the matrix excludes it."""
        t = self._trial({a.name: (point[a.name], a.lookup(point[a.name])) for a in self.axes})
        return None if t is None else t["overrides"]

    @property
    def has_epochs_axis(self) -> bool:
        """Whether an axis sets ``train.epochs``: an ``epochs`` axis, or a bundle value that sets it."""
        return any(a.key == "train.epochs" or any("train.epochs" in v for v in a.values) for a in self.axes)

    def max_epochs(self) -> int:
        """The most epochs any trial runs (the ``epochs`` axis, else ``train.epochs`` of ``base``)."""
        # ASHA counts reports, one per epoch started: a fractional last epoch (9.9) is the 10th.
        best = 0 if self.has_epochs_axis and "train.epochs" not in self.base else epoch_count(
            float(self.base.get("train.epochs", RunConfig().train.epochs)))
        for a in self.axes:
            if a.kind in GRID_KINDS:
                for v in a.values:
                    if "train.epochs" in v:
                        best = max(best, epoch_count(float(v["train.epochs"])))
            elif a.key == "train.epochs":
                best = max(best, int(a.high) - 1 if a.kind == "randint" else int(a.high))
        return best

    def datasets(self) -> list[str]:
        """Every dataset a trial of this matrix may read (transfer's pretraining datasets included)."""
        sources = [self.base, *(v for a in self.axes for v in a.values), *(c.set for c in self.constraints)]
        names = [d["data.dataset"] for d in sources if d.get("data.dataset")]
        if not any("data.dataset" in d for d in sources):
            names.insert(0, RunConfig().data.dataset)
        names += [d["strategy.pretrain_dataset"] for d in sources if d.get("strategy.pretrain_dataset")]
        return list(dict.fromkeys(names))


def _dedupe(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grid cells that set the same overrides run once; their report references are merged.

    Reports repeat rows across tables (S4.1 is S3.1 again): one run answers both.
    """
    seen: dict[str, dict[str, Any]] = {}
    out = []
    for t in trials:
        key = repr(sorted(t["overrides"].items(), key=lambda kv: kv[0]))
        if key in seen:
            seen[key]["references"] += t["references"]
            continue
        seen[key] = t
        out.append(t)
    return out


def select(trials: list[dict[str, Any]], only: list[str], m: Matrix) -> list[dict[str, Any]]:
    """The trials whose axis labels match every ``AXIS=GLOB[,GLOB...]`` of ``only`` (``--only row='S3.*,S4.*'``).

    A trial matches a glob with its label or with the row id of any report reference it carries.

    Raises:
        ConfigError: an entry that is not ``AXIS=GLOB``, an axis the matrix lacks, or nothing left.
    """
    names = [a.name for a in m.axes]
    out = trials
    for o in only:
        axis, sep, pat = o.partition("=")
        if not sep or not axis or not pat:
            raise ConfigError(f"--only {o}: expected AXIS=GLOB, e.g. --only arch='resnet*'")
        if axis not in names:
            raise ConfigError(f"--only {o}: {unknown_name_message('axis', axis, names)}")
        globs = pat.split(",")

        def hit(t: dict[str, Any], axis: str = axis, globs: list[str] = globs) -> bool:
            # A trial answers for its own label and for the report rows merged into it (S2.1 is S1.1).
            names = [str(t["axes"].get(axis)), *(r["row"] for r in t.get("references", []))]
            return any(fnmatch.fnmatchcase(n, g) for n in names for g in globs)

        out = [t for t in out if hit(t)]
    if not out:
        raise ConfigError(f"--only {' '.join(only)}: no trial of {m.name} matches")
    return out


def _matches(overrides: dict[str, Any], pattern: dict[str, Any]) -> bool:
    """True when every key of ``pattern`` matches: equal, one of a list, or a glob on strings."""
    defaults = _defaults()
    for k, want in pattern.items():
        have = overrides.get(k, defaults.get(k))
        options = want if isinstance(want, list) else [want]
        ok = False
        for w in options:
            if isinstance(w, str) and isinstance(have, str) and any(ch in w for ch in "*?["):
                ok = fnmatch.fnmatchcase(have, w)
            elif isinstance(w, (int, float)) and isinstance(have, (int, float)) and not isinstance(w, bool):
                ok = math.isclose(float(w), float(have), rel_tol=1e-9)
            else:
                ok = w == have or (w is not None and str(w) == str(have))
            if ok:
                break
        if not ok:
            return False
    return True


_DEFAULTS: dict[str, Any] = {}


def _defaults() -> dict[str, Any]:
    """Every leaf of the default RunConfig as ``dotted key -> value``."""
    if not _DEFAULTS:
        def walk(d: dict, prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict) and k != "kwargs":
                    walk(v, f"{prefix}{k}.")
                else:
                    _DEFAULTS[prefix + k] = v

        walk(config_to_dict(RunConfig()), "")
    return _DEFAULTS


# ---------------------------------------------------------------------------------------------
# Loading and validation


def presets_dir() -> Path:
    """The folder of the shipped matrix presets."""
    return Path(str(resources.files("harness.sweep") / "matrices"))


def list_presets() -> list[tuple[str, str]]:
    """``(name, description)`` of every shipped matrix preset, sorted by name."""
    out = []
    for p in sorted(presets_dir().glob("*.yaml")):
        try:
            desc = (yaml.safe_load(p.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            desc = "(does not parse)"
        out.append((p.stem, " ".join(str(desc).split())))
    return out


def matrix_path(name_or_path: str | Path) -> Path:
    """A preset name (``quick``) or a path to a YAML file, as a path.

    Raises:
        ConfigError: neither a preset nor an existing file; names the closest presets.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.is_file():
        return p
    preset = presets_dir() / f"{s}.yaml"
    if "/" not in s and not s.endswith((".yaml", ".yml")) and preset.is_file():
        return preset
    names = [n for n, _ in list_presets()]
    if s.endswith((".yaml", ".yml")) or "/" in s:
        raise ConfigError(f"matrix file not found: {s} (presets: {', '.join(names)})")
    raise ConfigError(unknown_name_message("matrix preset", s, names) + "; or give a path to a YAML file")


def load_matrix(name_or_path: str | Path) -> Matrix:
    """Read, parse and validate a matrix (a preset name or a YAML path).

    Raises:
        ConfigError: one line with the file and, where known, the line of the problem.
    """
    path = matrix_path(name_or_path)
    text = path.read_text()
    return parse_matrix(text, str(path), name=path.stem)


def parse_matrix(text: str, path: str = "<matrix>", name: str = "matrix") -> Matrix:
    """Parse and validate the YAML text of a matrix (see the module docstring for the schema)."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    src = _Source(path, _line_index(node))
    if data is None:
        raise src.error("the matrix is empty (it needs at least 'axes')")
    if not isinstance(data, dict):
        raise src.error("a matrix is a mapping with 'axes' (and optionally base, exclude, constraints, ...)")
    for k in data:
        if k not in TOP_KEYS:
            close = suggest(str(k), list(TOP_KEYS))
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise src.error(f"unknown key '{k}'{hint} (valid: {', '.join(TOP_KEYS)})", k)

    m = Matrix(name=name, path=path, description=" ".join(str(data.get("description", "")).split()))
    search = data.get("search", "grid")
    if search not in SEARCHES:
        raise src.error(f"search must be one of {', '.join(SEARCHES)}, got '{search}'", "search")
    m.search = search
    ns = data.get("num_samples", 1)
    if not isinstance(ns, int) or isinstance(ns, bool) or ns < 1:
        raise src.error(f"num_samples must be an integer >= 1, got {ns!r}", "num_samples")
    m.num_samples = ns
    asha = data.get("asha") or {}
    if not isinstance(asha, dict):
        raise src.error("asha must be a mapping {grace_period, reduction_factor}", "asha")
    for k, v in asha.items():
        if k == "grace_period" and isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            m.grace_period = v
        elif k == "reduction_factor" and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1:
            m.reduction_factor = v
        elif k in ("grace_period", "reduction_factor"):
            raise src.error(f"asha.{k} must be {'an integer >= 1' if k == 'grace_period' else '> 1'}, got {v!r}",
                            "asha", k)
        else:
            raise src.error(f"unknown key 'asha.{k}' (valid: grace_period, reduction_factor)", "asha", k)

    m.report = _parse_report(data.get("report"), src)
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise src.error("base must be a mapping of config keys to values", "base")
    m.base = _flat_overrides(base, src, ("base",))

    axes = data.get("axes")
    if not axes or not isinstance(axes, dict):
        raise src.error("the matrix needs 'axes': a mapping of axis names to values or distributions", "axes")
    for aname, spec in axes.items():
        m.axes.append(_parse_axis(str(aname), spec, src))
    _expand_arch_globs(m, src)

    for i, ex in enumerate(data.get("exclude") or []):
        if not isinstance(ex, dict) or not ex:
            raise src.error("each exclude entry is a mapping of keys to values, e.g. {arch: x, strategy: y}",
                            "exclude", i)
        m.exclude.append(_flat_overrides(ex, src, ("exclude", i), allow_lists=True))
    for i, c in enumerate(data.get("constraints") or []):
        at = ("constraints", i)
        if not isinstance(c, dict) or "if" not in c or not ({"set", "require"} & set(c)):
            raise src.error("each constraint is {if: {...}, set: {...}} and/or require: {...}", *at)
        for k in c:
            if k not in ("if", "set", "require"):
                raise src.error(f"unknown constraint key '{k}' (valid: if, set, require)", *at, k)
        when = _flat_overrides(c["if"] or {}, src, (*at, "if"), allow_lists=True)
        sets = _flat_overrides(c.get("set") or {}, src, (*at, "set"))
        req = _flat_overrides(c.get("require") or {}, src, (*at, "require"), allow_lists=True)
        m.constraints.append(Constraint(when, sets, req, src.where(*at)))
    _validate(m, src)
    return m


def _config_key(name: str, src: _Source, at: tuple) -> str:
    """The dotted config key for an axis or override name, checked against the schema."""
    key = AXIS_ALIASES.get(name, name)
    leaves = _defaults()
    if key in leaves or (key.startswith("model.kwargs.") and len(key.split(".")) == 3):
        if key in _SWEEP_OWNED:
            raise src.error(f"'{name}' is set by harness sweep (--seeds, --folds, --data-dir, resources), "
                            "not by a matrix", *at)
        return key
    choices = sorted(set(AXIS_ALIASES) | set(leaves))
    close = suggest(name, choices)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise src.error(f"unknown axis or config key '{name}'{hint} (aliases: {', '.join(AXIS_ALIASES)}; "
                    "or any dotted key such as optim.nesterov)", *at)


def _flat_overrides(d: Any, src: _Source, at: tuple, allow_lists: bool = False) -> dict[str, Any]:
    """``{alias or dotted key (or nested sections): value}`` -> ``{dotted key: value}``."""
    if not isinstance(d, dict):
        raise src.error("expected a mapping of config keys to values", *at)
    out: dict[str, Any] = {}

    def walk(sub: dict, prefix: str, path: tuple) -> None:
        for k, v in sub.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict) and name not in AXIS_ALIASES and not name.endswith("kwargs"):
                walk(v, f"{name}.", (*path, k))
                continue
            key = _config_key(name, src, (*path, k))
            if isinstance(v, list) and not allow_lists and not isinstance(_defaults().get(key), list):
                raise src.error(f"'{name}' takes one value here, not a list", *path, k)
            out[key] = v

    walk(d, "", at)
    return out


def _parse_axis(name: str, spec: Any, src: _Source) -> Axis:
    at = ("axes", name)
    if name == "label":
        raise src.error("'label' names a bundle inside an axis; it is not an axis", *at)
    key = AXIS_ALIASES.get(name, name)
    values = spec.get("grid", spec.get("choice")) if isinstance(spec, dict) else spec
    if (key not in _defaults() and isinstance(values, list) and values
            and all(isinstance(v, dict) for v in values)):
        key = ""  # a bundle axis, e.g. `recipe: [{optimizer: sgd, lr: 0.1}, {optimizer: adamw, lr: 0.001}]`
    else:
        key = _config_key(name, src, at)
    axis = Axis(name=name, key=key, kind="grid", line=src.where(*at))
    if isinstance(spec, dict):
        kinds = [k for k in spec if k in (*GRID_KINDS, *DIST_KINDS)]
        if len(spec) != 1 or len(kinds) != 1:
            raise src.error(f"axis '{name}' must be a list (a grid) or one of {{grid: [...]}}, {{choice: [...]}}, "
                            f"{{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}, {{randint: [lo, hi]}}; "
                            f"got keys {', '.join(map(str, spec)) or 'none'}", *at)
        kind = kinds[0]
        body = spec[kind]
        at = (*at, kind)
    elif isinstance(spec, list):
        kind, body = "grid", spec
    else:
        kind, body = "grid", [spec]
    axis.kind = kind
    if kind in GRID_KINDS:
        if not isinstance(body, list) or not body:
            raise src.error(f"axis '{name}' is empty: give at least one value", *at)
        for i, v in enumerate(body):
            refs = _references(v, src, (*at, i))
            label, overrides = _axis_value(name, key, v, src, (*at, i))
            axis.values.append(overrides)
            axis.labels.append(label)
            axis.references.append(refs)
        dup = [lab for lab in axis.labels if axis.labels.count(lab) > 1]
        if dup:
            raise src.error(f"axis '{name}' lists '{dup[0]}' twice (give bundles distinct labels)", *at)
        return axis
    if not key:
        raise src.error(f"axis '{name}': a distribution needs a config key as the axis name", *at)
    if (not isinstance(body, list) or len(body) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in body)):
        raise src.error(f"axis '{name}': {kind} takes [low, high] (two numbers), got {body!r}", *at)
    lo, hi = body
    if not lo < hi:
        raise src.error(f"axis '{name}': {kind} needs low < high, got [{lo}, {hi}]", *at)
    if kind == "loguniform" and lo <= 0:
        raise src.error(f"axis '{name}': loguniform needs low > 0, got {lo}", *at)
    if kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise src.error(f"axis '{name}': randint takes integers [low, high), got [{lo}, {hi}]", *at)
    default = _defaults().get(key)
    if isinstance(default, bool) or isinstance(default, (str, list, dict)):
        raise src.error(f"axis '{name}': {kind} needs a numeric key; {key} is not a number", *at)
    axis.low, axis.high = float(lo), float(hi)
    return axis


def _axis_value(name: str, key: str, v: Any, src: _Source, at: tuple) -> tuple[Any, dict[str, Any]]:
    """One grid/choice value: a scalar for the axis key, or a bundle mapping (with an optional label)."""
    if isinstance(v, dict):
        v = dict(v)
        label = v.pop("label", None)
        v.pop("reference", None)  # read by _references
        overrides = _flat_overrides(v, src, at)
        if not overrides and label is None:  # a labelled empty bundle is the base configuration itself
            raise src.error(f"axis '{name}': an empty bundle (give it a label if it is the base itself)", *at)
        if label is None:
            label = overrides.get(key) if key in overrides and len(overrides) == 1 else "+".join(
                str(x) for x in overrides.values())
        return label, overrides
    if not key:
        raise src.error(f"axis '{name}': values of a bundle axis must be mappings", *at)
    if isinstance(v, list) and not isinstance(_defaults().get(key), list):
        raise src.error(f"axis '{name}': nested list {v!r}; a grid is one flat list of values", *at)
    return v, {key: v}


def _parse_report(raw: Any, src: _Source) -> dict[str, Any]:
    """The ``report`` section of a report's matrix: its title, source, how its protocol differs, the
    settings the report left out that the matrix chose (``chosen``: one line each), and what was found
    where ours and the report's disagree (``findings``: one line each)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise src.error(f"report is a mapping with {', '.join(REPORT_KEYS)}", "report")
    for k in raw:
        if k not in REPORT_KEYS:
            raise src.error(f"unknown key 'report.{k}' (valid: {', '.join(REPORT_KEYS)})", "report", k)
    lines = {}
    for key in ("chosen", "findings"):
        items = raw.get(key) or []
        if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
            raise src.error(f"report.{key} is a list of lines", "report", key)
        lines[key] = [" ".join(c.split()) for c in items]
    return {"title": str(raw.get("title", "")), "source": str(raw.get("source", "")),
            "protocol": " ".join(str(raw.get("protocol", "")).split()), **lines}


REFERENCE_KEYS = ("row", "figure", "metric", "table", "setting", "note", "report", "via", "queue")
#: ``queue: gpu`` marks a row too large for a CPU: the campaign leaves it to scripts/gpu-reproduce.sh.
QUEUES = ("gpu",)
METRICS = ("test", "val")


def _references(v: Any, src: _Source, at: tuple) -> list[dict[str, Any]]:
    """A bundle's ``reference``: what a report got for this configuration (one mapping or a list).

    Each is ``{row: S1.1, figure: 0.57, metric: test|val, table: "Tab. 1", setting: ..., note: ...}``;
    ``figure`` is a fraction in [0, 1], or null where the report gives no number (then ``note`` says what
    it gives). ``report`` names the report matrix when another matrix (a search) answers its row, and
    ``via`` names that search on the report's own row. ``queue: gpu`` leaves the row to the GPU queue.
    """
    if not isinstance(v, dict) or "reference" not in v:
        return []
    raw = v["reference"]
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for ref in items:
        where = (*at, "reference")
        if not isinstance(ref, dict) or "row" not in ref or "metric" not in ref:
            raise src.error("a reference is {row: ID, figure: 0.57, metric: test|val, table: ...}", *where)
        for k in ref:
            if k not in REFERENCE_KEYS:
                raise src.error(f"unknown reference key '{k}' (valid: {', '.join(REFERENCE_KEYS)})", *where)
        if ref.get("queue") is not None and ref["queue"] not in QUEUES:
            raise src.error(f"reference queue must be one of {', '.join(QUEUES)}, got {ref['queue']!r}", *where)
        if ref["metric"] not in METRICS:
            raise src.error(f"reference metric must be test or val, got {ref['metric']!r}", *where)
        fig = ref.get("figure")
        if fig is not None and (isinstance(fig, bool) or not isinstance(fig, (int, float)) or not 0 <= fig <= 1):
            raise src.error(f"reference figure is a fraction in [0, 1] (or null), got {fig!r}", *where)
        # report: a search matrix answering a report's row names the report; via: a report's row that a
        # search answers names the search (the row's own configuration is then not run as that row).
        extra = {k: str(ref[k]) for k in ("report", "via", "queue") if k in ref}
        out.append({**extra, "row": str(ref["row"]), "figure": fig, "metric": ref["metric"],
                    "table": str(ref.get("table", "")), "setting": str(ref.get("setting", "")),
                    "note": str(ref.get("note", ""))})
    return out


def _expand_arch_globs(m: Matrix, src: _Source) -> None:
    """``arch: ["*"]`` or ``["resnet*"]`` -> every registered model matching the glob."""
    for a in m.axes:
        if a.kind not in GRID_KINDS:
            continue
        values, labels, refs = [], [], []
        for lab, val, ref in zip(a.labels, a.values, a.references):
            pat = val.get("model.arch")
            if isinstance(pat, str) and any(ch in pat for ch in "*?[") and len(val) == 1:
                # torch is heavy: loaded when this runs, so importing this module stays light
                from architectures import list_models

                names = list_models(pat)
                if not names:
                    raise ConfigError(f"{a.line}: arch glob '{pat}' matches no registered model")
                values += [{"model.arch": n} for n in names]
                labels += names
                refs += [list(ref) for _ in names]
            else:
                values.append(val)
                labels.append(lab)
                refs.append(ref)
        a.values, a.labels, a.references = values, labels, refs


def _registry_names(key: str) -> tuple[str, list[str]] | None:
    """For config keys that name registered things (their metadata says which): (kind, valid names)."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    from harness.run.names import registry_label, registry_names

    try:
        reg = field_info(key).registry
    except ConfigError:
        return None
    if reg is None:
        return None
    # A matrix names models by its `arch` axis.
    return ("arch" if reg == "model" else registry_label(reg)), registry_names(reg)


def _validate(m: Matrix, src: _Source) -> None:
    """Names against the registries, and every grid value (and distribution end) as a real config."""
    cache: dict[str, tuple[str, list[str]] | None] = {}

    def check_names(overrides: dict[str, Any], where: str) -> None:
        for k, v in overrides.items():
            if k not in cache:
                cache[k] = _registry_names(k)
            reg = cache[k]
            if reg is None or v is None:
                continue
            for x in v if isinstance(v, list) else [v]:
                if isinstance(x, str) and any(ch in x for ch in "*?["):
                    continue  # a glob in exclude/if/require
                if str(x) not in reg[1]:
                    raise ConfigError(f"{where}: {unknown_name_message(reg[0], str(x), reg[1])}")

    def check_config(overrides: dict[str, Any], where: str) -> None:
        try:
            apply_overrides(RunConfig(), {**m.base, **overrides})
        except HarnessError as e:
            raise ConfigError(f"{where}: {e}") from None

    check_names(m.base, src.where("base"))
    check_config({}, src.where("base"))
    for a in m.axes:
        if a.kind in GRID_KINDS:
            for i, val in enumerate(a.values):
                where = src.where("axes", a.name, a.kind, i) if (("axes", a.name, a.kind, i) in src.lines) \
                    else src.where("axes", a.name, i)
                check_names(val, where)
                check_config(val, where)
        else:
            for end in (a.low, a.high - 1 if a.kind == "randint" else a.high):
                v = int(end) if a.kind == "randint" or isinstance(_defaults().get(a.key), int) else end
                check_config({a.key: v}, a.line)
    for i, ex in enumerate(m.exclude):
        check_names(ex, src.where("exclude", i))
    for c in m.constraints:
        for d in (c.when, c.set, c.require):
            check_names(d, c.line)
        if c.set:
            check_config(c.set, c.line)
