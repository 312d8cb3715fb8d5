"""Cluster mode: a sweep submitted as a Ray job, and its leaderboards brought back.

The pieces, used by ``harness submit`` and ``harness results`` (:mod:`harness.commands.cluster_cmd`):

- **Auth.** Ray 2.60 turns token authentication on; the job server then answers 401 without an
  ``Authorization: Bearer <token>`` header. :func:`auth_token` finds the token where Ray itself looks
  (``RAY_AUTH_TOKEN``, then the file in ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``), and
  :func:`job_client` sends it explicitly, so the CLI works whether or not ``RAY_AUTH_MODE=token`` is
  exported locally. The token is never printed.
- **The job wrapper.** The job's entrypoint is
  ``python -m harness.cluster job --job-id ID [--storage URI] -- python -m harness sweep ...``. It gives
  the sweep a results folder of its own (jobs that upload identical code share one unpacked working
  directory on the head), runs the sweep unchanged, then *publishes* what the sweep wrote: into the
  job's log, base64 between markers (no shared filesystem needed), and, with ``--storage``, to
  ``<storage>/harness-results/<job id>/`` through ``pyarrow.fs`` (a local or NFS path, ``file://``,
  ``s3://`` or ``gs://``).
- **Collection.** :func:`collect` reads those files back from the storage, or else from the job's log.

Secrets: nothing here puts an API key in the runtime_env unless the user asks for it by name
(``--forward-env``), because Ray's runtime_env agent logs every runtime_env, values included, in
``runtime_env_agent.log`` on the node. ``cluster/README.md`` describes the leak-free way (a secret
set on the cluster's nodes).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: Where ``harness submit`` finds the runtime_env, relative to the working directory it uploads.
RUNTIME_ENV_FILE = "cluster/runtime_env.yaml"
#: Subfolder of ``--storage`` that receives the published results, one folder per job.
STORAGE_SUBDIR = "harness-results"
#: Job metadata key that remembers ``--storage``, so ``harness results`` needs only the job id.
META_STORAGE = "harness_storage"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

_BEGIN = "@@harness-results begin"
_FILE = "@@harness-file"
_END = "@@harness-results end"
_LOG_PAYLOAD_LIMIT = 32 * 1024 * 1024  # bytes of results echoed into the job log; more goes to storage only
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Auth and the job client

def auth_token() -> str | None:
    """The Ray auth token for this client, looked up as Ray does; None when there is none to send.

    Order: ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.
    ``RAY_AUTH_MODE=disabled`` sends nothing.

    Raises:
        HarnessError: ``RAY_AUTH_TOKEN_PATH`` names an unreadable or empty file, or
            ``RAY_AUTH_MODE=token`` is set and no token exists.
    """
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return None
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as e:
            raise HarnessError(f"RAY_AUTH_TOKEN_PATH={path} cannot be read ({e.strerror})") from None
        if not token:
            raise HarnessError(f"RAY_AUTH_TOKEN_PATH={path} is empty")
        return token
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        token = default.read_text().strip()
        if token:
            return token
    if mode == "token":
        raise HarnessError("RAY_AUTH_MODE=token but no token found: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, "
                           "or put the cluster's token in ~/.ray/auth_token")
    return None


def normalize_address(address: str | None) -> str:
    """``http://HOST:PORT`` for the job server; a bare ``HOST:PORT`` gets ``http://``.

    Raises:
        HarnessError: no address given and none in ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``.
    """
    if not address:
        for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            value = os.environ.get(var, "")
            if value.startswith(("http://", "https://")):
                address = value
                break
    if not address:
        raise HarnessError("no job server address: pass --address http://HEAD:8265 (the dashboard port)")
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        raise HarnessError(f"--address must be the dashboard's http(s)://HOST:PORT, got '{address}'")
    return address.rstrip("/")


#: Seconds a job server may take to answer one request (``$HARNESS_JOB_SERVER_TIMEOUT``); connecting
#: gets at most 10 of them. Ray's client waits forever by default: a hung server would hang the CLI.
DEFAULT_SERVER_TIMEOUT_S = 60.0
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def server_timeout() -> tuple[float, float]:
    """``(connect, read)`` seconds for each request to the job server.

    Raises:
        HarnessError: ``$HARNESS_JOB_SERVER_TIMEOUT`` is not a positive number.
    """
    raw = os.environ.get("HARNESS_JOB_SERVER_TIMEOUT", "").strip()
    try:
        t = float(raw) if raw else DEFAULT_SERVER_TIMEOUT_S
    except ValueError:
        t = -1.0
    if not t > 0:
        raise HarnessError(f"HARNESS_JOB_SERVER_TIMEOUT must be a number of seconds > 0, got '{raw}'")
    return min(10.0, t), t


def check_job_id(flag: str, job_id: str) -> None:
    """A job id as ``harness submit`` makes them (and Ray's own): it names folders, so no slashes or spaces.

    Raises:
        HarnessError: empty, or characters other than letters, digits and ``_ . -`` (or a leading ``.``).
    """
    if not job_id:
        raise HarnessError(f"{flag} is empty: give the job id that harness submit printed (its last line)")
    if not _JOB_ID.fullmatch(job_id):
        raise HarnessError(f"{flag} '{job_id}' is not a job id: letters, digits and _ . - only, starting with a "
                           "letter or digit (harness submit prints the id as its last line)")


def job_client(address: str) -> Any:
    """A ``JobSubmissionClient`` for ``address`` that carries the auth token, if there is one.

    Every request it sends gives up after :func:`server_timeout` seconds instead of waiting forever.

    Raises:
        HarnessError: the server cannot be reached, or rejects the token.
    """
    from ray.job_submission import JobSubmissionClient

    timeout = server_timeout()

    class BoundedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super()._do_request(method, endpoint, **kwargs)

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # Ray lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address argument; --address must win.
    os.environ["RAY_API_SERVER_ADDRESS"] = address
    try:
        return BoundedJobSubmissionClient(address, headers=headers)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or AuthenticationError
        raise HarnessError(_client_error(address, e, bool(token))) from None


def ask(client: Any, job_id: str, method: str, *args: Any) -> Any:
    """``client.<method>(job_id, *args)``, with the server's failures as one line in the harness's words.

    Raises:
        HarnessError: ``no job 'X' on ADDRESS`` for an unknown id; the server's reason otherwise, or that
            the server stopped answering.
    """
    address = getattr(client, "_address", None) or "the job server"
    try:
        return getattr(client, method)(job_id, *args)
    except RuntimeError as e:  # Ray: "Request failed with status code 404: Job X does not exist."
        text = str(e).strip()
        if "status code 404" in text or "does not exist" in text:
            raise HarnessError(f"no job '{job_id}' on {address}") from None
        first = text.splitlines()[0] if text else type(e).__name__
        raise HarnessError(f"job {job_id} on {address}: {first}") from None
    except OSError as e:  # requests' ConnectionError, Timeout (the server went away or hangs)
        if "timed out" in str(e).lower():
            raise HarnessError(f"the Ray job server at {address} did not answer within {server_timeout()[1]:g} s "
                               "(HARNESS_JOB_SERVER_TIMEOUT)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"lost the Ray job server at {address} ({first})") from None
    except Exception as e:  # noqa: BLE001 - e.g. Ray's AuthenticationError (a token that expired meanwhile)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"job {job_id} on {address}: {first}") from None


def _client_error(address: str, e: BaseException, sent_token: bool) -> str:
    text = str(e)
    if "401" in text or "Missing authentication token" in text:
        return (f"{address} requires a Ray auth token and none was found: set RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH, or copy the cluster's token to ~/.ray/auth_token")
    if "403" in text or "Invalid authentication token" in text or "invalid or incorrect" in text:
        where = "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token"
        return f"{address} rejected the auth token from {where}" if sent_token else f"{address}: {text.splitlines()[0]}"
    if "timed out" in text.lower():
        return (f"the Ray job server at {address} did not answer within {server_timeout()[1]:g} s "
                "(HARNESS_JOB_SERVER_TIMEOUT); is the address the dashboard's?")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"cannot reach the Ray job server at {address} ({first})"


# ---------------------------------------------------------------------------------------------
# What gets submitted

def new_job_id() -> str:
    """``harness-<UTC yyyymmdd-HHMMSS>-<4 hex>``: sortable, and unique enough to name folders."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"harness-{stamp}-{secrets.token_hex(2)}"


def is_uri(storage: str) -> bool:
    """True for ``s3://``, ``gs://``, ``file://`` ...; False for a plain (local or NFS) path."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", storage))


def load_runtime_env(path: str | Path, working_dir: str | Path, forward_env: list[str] | None = None) -> dict:
    """The job's runtime_env: the YAML file, ``working_dir`` set, and the named local variables forwarded.

    Args:
        path: the runtime_env YAML (``cluster/runtime_env.yaml``).
        working_dir: the local folder uploaded as the job's working directory.
        forward_env: names of local environment variables to copy into ``env_vars``.

    Returns:
        A dict that ``ray.runtime_env.RuntimeEnv`` accepts.

    Raises:
        HarnessError: the file is missing or malformed, holds what looks like a secret, names an
            unset variable, or Ray rejects it.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"runtime_env file not found: {p}")
    try:
        env = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise HarnessError(f"{p}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(env, dict):
        raise HarnessError(f"{p}: expected a mapping at the top level")
    env_vars = {str(k): str(v) for k, v in (env.get("env_vars") or {}).items()}
    committed_secrets = [k for k, v in env_vars.items() if _SECRET_NAME.search(k) and "${" not in v]
    if committed_secrets:
        raise HarnessError(f"{p}: env_vars {', '.join(committed_secrets)} look like secrets; never commit them "
                           "(forward them with --forward-env, or set them on the cluster's nodes)")
    for name in forward_env or []:
        if name not in os.environ:
            raise HarnessError(f"--forward-env {name}: it is not set in this shell")
        env_vars[name] = os.environ[name]
    wd = Path(working_dir).expanduser().resolve()
    if not wd.is_dir():
        raise HarnessError(f"working directory not found: {wd}")
    env["working_dir"] = str(wd)
    if env_vars:
        env["env_vars"] = env_vars
    try:
        from ray.runtime_env import RuntimeEnv

        RuntimeEnv(**env)
    except Exception as e:  # noqa: BLE001 - Ray raises TypeError/ValueError for bad fields
        raise HarnessError(f"{p}: Ray rejects this runtime_env ({str(e).splitlines()[0]})") from None
    return env


def sweep_command(sweep_args: list[str], storage: str | None) -> list[str]:
    """``python -m harness sweep ARGS``, with ``--storage`` passed on where the sweep can use it.

    ``harness sweep --storage`` takes a filesystem path (shared storage mounted on every node, e.g.
    NFS). A URI (``s3://``, ``gs://``) is used for the published leaderboards only; the sweep's Tune
    experiment then stays on the head's disk.
    """
    args = list(sweep_args)
    if args and args[0] == "--":
        args = args[1:]
    if storage and not is_uri(storage) and "--storage" not in args and not any(a.startswith("--storage=") for a in args):
        args += ["--storage", storage]
    return ["python", "-m", "harness", "sweep", *args]


def entrypoint(job_id: str, command: list[str], storage: str | None) -> str:
    """The shell line the job runs: the wrapper around ``command``."""
    parts = ["python", "-m", "harness.cluster", "job", "--job-id", job_id]
    if storage:
        parts += ["--storage", storage]
    return shlex.join([*parts, "--", *command])


# ---------------------------------------------------------------------------------------------
# Inside the job: run the sweep, then publish its results

def _results_dir_of(command: list[str], job_id: str) -> Path:
    """The folder the wrapped sweep writes: its ``--results-dir``, else ``./results/<job id>``."""
    for i, a in enumerate(command):
        if a == "--results-dir" and i + 1 < len(command):
            return Path(command[i + 1]).expanduser().resolve()
        if a.startswith("--results-dir="):
            return Path(a.split("=", 1)[1]).expanduser().resolve()
    return (Path.cwd() / "results" / job_id).resolve()


def run_job(job_id: str, command: list[str], storage: str | None) -> int:
    """Run ``command`` with a results folder of its own, then publish that folder; its exit status.

    ``ray job stop`` sends SIGTERM to the whole process group: the sweep stops, keeping finished
    trials, and whatever it wrote is still published before this process exits.
    """
    if not command:
        raise HarnessError("job: nothing to run after --")
    results = _results_dir_of(command, job_id)
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["HARNESS_RESULTS_DIR"] = str(results)
    env.setdefault("HARNESS_DOCS_DIR", str(results / "docs"))
    print(f"harness job {job_id}: {shlex.join(command)}", flush=True)
    print(f"harness job {job_id}: results -> {results}", flush=True)
    stopped: list[int] = []

    def on_term(signum: int, _frame: Any) -> None:
        stopped.append(signum)  # the sweep, in our process group, got the same signal

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        rc = subprocess.call(command, env=env)
    finally:
        signal.signal(signal.SIGTERM, old)
    publish(results, job_id, storage)
    if stopped and rc == 0:
        rc = 128 + stopped[0]
    return rc


def _result_files(results: Path) -> list[Path]:
    if not results.is_dir():
        return []
    return sorted(p for p in results.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith((".lock", ".tmp")))


def publish(results: Path, job_id: str, storage: str | None, out: Callable[[str], None] | None = None) -> list[str]:
    """Echo every file under ``results`` into the job log, and copy them to ``--storage``.

    Args:
        results: the folder the sweep wrote.
        job_id: the submission id.
        storage: a path or URI, or None.
        out: where log lines go (stdout).

    Returns:
        The relative paths published.
    """
    out = out or (lambda line: print(line, flush=True))
    files = _result_files(results)
    rels = [p.relative_to(results).as_posix() for p in files]
    if storage:
        try:
            _storage_write(storage, job_id, {r: p.read_bytes() for r, p in zip(rels, files)})
            out(f"harness job {job_id}: {len(rels)} result files copied to {storage_location(storage, job_id)}")
        except Exception as e:  # noqa: BLE001 - report the storage failure, still echo into the log
            out(f"harness job {job_id}: copying results to {storage} failed: {str(e).splitlines()[0]}")
    total = 0
    out(f"{_BEGIN} job={job_id} files={len(rels)}")
    for rel, p in zip(rels, files):
        data = p.read_bytes()
        total += len(data)
        if total > _LOG_PAYLOAD_LIMIT:
            out(f"harness job {job_id}: {rel} and later files are too big for the log; use --storage")
            break
        out(f"{_FILE} {rel} bytes={len(data)} sha256={hashlib.sha256(data).hexdigest()}")
        text = base64.b64encode(data).decode()
        for i in range(0, len(text), 76):
            out(text[i:i + 76])
    out(_END)
    return rels


def parse_published(logs: str) -> dict[str, bytes]:
    """The files that :func:`publish` echoed into a job log (the last block, if several).

    Raises:
        HarnessError: a file's size or checksum does not match (a truncated or mangled log).
    """
    start = logs.rfind(_BEGIN)
    if start < 0:
        return {}
    files: dict[str, bytes] = {}
    name, size, digest, chunks = None, 0, "", []

    def close() -> None:
        if name is None:
            return
        data = base64.b64decode("".join(chunks))
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise HarnessError(f"job log: {name} came back damaged ({len(data)} of {size} bytes); use --storage")
        files[name] = data

    for line in logs[start:].splitlines()[1:]:
        line = line.strip()
        if line.startswith(_END):
            break
        if line.startswith(_FILE):
            close()
            m = re.match(rf"^{re.escape(_FILE)} (.+) bytes=(\d+) sha256=([0-9a-f]{{64}})$", line)
            if not m:
                raise HarnessError(f"job log: bad results header '{line[:80]}'")
            name, size, digest, chunks = m.group(1), int(m.group(2)), m.group(3), []
        elif name is not None and line and not line.startswith("harness job "):
            chunks.append(line)
    close()
    return files


# ---------------------------------------------------------------------------------------------
# Storage (pyarrow.fs: local paths, NFS, file://, s3://, gs://)

def storage_location(storage: str, job_id: str) -> str:
    """``<storage>/harness-results/<job id>``, as the user wrote the storage."""
    return f"{storage.rstrip('/')}/{STORAGE_SUBDIR}/{job_id}"


def _filesystem(storage: str) -> tuple[Any, str]:
    from pyarrow import fs

    if not is_uri(storage):
        return fs.LocalFileSystem(), str(Path(storage).expanduser().resolve())
    try:
        return fs.FileSystem.from_uri(storage)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError
        raise HarnessError(f"storage {storage}: {str(e).splitlines()[0]}") from None


def _storage_write(storage: str, job_id: str, files: dict[str, bytes]) -> None:
    filesystem, base = _filesystem(storage)
    root = f"{base.rstrip('/')}/{STORAGE_SUBDIR}/{job_id}"
    for rel, data in files.items():
        path = f"{root}/{rel}"
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as fh:
            fh.write(data)


def read_storage(storage: str, job_id: str) -> dict[str, bytes]:
    """The files a job published to ``storage``; empty when there are none."""
    from pyarrow import fs

    filesystem, base = _filesystem(storage)
    root = f"{base.rstrip('/')}/{STORAGE_SUBDIR}/{job_id}"
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    except Exception as e:  # noqa: BLE001
        raise HarnessError(f"storage {storage}: {str(e).splitlines()[0]}") from None
    out: dict[str, bytes] = {}
    for info in infos:
        if info.type == fs.FileType.File:
            with filesystem.open_input_stream(info.path) as fh:
                out[info.path[len(root) + 1:]] = fh.read()
    return out


# ---------------------------------------------------------------------------------------------
# Waiting and collecting

def wait_for_job(client: Any, job_id: str, timeout: float | None = None, poll: float = 2.0,
                 on_status: Callable[[str], None] | None = None) -> str:
    """Poll until the job ends; its final status (SUCCEEDED, FAILED or STOPPED).

    Raises:
        HarnessError: unknown job id (``no job 'X' on ADDRESS``), the server went away, or ``timeout``
            seconds passed first.
    """
    t0 = time.monotonic()
    last = None
    while True:
        status = str(ask(client, job_id, "get_job_status").value)
        if status != last and on_status:
            on_status(status)
        last = status
        if status in TERMINAL:
            return status
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise HarnessError(f"job {job_id} still {status} after {timeout:.0f} s (it keeps running; "
                               "run harness results again later)")
        time.sleep(poll)


def collect(client: Any, job_id: str, storage: str | None) -> tuple[dict[str, bytes], str]:
    """A finished job's result files, and where they came from.

    ``storage`` (or the one recorded at submit time) first; the job's log otherwise, or when the
    storage holds nothing for this job.
    """
    if storage is None:
        storage = (ask(client, job_id, "get_job_info").metadata or {}).get(META_STORAGE) or None
    if storage:
        files = read_storage(storage, job_id)
        if files:
            return files, storage_location(storage, job_id)
    files = parse_published(ask(client, job_id, "get_job_logs"))
    return files, "the job log"


def write_files(files: dict[str, bytes], dest: Path) -> list[Path]:
    """Write ``files`` (relative path -> bytes) under ``dest``; the paths written."""
    written = []
    dest = dest.resolve()
    for rel, data in sorted(files.items()):
        path = (dest / rel).resolve()
        if dest not in path.parents:
            raise HarnessError(f"refusing to write {rel} outside {dest}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# python -m harness.cluster job --job-id ID [--storage URI] -- COMMAND...

def main(argv: list[str] | None = None) -> int:
    """The job-side entry point (what the Ray job runs)."""
    p = argparse.ArgumentParser(prog="python -m harness.cluster",
                                description="Run inside a Ray job: wrap a sweep and publish its results.")
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("job", help="run COMMAND with its own results folder, then publish the results")
    j.add_argument("--job-id", required=True, help="the submission id (names the results folder)")
    j.add_argument("--storage", default=None, help="also copy the results to <storage>/harness-results/<job id>")
    j.add_argument("command", nargs=argparse.REMAINDER, help="-- python -m harness sweep ...")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return run_job(args.job_id, command, args.storage)
    except HarnessError as e:
        sys.stderr.write(f"harness job: error: {e}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
