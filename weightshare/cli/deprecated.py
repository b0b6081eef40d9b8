"""Old command names kept for one release: they run the new command after a warning.

`weightshare profile` built a per-op latency table and `weightshare serve profile`
a serving profile: two artefacts, one word. They are now `weightshare latency-table
build` (and `latency-table check`, formerly `profile-check`) and `weightshare serve
serving-profile`; the old names still work, print a warning on stderr (stdout, and
so any --json output, is untouched) and show as deprecated in --help.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

__all__ = ["add_deprecated_alias"]


def add_deprecated_alias(group: typer.Typer, old: str, new: str,
                         fn: Callable[..., Any]) -> None:
    """Register `fn` on `group` under `old` too; using it warns to use `new` (full
    command lines, e.g. "weightshare profile" -> "weightshare latency-table build")."""

    @functools.wraps(fn)
    def alias(*args: Any, **kwargs: Any) -> Any:
        typer.echo(f"warning: `{old}` is deprecated and will be removed in the next release; "
                   f"use `{new}`", err=True)
        return fn(*args, **kwargs)

    short = new.removeprefix("weightshare ")
    alias.__doc__ = f"Old name of `{short}` (same options).\n\n{fn.__doc__ or ''}"
    group.command(old.split()[-1], deprecated=True)(alias)
