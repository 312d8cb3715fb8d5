"""One declaration per option: :func:`knob` puts a dataclass field's metadata beside its type and default.

The run's config (:mod:`harness.run.config`) and a sweep's settings (:mod:`harness.sweep.settings`) declare
every option once, as a field: its annotation is the type, and ``knob(...)`` adds the help text, the
range (``ge``/``gt``/``le``/``lt``, closed or open bounds) or the fixed choices, the registry its value is
looked up in, the command-line flag and the sweep axis alias. The command-line parsers, ``--help``, the
matrices' axis names and the range and choice checks are all derived from that declaration (after
ffcv-imagenet's config schema), so adding an option is one edit plus its use.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Identity of a key: does changing it make a different configuration (a different leaderboard row)?
RESULT = "result"  # yes: part of config_id and config_hash
REPLICATE = "replicate"  # a replicate of the same configuration (seed, fold): config_hash only
NONE = "none"  # no: where things run or go, what is only measured or shown


def knob(default: Any = None, help: str = "", *, flag: str | None = None, axis: str | None = None,  # noqa: A002
         ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
         choices: tuple[str, ...] = (), registry: str | None = None, identity: str = RESULT, sweep: bool = False,
         resume: bool = False, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its metadata, read by the CLI, ``--help``, validation, matrices and the config hash.

    Args:
        default: the default value (or ``factory`` for mutable defaults).
        help: one line for ``--help`` and the docs.
        flag: the command-line flag that sets it (``--lr``); a boolean's flag takes no value and sets it to
            true, or to false when the flag starts with ``--no-``. Without one: ``--set KEY=VALUE``.
        axis: the short name a sweep matrix may use for it (``lr`` for ``optim.lr``).
        ge, gt, le, lt: bounds of a number (>=, >, <=, <); None (unset) always passes.
        choices: the fixed set of valid values, where there is no registry.
        registry: the registry kind its value is looked up in (see :func:`harness.run.names.registry_names`).
        identity: RESULT, REPLICATE or NONE (see above).
        sweep: the sweep owns this key (seeds, folds, resources, paths): a matrix may not set it.
        resume: it may be given again when resuming (how the run is shown, where it reads or writes):
            it does not change what runs.
    """
    md = {"help": help, "flag": flag, "axis": axis, "bounds": (ge, gt, le, lt), "choices": choices,
          "registry": registry, "identity": identity, "sweep": sweep, "resume": resume}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass(frozen=True)
class FieldInfo:
    """One leaf of a dataclass tree, with its metadata (see :func:`knob`)."""

    key: str  # dotted, e.g. "optim.lr"
    type: Any
    default: Any
    help: str
    registry: str | None
    choices: tuple[str, ...]
    identity: str
    sweep: bool
    flag: str | None = None
    axis: str | None = None
    bounds: tuple[float | None, float | None, float | None, float | None] = (None, None, None, None)
    resume: bool = False


def walk(cls: type, prefix: str = "") -> list[FieldInfo]:
    """The leaves of dataclass ``cls`` (nested dataclasses are walked, keys dotted), in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[FieldInfo] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += walk(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        md = f.metadata
        out.append(FieldInfo(prefix + f.name, tp, default, md.get("help", ""), md.get("registry"),
                             tuple(md.get("choices", ())), md.get("identity", RESULT), bool(md.get("sweep")),
                             md.get("flag"), md.get("axis"), md.get("bounds", (None,) * 4), bool(md.get("resume"))))
    return out


def base_type(tp: Any) -> Any:
    """The annotation without its ``None``: ``int | None`` -> ``int``; ``int | float`` stays a union."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return functools.reduce(operator.or_, args)
    return tp


def _num(x: float) -> str:
    return f"{x:g}"


def range_text(f: FieldInfo) -> str:
    """The declared range in words: ``>= 1``, ``> 0``, ``in [0, 1)``, ``in 1..4`` (closed integers); '' if none."""
    ge, gt, le, lt = f.bounds
    lo = (ge, "[", ">=") if ge is not None else (gt, "(", ">") if gt is not None else None
    hi = (le, "]", "<=") if le is not None else (lt, ")", "<") if lt is not None else None
    if lo and hi:
        if base_type(f.type) is int and lo[1] == "[" and hi[1] == "]":
            return f"in {_num(lo[0])}..{_num(hi[0])}"
        return f"in {lo[1]}{_num(lo[0])}, {_num(hi[0])}{hi[1]}"
    if lo or hi:
        bound, _, op = lo or hi
        return f"{op} {_num(bound)}"
    return ""


def problem(f: FieldInfo, value: Any) -> str | None:
    """What is wrong with ``value`` for the option ``f`` (``must be >= 1, got 0``), or None.

    Only the declared range and choices are checked here; the type is the parser's, and checks that
    involve other options belong to the caller.
    """
    if value is None or isinstance(value, bool):
        return None
    if f.choices and value not in f.choices:
        return f"must be {', '.join(f.choices[:-1])} or {f.choices[-1]}, got '{value}'"
    ge, gt, le, lt = f.bounds
    if isinstance(value, (int, float)) and not (
            (ge is None or value >= ge) and (gt is None or value > gt)
            and (le is None or value <= le) and (lt is None or value < lt)):
        return f"must be {range_text(f)}, got {value}"
    return None
