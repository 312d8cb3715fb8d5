"""docs/faults.md promises a test for every fault: each test id it names must exist in this suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_fault_matrix_names_exists():
    text = (ROOT / "docs" / "faults.md").read_text()
    ids = set(re.findall(r"`(tests/test_\w+\.py::[^`]+)`", text))
    # "`tests/x.py::test_a[one]`, `[two]`": a bare `[id]` continues the test named just before it.
    for first, rest in re.findall(r"`(tests/test_\w+\.py::\w+)\[[^`]+\]`((?:, `\[[^`]+\]`)+)", text):
        ids |= {f"{first}{m}" for m in re.findall(r"`(\[[^`]+\])`", rest)}
    assert len(ids) >= 15, "the fault matrix lists its tests"
    files = sorted({i.split("::")[0] for i in ids})
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                         cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    collected = {line.strip() for line in out.splitlines() if "::" in line}
    missing = sorted(i for i in ids if i not in collected and not any(c.startswith(i + "[") for c in collected))
    assert not missing, f"docs/faults.md names tests that do not exist: {missing}"
