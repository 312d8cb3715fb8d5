"""The Ray job server: its address, the auth token it wants, and a client whose requests time out."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


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
    from ray.job_submission import JobSubmissionClient  # ray is heavy: imported when a job server is asked

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
