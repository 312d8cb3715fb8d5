"""``harness submit`` and ``harness results``: a sweep as a Ray job on a cluster, and its leaderboards back.

``harness submit --address http://HEAD:8265 [--storage URI] -- <sweep args>`` is
``ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python -m harness sweep ...``
with the job's results published where ``harness results`` finds them (see :mod:`harness.jobs`).
Both send the Ray auth token that Ray 2.60 requires, found where Ray looks for it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from harness.commands import checks, sweep_cmd
from harness.errors import HarnessError
from harness.jobs import collect, server, storage, submission
from harness.provenance import git_sha
from harness.results_csv import read_rows, results_dir
from harness.sweep.matrix import load_matrix
from harness.sweep.settings import setting_field, validate_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``harness submit`` and ``harness results``."""
    s = sub.add_parser(
        "submit", help="submit a sweep to a Ray cluster as a Ray job",
        description="Submit `python -m harness sweep <sweep args>` to a Ray cluster's job server, uploading "
        "the working directory (minus the excludes in the runtime_env file). Prints the job id (last line) "
        "and the commands that follow it. The Ray auth token is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
        "or ~/.ray/auth_token and never printed. The sweep's arguments are checked here first, as `harness sweep` "
        "would check them. Bad input, an unreachable job server or one that does not answer within "
        "$HARNESS_JOB_SERVER_TIMEOUT seconds (default 60) is one line and exit 2.",
        epilog="example: harness submit --address http://127.0.0.1:8265 --storage s3://bucket/cnn -- "
        "--matrix full --gpus-per-worker 1",
    )
    s.add_argument("--address", default=None,
                   help="the job server (the dashboard): http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)")
    s.add_argument("--storage", default=None,
                   help="shared storage for the results (and, for a path, the sweep): /mnt/nfs/..., s3://..., gs://...")
    s.add_argument("--working-dir", default=".", help="folder uploaded as the job's working directory")
    s.add_argument("--runtime-env", default=None,
                   help="runtime_env YAML (default: <working dir>/cluster/runtime_env.yaml)")
    s.add_argument("--forward-env", action="append", default=[], metavar="NAME",
                   help="copy this local environment variable into the job's runtime_env (repeatable; values "
                   "are never printed, but Ray's runtime_env agent logs them on the node: see cluster/README.md)")
    s.add_argument("--job-id", default=None, help="submission id (default: harness-<UTC time>-<hex>)")
    s.add_argument("--dry-run", action="store_true", help="print the equivalent `ray job submit` line and exit")
    s.add_argument("sweep_args", nargs=argparse.REMAINDER, metavar="-- SWEEP_ARGS",
                   help="arguments of `harness sweep`, after --")
    s.set_defaults(func=submit)

    r = sub.add_parser(
        "results", help="wait for a submitted sweep and copy its leaderboards back",
        description="Wait until the job ends, then copy the files its sweep wrote (leaderboard.csv, "
        "throughput.csv, docs) into --dest: from the storage given at submit time (or --storage), else from "
        "the job's log. Exit status 0 when the job succeeded, 1 otherwise (what came back is still written). "
        "An empty or unknown job id, an unreachable job server or one that does not answer within "
        "$HARNESS_JOB_SERVER_TIMEOUT seconds (default 60) is one line and exit 2.",
    )
    r.add_argument("--address", default=None, help="the job server: http://HEAD:8265")
    r.add_argument("--job", required=True, help="the job id that harness submit printed")
    r.add_argument("--storage", default=None, help="read the results from this storage (default: the submit's)")
    r.add_argument("--dest", default=None, help="where the files go (default: <results dir>/jobs/<job id>)")
    r.add_argument("--timeout", type=float, default=None,
                   help="give up waiting for the job to end after this many seconds (> 0)")
    r.add_argument("--poll", type=float, default=5.0, help="seconds between status checks (> 0)")
    r.set_defaults(func=results)


def _ray_prefix(token_sent: bool) -> str:
    return "RAY_AUTH_MODE=token " if token_sent else ""


