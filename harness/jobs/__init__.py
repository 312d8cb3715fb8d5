"""Jobs: a sweep submitted to a Ray cluster as a Ray job, and its leaderboards brought back.

The pieces, used by ``harness submit`` and ``harness results`` (:mod:`harness.commands.cluster_cmd`):

- **Auth** (:mod:`harness.jobs.server`). Ray 2.60 turns token authentication on; the job server then
  answers 401 without an ``Authorization: Bearer <token>`` header. ``auth_token`` finds the token where
  Ray itself looks (``RAY_AUTH_TOKEN``, then the file in ``RAY_AUTH_TOKEN_PATH``, then
  ``~/.ray/auth_token``), and ``job_client`` sends it explicitly, so the CLI works whether or not
  ``RAY_AUTH_MODE=token`` is exported locally. The token is never printed.
- **The job wrapper** (:mod:`harness.jobs.wrapper`). The job's entrypoint is
  ``python -m harness.jobs job --job-id ID [--storage URI] -- python -m harness sweep ...``. It gives
  the sweep a results folder of its own (jobs that upload identical code share one unpacked working
  directory on the head), runs the sweep unchanged, then *publishes* what the sweep wrote: into the
  job's log, base64 between markers (no shared filesystem needed), and, with ``--storage``, to
  ``<storage>/harness-results/<job id>/`` through ``pyarrow.fs`` (a local or NFS path, ``file://``,
  ``s3://`` or ``gs://``).
- **Collection** (:mod:`harness.jobs.collect`). ``collect`` reads those files back from the storage, or
  else from the job's log.

Secrets: nothing here puts an API key in the runtime_env unless the user asks for it by name
(``--forward-env``), because Ray's runtime_env agent logs every runtime_env, values included, in
``runtime_env_agent.log`` on the node. ``cluster/README.md`` describes the leak-free way (a secret
set on the cluster's nodes).

The modules: :mod:`~harness.jobs.server` (auth, the job server's address and client),
:mod:`~harness.jobs.submission` (what ``harness submit`` sends), :mod:`~harness.jobs.wrapper` (what runs
inside the job, ``python -m harness.jobs job``), :mod:`~harness.jobs.storage` and
:mod:`~harness.jobs.collect` (what ``harness results`` reads back). The package is ``jobs``, not
``cluster``: the top-level ``cluster/`` folder holds the cluster's configs (runtime_env, Dockerfile,
autoscaler YAML), and this is the code that submits to a cluster.
"""
