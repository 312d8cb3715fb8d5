"""Shipped recipes: YAML configs of published training recipes, looked up by name (``harness run --recipe``).

Each file cites the paper or post and figure it comes from in its header comment. ``RECIPES`` maps a
name (the file's stem) to its path; ``harness list recipes`` shows them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from harness.registry import Registry

RECIPES: Registry[Path] = Registry("recipe")
for _f in sorted(resources.files(__name__).iterdir(), key=lambda f: f.name):
    if _f.name.endswith(".yaml"):
        RECIPES.register(_f.name[: -len(".yaml")], Path(str(_f)))


def recipe_path(name: str) -> Path:
    """The YAML file of recipe ``name``.

    Raises:
        HarnessError: unknown name (naming the closest ones and every recipe).
    """
    return RECIPES.get(name)


def recipe_note(name: str) -> str:
    """The recipe's header comment (where it comes from), one paragraph."""
    lines = []
    for line in recipe_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)
