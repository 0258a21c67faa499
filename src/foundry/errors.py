"""Errors foundry raises on purpose.

Every error a user can cause is a ``FoundryError``: the CLI prints its message on one
line and exits non-zero, the API turns it into a 4xx. Anything else is a bug.

    FoundryError
    ├── ConfigError      a config key is missing, unknown or has a wrong value
    ├── DataError        a data file is missing, empty, malformed, or a column is wrong
    ├── ModelError       a model name/version does not exist or a package is broken
    └── TrainError       training cannot go on (e.g. the loss became NaN)

Messages name the thing to fix: the file, the column, the config key path.
"""

from __future__ import annotations


class FoundryError(Exception):
    """Base class of every error caused by user input or environment."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConfigError(FoundryError):
    """A config key is unknown, missing or has a value outside what it allows."""


class DataError(FoundryError):
    """A data file or column cannot be used as configured."""


class ModelError(FoundryError):
    """A model reference does not resolve, or a model package cannot be loaded."""


class TrainError(FoundryError):
    """Training cannot continue (diverged loss, missing checkpoint to resume...)."""
