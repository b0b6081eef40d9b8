"""Progress bars that stay readable in a log file.

On a terminal this is tqdm as usual. When stderr is a file or a pipe (a
`nohup` run, CI, a benchmark's subprocess), tqdm's carriage-return redraws would
pile up into one unreadable line, so the bar is written as one plain line at
most every `log_interval_s` seconds instead.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["progress"]


class _Lines:
    """A file for tqdm that turns each redraw into one newline-terminated line."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LineBar(tqdm):
    """tqdm whose postfix updates wait for the next timed redraw instead of forcing one."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = False, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def progress(*args: Any, log_interval_s: float = 30.0, **kwargs: Any) -> tqdm:
    """`tqdm(*args, **kwargs)`, or its line-per-interval form when stderr is not a terminal."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", log_interval_s)
        kwargs["maxinterval"] = max(kwargs.get("maxinterval", 0), kwargs["mininterval"])
        kwargs.pop("dynamic_ncols", None)
        kwargs.setdefault("ncols", 100)
        return _LineBar(*args, file=_Lines(stream), **kwargs)
    return tqdm(*args, file=stream, **kwargs)
