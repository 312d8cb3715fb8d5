"""scripts/gpu-check.sh keeps working as the CLI changes: it parses, and every flag it gives `harness` exists."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from harness.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for a in parser._actions:
        out.update(s for s in a.option_strings if s.startswith("--"))
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out |= _options(sub)
    return out


def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_every_harness_flag_in_the_script_exists():
    text = SCRIPT.read_text()
    # The lines that call the CLI ($H ...) and the argument array they share, with continuation lines.
    calls = re.findall(r"(?:\$H |COMMON=\().*?(?<!\\)\n", text.replace("\\\n", " "))
    flags = {f for line in calls for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line)}
    assert {"--arch", "--compile", "--presets"} <= flags, "the script's calls were found"
    unknown = sorted(flags - _options(build_parser()))
    assert not unknown, f"scripts/gpu-check.sh passes flags harness does not know: {unknown}"


def test_script_imports_modules_that_exist():
    import importlib

    for mod in set(re.findall(r"^from (harness[\w.]*|loaders[\w.]*) import", SCRIPT.read_text(), re.M)):
        importlib.import_module(mod)


def test_script_times_speed94_to_94_percent():
    text = SCRIPT.read_text().replace("\\\n", " ")
    assert re.search(r"\$H bench speed --recipe speed94 --target 0\.94", text), "the speed-track step is there"
