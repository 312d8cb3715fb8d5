"""A name -> object registry, one per kind of thing (models, datasets, loaders, strategies, ...).

Every lookup by name goes through :meth:`Registry.get`, which raises a :class:`HarnessError`
naming the closest valid choices, so a typo never falls through to a deep stack trace.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


def suggest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``choices`` that look most like ``name``."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        # Prefix matches catch cases like "resnet" -> resnet20, resnet32, ...
        close = [c for c in choices if c.startswith(name[:4])][:n]
    return close


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """One line saying ``name`` is not a valid ``kind``, with the closest and the valid choices."""
    close = suggest(name, choices)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(choices) if len(choices) <= 40 else ", ".join(choices[:40]) + ", ..."
    return f"unknown {kind} '{name}'{hint} (valid: {shown})"


class Registry(Generic[T]):
    """Maps names to objects of one kind; lookups of unknown names raise a helpful error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""

        def add(o: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """Look ``name`` up.

        Raises:
            HarnessError: ``name`` is not registered; the message names the closest choices.
        """
        try:
            return self._items[name]
        except KeyError:
            raise HarnessError(unknown_name_message(self.kind, str(name), self.names())) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the glob ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
