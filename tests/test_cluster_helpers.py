"""harness.jobs without a cluster: the auth token lookup, the job wrapper and what it publishes,
storage round trips, the runtime_env checks, and the submit/results CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.jobs import collect, server, storage, submission, wrapper

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_auth(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_token_lookup_follows_rays_order(clean_auth, monkeypatch, tmp_path):
    assert server.auth_token() is None
    default = clean_auth / ".ray" / "auth_token"
    default.parent.mkdir(parents=True)
    default.write_text("from-default\n")
    assert server.auth_token() == "from-default"
    f = tmp_path / "tok"
    f.write_text("  from-path \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(f))
    assert server.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert server.auth_token() == "from-env"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert server.auth_token() is None


def test_token_errors_are_one_line(clean_auth, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(HarnessError, match="cannot be read"):
        server.auth_token()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "empty"))
    with pytest.raises(HarnessError, match="is empty"):
        server.auth_token()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(HarnessError, match="no token found"):
        server.auth_token()


def test_address(clean_auth, monkeypatch):
    assert server.normalize_address("127.0.0.1:8265") == "http://127.0.0.1:8265"
    assert server.normalize_address("https://head:8265/") == "https://head:8265"
    with pytest.raises(HarnessError, match="--address"):
        server.normalize_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not a job server
    with pytest.raises(HarnessError):
        server.normalize_address(None)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265")
    assert server.normalize_address(None) == "http://head:8265"
    with pytest.raises(HarnessError, match="http"):
        server.normalize_address("ray://head:10001")


def test_sweep_command_passes_paths_not_uris():
    assert submission.sweep_command(["--", "--matrix", "full"], "/mnt/shared")[-2:] == ["--storage", "/mnt/shared"]
    assert "--storage" not in submission.sweep_command(["--matrix", "full"], "s3://bucket/cnn")
    cmd = submission.sweep_command(["--matrix", "full", "--storage", "/a"], "/b")
    assert cmd.count("--storage") == 1 and cmd[:4] == ["python", "-m", "harness", "sweep"]
    line = submission.entrypoint("harness-1", cmd, "s3://b/c")
    assert line.startswith("python -m harness.jobs job --job-id harness-1 --storage s3://b/c -- python -m harness")


def _results(tmp_path: Path) -> Path:
    r = tmp_path / "results"
    (r / "docs" / "img").mkdir(parents=True)
    (r / "leaderboard.csv").write_text("dataset,arch,error\nsynthetic,mlp,\"two\nlines\"\n")
    (r / "docs" / "img" / "plot.png").write_bytes(bytes(range(256)) * 40)
    (r / "leaderboard.csv.lock").write_text("")
    return r


def test_publish_and_parse_round_trip(tmp_path):
    lines: list[str] = []
    rels = wrapper.publish(_results(tmp_path), "job-1", None, out=lines.append)
    assert rels == ["docs/img/plot.png", "leaderboard.csv"]  # locks are not results
    log = "noise before\n" + "\n".join(lines) + "\nnoise after\n"
    files = wrapper.parse_published(log)
    assert files["leaderboard.csv"] == (tmp_path / "results" / "leaderboard.csv").read_bytes()
    assert files["docs/img/plot.png"] == bytes(range(256)) * 40
    assert wrapper.parse_published("no markers") == {}


def test_parse_detects_a_damaged_log(tmp_path):
    lines: list[str] = []
    wrapper.publish(_results(tmp_path), "job-1", None, out=lines.append)
    i = next(i for i, line in enumerate(lines) if line.startswith("@@harness-file leaderboard.csv")) + 1
    lines[i] = ("B" if lines[i][0] != "B" else "C") + lines[i][1:]
    with pytest.raises(HarnessError, match="damaged"):
        wrapper.parse_published("\n".join(lines))


@pytest.mark.parametrize("uri", [False, True])
def test_storage_round_trip(tmp_path, uri):
    shared = tmp_path / "shared"
    where = f"file://{shared}" if uri else str(shared)
    lines: list[str] = []
    wrapper.publish(_results(tmp_path), "job-2", where, out=lines.append)
    assert (shared / "harness-results" / "job-2" / "leaderboard.csv").is_file()
    got = storage.read_storage(where, "job-2")
    assert set(got) == {"leaderboard.csv", "docs/img/plot.png"}
    assert storage.read_storage(where, "other-job") == {}
    written = collect.write_files(got, tmp_path / "dest")
    assert (tmp_path / "dest" / "docs" / "img" / "plot.png") in written
    with pytest.raises(HarnessError, match="outside"):
        collect.write_files({"../escape.csv": b"x"}, tmp_path / "dest")


def test_job_wrapper_runs_the_command_and_publishes(tmp_path):
    """The job side, without Ray: the wrapped command sees its own results folder; its files come back."""
    script = ("import os, pathlib, sys; d = pathlib.Path(os.environ['HARNESS_RESULTS_DIR']); "
              "(d / 'leaderboard.csv').write_text('arch\\nmlp\\n'); "
              "print('docs ->', os.environ['HARNESS_DOCS_DIR']); sys.exit(3)")
    shared = tmp_path / "shared"
    p = subprocess.run([sys.executable, "-m", "harness.jobs", "job", "--job-id", "job-3", "--storage", str(shared),
                        "--", sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr  # the sweep's exit status is the job's
    assert (tmp_path / "results" / "job-3" / "leaderboard.csv").is_file()
    assert f"docs -> {tmp_path / 'results' / 'job-3' / 'docs'}" in p.stdout
    assert wrapper.parse_published(p.stdout) == {"leaderboard.csv": b"arch\nmlp\n"}
    assert storage.read_storage(str(shared), "job-3") == {"leaderboard.csv": b"arch\nmlp\n"}


def test_runtime_env_checks(tmp_path, monkeypatch):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  WANDB_API_KEY: abc\n")
    with pytest.raises(HarnessError, match="look like secrets"):
        submission.load_runtime_env(env_file, tmp_path)
    env_file.write_text("excludes: [data/]\n")
    monkeypatch.setenv("MY_SETTING", "42")
    env = submission.load_runtime_env(env_file, tmp_path, ["MY_SETTING"])
    assert env["env_vars"] == {"MY_SETTING": "42"} and env["working_dir"] == str(tmp_path.resolve())
    with pytest.raises(HarnessError, match="not set"):
        submission.load_runtime_env(env_file, tmp_path, ["SURELY_UNSET_VARIABLE_X"])
    env_file.write_text("pip: 3\n")
    with pytest.raises(HarnessError, match="Ray rejects"):
        submission.load_runtime_env(env_file, tmp_path)
    with pytest.raises(HarnessError, match="not found"):
        submission.load_runtime_env(tmp_path / "nope.yaml", tmp_path)


def _harness(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


def test_submit_cli_errors_are_one_line():
    p = _harness("submit", "--address", "http://127.0.0.1:9")
    assert p.returncode == 2 and "give the sweep's arguments after --" in p.stderr and len(p.stderr.splitlines()) == 1
    p = _harness("submit", "--address", "http://127.0.0.1:9", "--", "--matrix", "cluster/smoke-matrix.yaml")
    assert p.returncode == 2 and "cannot reach the Ray job server at http://127.0.0.1:9" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_dry_run_prints_the_plain_ray_line():
    p = _harness("submit", "--address", "127.0.0.1:8265", "--job-id", "harness-x", "--dry-run", "--",
                 "--matrix", "cluster/smoke-matrix.yaml")
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip()
    assert "ray job submit --address http://127.0.0.1:8265 --submission-id harness-x --working-dir . " \
           "--runtime-env cluster/runtime_env.yaml" in line
    assert line.endswith("-- python -m harness.jobs job --job-id harness-x -- "
                         "python -m harness sweep --matrix cluster/smoke-matrix.yaml")
