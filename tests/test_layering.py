"""The code's shape, checked: the import layering of pyproject.toml's [tool.importlinter] contract holds,
and vulture finds no dead code (tests/vulture_whitelist.py lists the names it cannot see used)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The dev tool's console script beside this Python (the venv's), else on PATH."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_import_layers_hold():
    p = _run([_tool("lint-imports"), "--no-cache"])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout


def test_no_dead_code():
    p = _run([_tool("vulture"), "--min-confidence", "80", "harness", "loaders", "architectures",
              "tests/vulture_whitelist.py"])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]


def test_no_import_circles():
    """No module imports itself through others, function-local imports included (grimp, import-linter's graph)."""
    import grimp

    graph = grimp.build_graph("harness", "loaders", "architectures", cache_dir=None)
    circles = []
    for m in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(m):
            back = graph.find_shortest_chain(importer=imported, imported=m)
            if back:
                circles.append(" -> ".join((m, *back)))
    assert not circles, "\n".join(circles[:10])
