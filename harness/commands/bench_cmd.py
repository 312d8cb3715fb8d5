"""Placeholder: this subcommand arrives with its issue."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register nothing yet."""
