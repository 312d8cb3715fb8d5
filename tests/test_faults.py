"""Faults that must lose nothing: kill -9 during a leaderboard merge, a full disk, corrupt checkpoints.

The rest of the fault matrix (docs/faults.md) is covered where its subject is tested: interrupted
runs in test_resume.py, sweeps in test_sweep.py, a killed Ray worker in test_ddp.py, changed dataset
files in test_datasets.py, the job server in test_cluster_job.py.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.results_csv import merge_rows, read_rows
from harness.run.config import RunConfig, apply_overrides
from harness.run.trainer import fit

COLUMNS = ["key", "value", "pad"]
# A child that merges one of two full versions of a CSV, over and over, until it is killed.
_WRITER = """
import sys
from harness.results_csv import merge_rows
path, n = sys.argv[1], int(sys.argv[2])
i = 0
while True:
    tag = "ab"[i % 2]
    merge_rows(path, [{"key": k, "value": tag, "pad": "x" * 200} for k in range(n)], ["key", "value", "pad"],
               lambda r: (str(r["key"]),))
    i += 1
"""


def test_kill_9_during_merges_leaves_the_old_or_the_new_csv(tmp_path):
    """SIGKILL while a merge is writing: the file is still all of one version, never partial or mixed.

    The kill comes at a known point, not after a guessed sleep: the merge writes a temp file beside the CSV and
    renames it over; the child is killed as soon as that temp file exists, and a temp file left behind after the
    kill proves the write was cut (a round whose rename won the race is counted apart).
    """
    path, n = tmp_path / "leaderboard.csv", 3000  # ~600 kB: a write takes long enough to be cut
    merge_rows(path, [{"key": k, "value": "b", "pad": "x" * 200} for k in range(n)], COLUMNS, lambda r: (str(r["key"]),))
    cut = 0
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)])
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f".{path.name}.*.tmp")):  # the merge's own temp file: it is writing now
            assert p.poll() is None and time.monotonic() < deadline, "the writer never started a write"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        left = list(tmp_path.glob(f".{path.name}.*.tmp"))
        cut += bool(left)
        rows = read_rows(path)
        assert len(rows) == n and list(rows[0]) == COLUMNS, "never a partial file"
        assert len({r["value"] for r in rows}) == 1, "all of one version, never a mix"
        for t in left:
            t.unlink()
    assert cut >= 3, f"only {cut} of 6 kills landed mid-write"


def _tiny_run(tmp_path: Path) -> Path:
    cfg = apply_overrides(RunConfig(), {"data.dataset": "synthetic", "data.synthetic_size": 128,
                                        "model.arch": "tiny_cnn", "train.epochs": 1, "train.progress": False,
                                        "train.measure_inference": False, "out": str(tmp_path / "runs")})
    return Path(fit(cfg).run_dir)


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_no_space_left_is_one_line_and_keeps_earlier_results(tmp_path):
    _tiny_run(tmp_path)
    results, docs = tmp_path / "results", tmp_path / "docs"
    cmd = [sys.executable, "-m", "harness", "leaderboard", "--from", str(tmp_path / "runs"), "--results-dir",
           str(results), "--docs-dir", str(docs)]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    before = {p.name: p.read_bytes() for p in results.glob("*.csv")}
    assert "leaderboard.csv" in before
    _tiny_run(tmp_path)  # a second run: the merge now has more to write
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size(256))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in results.glob("*.csv")} == before, "earlier results intact"


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_corrupt_checkpoint_refused_by_init_from_in_one_line(tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(b"PK\x03\x04 truncated")
    r = subprocess.run([sys.executable, "-m", "harness", "run", "--dataset", "synthetic", "--arch", "tiny_cnn",
                        "--strategy", "finetune", "--init-from", str(src), "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{name} is not a readable checkpoint" in lines[0], r.stderr
    assert not (tmp_path / "runs").exists(), "nothing written"
