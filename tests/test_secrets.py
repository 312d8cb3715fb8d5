"""A W&B API key never appears in results, configs, run directories or logs.

The end-to-end check runs a real sweep (Ray Tune, W&B in offline mode so nothing leaves the machine)
with ``WANDB_API_KEY=dummy-secret-123`` in its environment, everything it writes confined to one temp
dir (results, sweep storage, run directories, W&B's offline files, docs, Ray's temp dir with its
session logs, the cache), and greps every byte of it, plus the sweep's own output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SECRET = "dummy-secret-123"


def _leaks(root: Path) -> list[str]:
    """Every file under ``root`` that holds the secret, with the first line that does."""
    hits = []
    needle = SECRET.encode()
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        try:
            data = p.read_bytes()
        except OSError:
            continue
        if needle in data:
            line = next(ln for ln in data.splitlines() if needle in ln)
            hits.append(f"{p.relative_to(root)}: {line[:200].decode(errors='replace')}")
    return hits


@pytest.mark.slow
def test_sweep_writes_the_wandb_key_nowhere():
    # AF_UNIX socket paths are capped at 107 bytes: a short root under /tmp.
    root = Path(tempfile.mkdtemp(prefix="hs", dir="/tmp"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "WANDB_", "HARNESS_"))}
        env["HARNESS_PROBE"] = "off"  # auto is fp32 NCHW without a probe, as in the whole suite
        env.update({"WANDB_API_KEY": SECRET, "RAY_TMPDIR": str(root / "ray"), "HARNESS_RESULTS_DIR": str(root / "results"),
                    "HARNESS_CACHE_DIR": str(root / "cache"), "HARNESS_SWEEPS_DIR": str(root / "sweeps"),
                    "HARNESS_DOCS_DIR": str(root / "docs"), "WANDB_DIR": str(root / "wandb"),
                    "WANDB_CACHE_DIR": str(root / "wandb-cache"), "WANDB_CONFIG_DIR": str(root / "wandb-config"),
                    "TMPDIR": str(root / "tmp")})
        (root / "tmp").mkdir()
        proc = subprocess.run([sys.executable, "-m", "harness", "sweep", "--matrix", str(REPO / "cluster/smoke-matrix.yaml"),
                               "--wandb", "offline", "--num-cpus", "2", "--max-concurrent", "2"],
                              cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        # Not vacuous: the sweep did log to W&B (offline runs exist) and wrote its leaderboard.
        assert list(root.rglob("offline-run-*")), "no offline W&B runs: the sweep never used the key"
        assert (root / "results" / "leaderboard.csv").is_file()
        assert list((root / "ray").rglob("*.log")), "no Ray session logs to check"
        assert SECRET not in proc.stdout + proc.stderr
        leaks = _leaks(root)
        assert not leaks, "the W&B key was written to:\n" + "\n".join(leaks)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_committed_cluster_files_hold_no_key():
    for p in sorted((REPO / "cluster").iterdir()):
        text = p.read_text()
        if p.suffix == ".yaml":
            for doc in yaml.safe_load_all(text):
                _no_literal_key(doc, p.name)


def _no_literal_key(node, where: str) -> None:
    if isinstance(node, dict):
        if node.get("name") == "WANDB_API_KEY":
            assert "value" not in node, f"{where}: WANDB_API_KEY with a literal value"
        for k, v in node.items():
            if k == "WANDB_API_KEY":
                raise AssertionError(f"{where}: WANDB_API_KEY set in the file")
            _no_literal_key(v, where)
    elif isinstance(node, list):
        for v in node:
            _no_literal_key(v, where)


def test_submit_never_prints_a_forwarded_key(tmp_path):
    env = {**os.environ, "WANDB_API_KEY": SECRET}
    env.pop("RAY_ADDRESS", None)
    for extra in (["--dry-run"], []):
        p = subprocess.run([sys.executable, "-m", "harness", "submit", "--address", "http://127.0.0.1:9",
                            "--forward-env", "WANDB_API_KEY", *extra, "--", "--matrix", "cluster/smoke-matrix.yaml"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert SECRET not in p.stdout + p.stderr
        assert p.returncode == (0 if extra else 2), p.stderr
    assert "runtime_env_agent.log" in p.stderr  # the caveat of forwarding a secret is said
