"""The ``harness`` command line: one subcommand per module in :mod:`harness.commands`.

Bad input (any :class:`~harness.errors.HarnessError`, or an argparse usage error) prints one line
and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from harness.errors import HarnessError
from harness.provenance import git_sha

# Each module defines ``add_parser(subparsers)``, which registers its subcommand(s) and sets
# ``func`` on the parsed namespace. Kept as a fixed list (no discovery magic) so ``--help`` is fast.
COMMAND_MODULES: list[str] = [
    "harness.commands.list_cmd",
    "harness.commands.data_cmd",
    "harness.commands.run_cmd",
    "harness.commands.bench_cmd",
    "harness.commands.sweep_cmd",
    "harness.commands.plan_cmd",
    "harness.commands.leaderboard_cmd",
    "harness.commands.reproduce_cmd",
    "harness.commands.cluster_cmd",
]


# Out of space (a full disk, a quota, a file-size limit): one line, not a traceback.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full ``harness`` parser with every subcommand."""
    parser = OneLineParser(
        prog="harness",
        description="cnn-harness: train, sweep and benchmark image-classification CNNs, "
        "in process, under Ray Train DDP or as Ray Tune ASHA sweeps, with honest leaderboards.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def _label(args: argparse.Namespace) -> str:
    """``harness data info``, ``harness bench loaders``, ``harness run``: the command, as typed."""
    parts = ["harness", args.command]
    for dest in ("data_command", "bench"):  # the subcommands that have actions of their own
        if getattr(args, dest, None):
            parts.append(getattr(args, dest))
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)

    git_sha()  # cached now: rows name the code this process started with, not a HEAD committed while it ran
    try:
        rc = args.func(args)
    except HarnessError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"{_label(args)}: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("harness: interrupted; finished results are on disk\n")
        return 130
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        # Every results file is replaced atomically, so what was written before is still whole.
        sys.stderr.write(f"{_label(args)}: error: no space left writing {e.filename or 'results'} "
                         f"({os.strerror(e.errno)}); earlier results are intact\n")
        return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
