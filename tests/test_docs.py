"""The README stays true: it names the two commands and lists every registered model."""

from __future__ import annotations

import re
from pathlib import Path

from architectures import list_models

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_every_model():
    text = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M))
    assert listed == set(list_models())


def test_readme_two_commands_and_ci_calls_make_test():
    text = (ROOT / "README.md").read_text()
    assert "make test" in text and "make bench" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M)