def submit(args: argparse.Namespace) -> int:
    """Submit the sweep; print the follow-up commands and, last, the job id."""
    sweep_args = list(args.sweep_args)
    if sweep_args[:1] == ["--"]:
        sweep_args = sweep_args[1:]
    if not sweep_args:
        raise HarnessError("give the sweep's arguments after --, e.g. harness submit --address URL -- --matrix quick")
    if args.job_id is not None:
        server.check_job_id("--job-id", args.job_id)
    address = server.normalize_address(args.address)
    checks.folder("--working-dir", args.working_dir, must_exist=True)
    wd = Path(args.working_dir)
    check_sweep_args(sweep_args, wd)
    if args.runtime_env:
        checks.input_file("--runtime-env", args.runtime_env, "runtime_env YAML file")
    elif not (wd / submission.RUNTIME_ENV_FILE).is_file():
        raise HarnessError(f"--working-dir {args.working_dir} has no {submission.RUNTIME_ENV_FILE}; "
                           "give --runtime-env FILE")
    job_id = args.job_id or submission.new_job_id()
    env_file = Path(args.runtime_env) if args.runtime_env else wd / submission.RUNTIME_ENV_FILE
    runtime_env = submission.load_runtime_env(env_file, wd, args.forward_env)
    # The upload leaves .git out, so the job could not name its code version: pass it along.
    sha = git_sha()
    if sha != "unknown":
        runtime_env.setdefault("env_vars", {}).setdefault("HARNESS_GIT_SHA", sha)
    command = submission.sweep_command(sweep_args, args.storage)
    line = submission.entrypoint(job_id, command, args.storage)
    metadata = {"harness_command": "sweep"}
    if args.storage:
        metadata[storage.META_STORAGE] = args.storage
    if args.dry_run:
        plain = ["ray", "job", "submit", "--address", address, "--submission-id", job_id,
                 "--working-dir", str(wd), "--runtime-env", str(env_file),
                 "--metadata-json", json.dumps(metadata, separators=(",", ":")), "--no-wait", "--"]
        print(_ray_prefix(server.auth_token() is not None) + shlex.join(plain) + " " + line)
        if sha != "unknown":
            print(f"# harness submit also sets env_vars HARNESS_GIT_SHA={sha} (the upload has no .git)",
                  file=sys.stderr)
        if args.forward_env:
            print(f"# --forward-env {' '.join(args.forward_env)} has no plain equivalent that keeps the values "
                  "off the command line", file=sys.stderr)
        return 0
    if args.storage and storage.is_uri(args.storage):
        print(f"note: harness sweep takes a filesystem path for --storage; its Tune experiment stays on the "
              f"head's disk, the leaderboards go to {storage.storage_location(args.storage, job_id)}", file=sys.stderr)
    for name in args.forward_env:
        if submission.SECRET_NAME.search(name):
            print(f"note: {name} goes into the job's runtime_env; Ray logs runtime_envs on the node "
                  "(runtime_env_agent.log). A secret set on the cluster's nodes avoids that: see cluster/README.md",
                  file=sys.stderr)
    client = server.job_client(address)
    token_sent = server.auth_token() is not None
    try:
        submitted = client.submit_job(entrypoint=line, submission_id=job_id, runtime_env=runtime_env,
                                      metadata=metadata)
    except Exception as e:  # noqa: BLE001 - Ray raises RuntimeError/ValueError with the server's reason
        raise HarnessError(f"submitting to {address} failed: {str(e).strip().splitlines()[0]}") from None
    pre = _ray_prefix(token_sent)
    print(f"submitted {submitted} to {address}: {shlex.join(command)}")
    print(f"  follow:  {pre}ray job logs --address {address} --follow {submitted}")
    print(f"  status:  {pre}ray job status --address {address} {submitted}")
    print(f"  stop:    {pre}ray job stop --address {address} {submitted}")
    print(f"  results: harness results --address {address} --job {submitted}")
    print(submitted)
    return 0


class _SweepArgsParser(argparse.ArgumentParser):
    """Parses the sweep's arguments as `harness sweep` would, raising its usage errors as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]

        raise HarnessError(f"the sweep's arguments after --: {message}")


def check_sweep_args(sweep_args: list[str], working_dir: Path) -> None:
    """Check the sweep's arguments here, before anything is uploaded: what `harness sweep` would refuse.

    The job runs in the uploaded working directory, so a relative ``--matrix`` file is looked up in
    ``working_dir``; an absolute one may exist only on the cluster and is not read. Paths and resources
    are the cluster's and are not checked.

    Raises:
        HarnessError: a usage error, a bad option value, an unknown preset or a matrix that does not parse.
    """
    top = _SweepArgsParser(prog="harness submit --")
    sweep_cmd.add_parser(top.add_subparsers(dest="command", parser_class=_SweepArgsParser))
    a = top.parse_args(["sweep", *sweep_args])
    # --resume reuses the matrix saved with the sweep; an absolute path may exist only on the cluster.
    matrix = a.matrix or setting_field("matrix").default
    readable = not a.resume and not Path(matrix).is_absolute()
    if readable and ("/" in matrix or matrix.endswith((".yaml", ".yml"))):
        a.matrix = str(working_dir / matrix)
    s = sweep_cmd.settings_from_args(a, check_matrix=readable)
    if readable:
        validate_settings(s, load_matrix(s.matrix), submitted=True)


def results(args: argparse.Namespace) -> int:
    """Wait for the job, copy its result files back, print where they went (last line: the folder)."""
    server.check_job_id("--job", args.job)
    checks.positive("--timeout", args.timeout)
    checks.positive("--poll", args.poll)
    checks.folder("--dest", args.dest)
    address = server.normalize_address(args.address)
    client = server.job_client(address)
    status = collect.wait_for_job(client, args.job, timeout=args.timeout, poll=args.poll,
                                  on_status=lambda st: print(f"job {args.job}: {st}", file=sys.stderr, flush=True))
    files, source = collect.collect(client, args.job, args.storage)
    dest = Path(args.dest) if args.dest else results_dir() / "jobs" / args.job
    written = collect.write_files(files, dest)
    if status != "SUCCEEDED":
        tail = server.ask(client, args.job, "get_job_logs").rstrip().splitlines()
        tail = [t for t in tail if not t.startswith("@@harness") and " " in t][-20:]
        print(f"job {args.job} {status}; the end of its log:", file=sys.stderr)
        for t in tail:
            print("  " + t, file=sys.stderr)
    if not written:
        print(f"job {args.job} {status}: no result files came back (from {source})", file=sys.stderr)
        return 1
    print(f"job {args.job} {status}: {len(written)} files from {source}")
    for p in written:
        rows = f"  ({len(read_rows(p))} rows)" if p.suffix == ".csv" else ""
        print(f"  {p}{rows}")
    print(dest.resolve())
    return 0 if status == "SUCCEEDED" else 1
