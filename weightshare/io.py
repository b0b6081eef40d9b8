"""Atomic file writes: a crash or a kill mid-write never leaves a half-written file.

Every writer in weightshare (checkpoints, latency tables, predictors, profiles,
plots, safetensors weight files) goes through `atomic_path`: it hands out a
temporary path beside the target (same folder, so the rename is atomic, and the
same extension, so tools that pick a format by extension still work), then
fsyncs and renames it over the target, or removes it on error.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write_text", "hold_lock", "read_json"]


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


def hold_lock(path: str | os.PathLike, *, wait: bool = False) -> IO[str] | None:
    """Lock `path` (created if missing) for this process; None if another process holds it
    (`wait`: block until it lets go instead).

    The lock is a POSIX record lock: the kernel drops it when the holder exits, however
    it exits (a kill leaves no stale lock), and a second lock in the same process
    succeeds (a run resumed in the process that started it is not locked out). Keep the
    returned file open for as long as the lock should last; closing it (or any other
    handle this process has on the file) releases it. Its text is the holder's PID, for the message of whoever finds it taken.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (returned open: it is the lock)
    try:
        fcntl.lockf(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


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
