"""scripts/gpu-check.sh keeps working as the CLI changes: it parses, every flag it gives `harness` exists, and
its dry run (DRY_RUN=1, on the CPU) has every step in the order, the time boxes and the summary it promises."""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
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
    # The lines that call the CLI ($H ...) and the argument arrays they share, with continuation lines.
    calls = re.findall(r"(?:\$H |\b[A-Z_]+=\().*?(?<!\\)\n", text.replace("\\\n", " "))
    flags = {f for line in calls for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line)}
    assert {"--arch", "--compile", "--presets", "--deterministic", "--optimizer"} <= flags, "the calls were found"
    unknown = sorted(flags - _options(build_parser()))
    assert not unknown, f"scripts/gpu-check.sh passes flags harness does not know: {unknown}"


def test_script_imports_modules_that_exist():
    import importlib

    for mod in set(re.findall(r"^from (harness[\w.]*|loaders[\w.]*) import", SCRIPT.read_text(), re.M)):
        importlib.import_module(mod)


def test_script_times_speed94_to_94_percent():
    text = SCRIPT.read_text().replace("\\\n", " ")
    assert re.search(r"\$H bench speed --recipe speed94 --target 0\.94", text), "the speed-track step is there"


# What a call cut short must still have, in this order (the script's header says why).
FIRST = ["install", "import", "data", "compile-r9", "bench-speed94",
         "probe-fp16", "probe-layout", "probe-muon", "probe-det", "probe-det-refused"]
DEVICE_LIMIT_S = 540  # what the device call runs the script under


def _dry_run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "GPU_CHECK_", "DRY_"))}
    e.update(DRY_RUN="1", OUT=str(tmp_path / "out"), PYTHON=sys.executable, **env)
    r = subprocess.run(["bash", str(SCRIPT)], cwd=SCRIPT.parents[1], env=e, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "out" / "summary.tsv") as fh:
        return r, list(csv.DictReader(fh, delimiter="\t"))


def test_dry_run_has_the_important_steps_first_and_the_table_last(tmp_path):
    r, rows = _dry_run(tmp_path)
    names = [x["step"] for x in rows]
    assert names[:len(FIRST)] == FIRST
    assert {"bench-overhead", "gpu-sanity", "run-r9-auto", "sync-probe", "bench-loaders"} <= set(names[len(FIRST):])
    assert {x["status"] for x in rows if x["step"] != "ray-r9-w1"} == {"DRY"}, rows
    lines = r.stdout.rstrip().splitlines()
    assert lines[-1].startswith(names[-1]) and all(any(ln.startswith(n + " ") for ln in lines) for n in names)
    assert r.stdout.rstrip().endswith((tmp_path / "out" / "summary.txt").read_text().rstrip())


def test_dry_run_probes_what_the_issue_asks(tmp_path):
    _, rows = _dry_run(tmp_path)
    note = {x["step"]: x["note"] for x in rows}
    assert "--precision fp16" in note["probe-fp16"]
    assert "--set data.layout=airbench" in note["probe-layout"] and "--loader tensor" in note["probe-layout"]
    assert re.search(r"--precision (bf16|fp16)", note["probe-layout"])
    assert "--optimizer muon" in note["probe-muon"]
    assert "--deterministic" in note["probe-det"] and "--arch resnet20" in note["probe-det"]
    assert re.search(r"expect_exit\.py 2 harness run --arch tv_vgg16 .*--deterministic", note["probe-det-refused"])
    for probe in FIRST[5:]:
        assert "--epochs 1 " in note[probe], probe
    assert "--n-train 45000" in note["bench-overhead"]


def test_dry_run_time_boxes_fit_the_device_call(tmp_path):
    r, rows = _dry_run(tmp_path)
    budget, worst = map(int, re.search(r"of a (\d+)s budget \(worst case (\d+)s\)", r.stdout).groups())
    caps = {x["step"]: int(x["cap_s"]) for x in rows}
    assert sum(caps[n] for n in FIRST) <= budget, "the important steps all get their full time box"
    assert budget < worst < DEVICE_LIMIT_S


def test_a_failing_step_does_not_stop_the_rest(tmp_path):
    _, rows = _dry_run(tmp_path, DRY_FAIL_STEP="compile-r9")
    status = {x["step"]: x["status"] for x in rows}
    assert status["compile-r9"] == "FAIL(1)"
    assert status["bench-speed94"] == status["probe-det-refused"] == status["bench-loaders"] == "DRY"


def _helper(tmp_path: Path, name: str) -> Path:
    """One of the Python helpers the script writes into $WORK (a heredoc), as a file."""
    body = re.search(rf">\"\$WORK/{re.escape(name)}\" <<'EOF'\n(.*?)\nEOF\n", SCRIPT.read_text(), re.S)
    path = tmp_path / name
    path.write_text(body.group(1))
    return path


def test_the_refusal_check_wants_the_exit_code_and_one_line(tmp_path):
    helper = _helper(tmp_path, "expect_exit.py")

    def verdict(code: str) -> int:
        return subprocess.run([sys.executable, str(helper), "2", sys.executable, "-c", code],
                              capture_output=True).returncode

    assert verdict("import sys; sys.exit('harness: error: refused')") == 1, "exit 1 is not the refusal"
    assert verdict("import sys; sys.stderr.write('harness: error: refused\\n'); sys.exit(2)") == 0
    assert verdict("import sys; sys.stderr.write('a\\nb\\n'); sys.exit(2)") == 1, "two lines are not one"
    assert verdict("pass") == 1, "a run that trains is not refused"


def test_a_probe_row_says_what_the_run_resolved_to(tmp_path):
    from harness.bench.overhead import run_overrides
    from harness.run.config import RunConfig, apply_overrides
    from harness.run.trainer import fit

    s = fit(apply_overrides(RunConfig(), {**run_overrides("tiny_cnn", 128, 64, 1, 0), "out": str(tmp_path / "runs")}))
    log = tmp_path / "probe-x.log"
    log.write_text(f"training...\n{s.run_dir}\n")
    out = subprocess.run([sys.executable, str(_helper(tmp_path, "runinfo.py")), str(log), "probe-x",
                          str(tmp_path / "runs.csv"), str(tmp_path / "keep")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"prec={s.precision}" in out.stdout and "epochs=1" in out.stdout
    assert "optim=sgd layout=uint8 deterministic=False" in out.stdout
    with open(tmp_path / "runs.csv") as fh:
        assert [r["step"] for r in csv.DictReader(fh)] == ["probe-x"]
