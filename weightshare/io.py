"""Atomic file writes: a crash or a kill mid-write never leaves a half-written file.

Every writer in weightshare (checkpoints, latency tables, predictors, profiles,
plots, safetensors weight files) goes through `atomic_path`: it hands out a
temporary path beside the target (same folder, so the rename is atomic, and the
same extension, so tools that pick a format by extension still work), then
fsyncs and renames it over the target, or removes it on error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "read_json"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # flush the data to disk before the rename publishes it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike, what: str,
              error: type[Exception] = ValueError) -> Any:
    """Parse the JSON file that should hold a `what`; missing or corrupt files say so.

    Missing: FileNotFoundError naming `what`; corrupt: `error` (a ValueError subclass
    of the caller's module, so the CLI reports it as a user error).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, f"no {what} at this path", str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is not a valid {what} (corrupt JSON: {err})") from None
