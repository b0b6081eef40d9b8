"""The one base class of errors that mean "the user asked for something wrong".

The CLI prints any `WeightshareError` as one `error: ...` line (exit code 2)
instead of a traceback; a library user can catch them all with one `except`.
Each module's own error (CheckpointError, DatasetError, ...) derives from it and
keeps its historic built-in base, so existing `except RuntimeError` code still works.
`ConfigError` is the plain one for a bad setting or argument; it is also a
ValueError, as Python's own bad-value errors are.

`USER_ERRORS` is what the CLI reports without a traceback: `WeightshareError`,
plus the built-ins that Python and third-party code raise for a bad value or a
missing, existing or unreadable file (a typed config's ``int("x")``, ``open``).
"""

from __future__ import annotations

__all__ = ["ConfigError", "USER_ERRORS", "WeightshareError"]


class WeightshareError(Exception):
    """Bad input, a missing or corrupt file, an impossible request: the user can fix it."""


class ConfigError(WeightshareError, ValueError):
    """A setting, option or argument the user gave is invalid; the message says which and why."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    WeightshareError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
