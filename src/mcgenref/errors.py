"""The one error type users see.

Every failure caused by the user's input (a file, an argument, a folder) is raised as a
:class:`McGenRefError` subclass with a message that fits on one line and says what to do.
The CLI catches exactly this type, prints ``error: <message>`` and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class McGenRefError(Exception):
    """Base class: a clear, one-line, user-facing error."""

    exit_code: int = 2


class InputError(McGenRefError):
    """An input file is missing, unreadable, corrupt or not a usable mammogram."""


class ConfigError(McGenRefError):
    """A configuration file or an argument value is invalid."""


class OutputError(McGenRefError):
    """An output location cannot be written (exists, read-only, disk full...)."""


class McGenRefWarning(UserWarning):
    """Something was assumed (a default pixel spacing, a magnification view...); say so."""
