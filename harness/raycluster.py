"""Getting a Ray cluster: connect to ``$RAY_ADDRESS``, or start a private local one.

``harness run`` (a ``TorchTrainer`` run) and ``harness sweep`` both start Ray through
:func:`init_ray`, so that a local cluster is always private (``address="local"``), keeps its
dashboard on 127.0.0.1, and puts its session files under ``$RAY_TMPDIR`` when that is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else every CPU)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def init_ray(*, num_cpus: int | None = None, dashboard: bool = False, verbose: bool = True,
             env_vars: dict[str, str] | None = None, temp_dir: str | None = None) -> bool:
    """Connect to the cluster in ``$RAY_ADDRESS``, or start a private local Ray; nothing if Ray is up.

    Args:
        num_cpus: CPUs of a local cluster (None: :func:`available_cpus`); ignored on a cluster.
        dashboard: start the dashboard of a local cluster. It serves Ray's State API, which Ray
            Train's placement-group cleaner needs to free the workers of a ``TorchTrainer`` that Tune
            ended. It listens on 127.0.0.1 only.
        verbose: forward the workers' logs to this process and log Ray at INFO (else ERROR).
        env_vars: environment variables for the cluster's workers, sent as the job's runtime_env
            when connecting to ``$RAY_ADDRESS``. A local cluster's workers inherit this process's
            environment, so they are not sent there.
        temp_dir: a local cluster's session directory (None: ``$RAY_TMPDIR`` when set, else Ray's).

    Returns:
        True when this call started a private local cluster; False when it connected to
        ``$RAY_ADDRESS`` or Ray was already initialised.
    """
    # ray is heavy: imported only where Ray is used
    import ray

    if ray.is_initialized():
        return False
    with _keeping_sigterm_handler():
        if os.environ.get("RAY_ADDRESS"):
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}} if env_vars is not None else {}
            ray.init(address="auto", log_to_driver=verbose, **kwargs)
            return False
        temp_dir = temp_dir or os.environ.get("RAY_TMPDIR")
        local: dict[str, Any] = {"_temp_dir": temp_dir} if temp_dir else {}
        port = _free_port() if dashboard else None
        if port is not None:
            # Ray Train's placement-group cleaner asks the State API about its cluster without an address.
            # With another Ray on this machine it finds two and gives up ("Found multiple active Ray
            # instances"), so a finished TorchTrainer trial's workers are never freed and the next trial
            # waits for them forever. The GCS gets a port chosen here, and the workers its address.
            local["runtime_env"] = {"env_vars": {"RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"}}
        # address="local" never attaches to a stale cluster file; the dashboard must not face the network.
        with _env(ray_gcs_port=port):
            ray.init(address="local", num_cpus=num_cpus or available_cpus(), include_dashboard=dashboard,
                     dashboard_host="127.0.0.1", log_to_driver=verbose, configure_logging=True,
                     logging_level="INFO" if verbose else "ERROR", **local)
        return True


def _free_port() -> int:
    """A TCP port free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _env(ray_gcs_port: int | None) -> Iterator[None]:
    """``$RAY_GCS_SERVER_PORT`` (Ray's head reads it as it starts) for the duration, when a port is given."""
    if ray_gcs_port is None:
        yield
        return
    before = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(ray_gcs_port)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = before


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Keep the caller's SIGTERM handler across ``ray.init``.

    ``ray.init`` replaces the driver's SIGTERM handler with ``sys.exit`` (and Ray's core worker adds a
    crash handler that prints a stack trace first). ``harness run`` and ``harness sweep`` stop on
    SIGTERM as on Ctrl-C (keeping what finished, exit 143), so a Python handler set before Ray started
    is put back. Without one (the default action), Ray's stays.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and callable(before):
            signal.signal(signal.SIGTERM, before)
