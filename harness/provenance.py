"""Where a number came from: hardware, library versions and the git sha of the code."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
from pathlib import Path

#: Marks a sha that ``$HARNESS_GIT_SHA`` gave (a cluster job's upload has no .git): stated, not read from git.
ENV_MARK = " (HARNESS_GIT_SHA)"
#: The folders Python imports the harness from: an untracked file there is code that may have run.
PACKAGES = ("harness", "architectures", "loaders")


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """Short git sha of the harness checkout, with ``+dirty`` if its code has local changes (``results/`` and
    ``docs/`` do not count); ``unknown`` if none. Cached: the sha of the code this process started with
    (``harness`` reads it first thing). A sha given by ``$HARNESS_GIT_SHA`` ends with :data:`ENV_MARK`."""
    root = Path(__file__).resolve().parent.parent
    env = os.environ.get("HARNESS_GIT_SHA")
    if env:
        return env if env.endswith(ENV_MARK) else env + ENV_MARK
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not sha:
            return "unknown"
        return sha + ("+dirty" if code_changed(root) else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_changed(root: Path) -> bool:
    """Whether the checkout at ``root`` has uncommitted changes to tracked files outside ``results/`` and
    ``docs/`` (results and generated pages are outputs, so a sweep run after an uncommitted one is not dirty),
    or untracked files in the packages (:data:`PACKAGES`: a new module imports as readily as a changed one)."""
    def status(*args: str) -> str:
        return subprocess.run(["git", "status", "--porcelain", *args], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip()

    return bool(status("--untracked-files=no", "--", ".", ":(exclude)results", ":(exclude)docs")
                or status("--untracked-files=all", "--", *PACKAGES))


def publishable(sha: str) -> bool:
    """Whether a row with this ``git_sha`` may be published as a result: it names committed code that git read.

    ``+dirty`` (uncommitted changes), ``unknown`` and empty name no commit that can be checked out. A sha from
    ``$HARNESS_GIT_SHA`` is published: it is shown as stated (:data:`ENV_MARK`).
    """
    sha = sha.removesuffix(ENV_MARK).strip()
    return bool(sha) and sha != "unknown" and "+dirty" not in sha


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where available."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | None = None) -> str:
    """A short description of the compute: GPU name and count, or CPU model and core count."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    if (device is None or device.startswith("cuda")) and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{n}x {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()}x CPU {cpu_model()}"


def versions() -> dict[str, str]:
    """Versions of the libraries that shape results."""
    # torch is heavy: loaded when this runs, so importing this module stays light
    import torch

    out = {"torch": torch.__version__.split("+")[0], "cuda": torch.version.cuda or ""}
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:  # pragma: no cover - ray is a hard dependency
        out["ray"] = ""
    return out


def now() -> str:
    """UTC timestamp, ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def provenance(device: str | None = None) -> dict[str, str]:
    """Every provenance field a results row carries."""
    v = versions()
    return {"hardware": hardware(device), "torch": v["torch"], "ray": v["ray"], "git_sha": git_sha(), "date": now()}
