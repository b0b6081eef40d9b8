"""The one base class of errors that mean "the user asked for something wrong".

The CLI prints any `WeightshareError` as one `error: ...` line (exit code 2)
instead of a traceback; a library user can catch them all with one `except`.
Each module's own error (CheckpointError, DatasetError, ...) derives from it and
keeps its historic built-in base, so existing `except RuntimeError` code still works.
"""

from __future__ import annotations

__all__ = ["WeightshareError"]


class WeightshareError(Exception):
    """Bad input, a missing or corrupt file, an impossible request: the user can fix it."""
