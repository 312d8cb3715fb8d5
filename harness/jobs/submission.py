"""What ``harness submit`` sends: the job id, the runtime_env, and the entrypoint that wraps the sweep."""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
import shlex
from pathlib import Path

import yaml

from harness.errors import HarnessError
from harness.jobs.storage import is_uri

#: Where ``harness submit`` finds the runtime_env, relative to the working directory it uploads.
RUNTIME_ENV_FILE = "cluster/runtime_env.yaml"
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def new_job_id() -> str:
    """``harness-<UTC yyyymmdd-HHMMSS>-<4 hex>``: sortable, and unique enough to name folders."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"harness-{stamp}-{secrets.token_hex(2)}"


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
    committed_secrets = [k for k, v in env_vars.items() if SECRET_NAME.search(k) and "${" not in v]
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
        from ray.runtime_env import RuntimeEnv  # ray is heavy: imported when a job is submitted

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
    parts = ["python", "-m", "harness.jobs", "job", "--job-id", job_id]
    if storage:
        parts += ["--storage", storage]
    return shlex.join([*parts, "--", *command])
