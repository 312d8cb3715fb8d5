"""Checks of command-line values shared by the subcommands: one :class:`HarnessError` line naming the flag.

Every check runs before anything is loaded, started or written, so bad input costs nothing and
leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from harness.errors import HarnessError

#: Names that become folder names (sweeps, runs, jobs): no slashes, spaces or leading dots.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")


def _blocking_file(p: Path) -> Path | None:
    """The file that stands where ``p`` or one of its parents should be a folder, if any."""
    for q in (p, *p.parents):
        if q.exists():
            return None if q.is_dir() else q
    return None


def folder(flag: str, value: str | None, *, must_exist: bool = False) -> None:
    """A folder option: an existing path must be a folder, and no file may stand on the way to it.

    Raises:
        HarnessError: ``value`` (or a parent of it) is a file, or ``must_exist`` and it is absent.
    """
    if not value:
        return
    p = Path(value).expanduser()
    block = _blocking_file(p)
    if block == p:
        raise HarnessError(f"{flag} {value} is a file, not a folder")
    if block is not None:
        raise HarnessError(f"{flag} {value}: {block} is a file, not a folder")
    if must_exist and not p.is_dir():
        raise HarnessError(f"{flag} {value} does not exist")


def input_file(flag: str, value: str | None, what: str = "file") -> None:
    """An option naming a file to read: it must exist and be a file.

    Raises:
        HarnessError: ``value`` is absent or a folder.
    """
    if value is None:
        return
    p = Path(value).expanduser()
    if p.is_dir():
        raise HarnessError(f"{flag} {value} is a folder, not a {what}")
    if not p.is_file():
        raise HarnessError(f"{flag} {value}: no such {what}")


def output_file(flag: str, value: str | None, what: str = "file") -> None:
    """An option naming a file to write (or append to): not a folder, and no file where a parent goes.

    Raises:
        HarnessError: ``value`` is a folder, or a parent of it is a file.
    """
    if not value:
        return
    p = Path(value).expanduser()
    if p.is_dir():
        raise HarnessError(f"{flag} {value} is a folder; give the {what} to write")
    block = _blocking_file(p.parent)
    if block is not None:
        raise HarnessError(f"{flag} {value}: {block} is a file, not a folder")


def at_least(flag: str, value: float | None, low: float) -> None:
    """``value >= low`` (None passes: the option was not given)."""
    if value is not None and value < low:
        raise HarnessError(f"{flag} must be >= {low:g}, got {value:g}")


def positive(flag: str, value: float | None) -> None:
    """``value > 0`` (None passes)."""
    if value is not None and not value > 0:
        raise HarnessError(f"{flag} must be > 0, got {value:g}")


def comma_list(flag: str, value: str) -> list[str]:
    """The non-empty items of a comma list; at least one.

    Raises:
        HarnessError: the list is empty.
    """
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise HarnessError(f"{flag} is empty; give a comma list of names")
    return items


def names_in(flag: str, items: Iterable[str], registry: object) -> None:
    """Each item is a name of ``registry`` (a :class:`harness.registry.Registry`).

    Raises:
        HarnessError: ``FLAG: unknown <kind> 'x'; did you mean ...? (valid: ...)``.
    """
    for item in items:
        try:
            registry.get(item)  # type: ignore[attr-defined]
        except HarnessError as e:
            raise HarnessError(f"{flag}: {e}") from None


def safe_name(flag: str, value: str | None, what: str = "name") -> None:
    """A name that becomes a folder name: letters, digits and ``_ . = + -``, not starting with a dot.

    Raises:
        HarnessError: ``value`` is empty or holds other characters.
    """
    if value is None:
        return
    if not value:
        raise HarnessError(f"{flag} is empty; give a {what}")
    if not SAFE_NAME.fullmatch(value):
        raise HarnessError(f"{flag} '{value}': a {what} uses letters, digits and _ . = + - only, "
                           "starting with a letter or digit")
