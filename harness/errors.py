"""User-facing errors.

Anything raised as :class:`HarnessError` is bad input (an unknown name, an impossible value,
missing or corrupt data, incompatible options). The CLI prints its message as one line and exits
with status 2, without a traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HarnessError(ValueError):
    """Bad input from the user: printed as one line by the CLI, exit status 2."""


class DataError(HarnessError):
    """Missing, corrupt or inconsistent data files."""


class ConfigError(HarnessError):
    """An invalid configuration, matrix or preset."""
