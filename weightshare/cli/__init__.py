"""The `weightshare` command line (`weightshare.cli:main`).

`core` holds the application, the shared options and helpers; each other
module adds one area's commands to the same `app` when imported: `supernet`
(space, init, export, train, evaluate, demo), `search` (specialize), `serve`
(serving and load tests), `accel` (small accelerators), `convert` (a user's own
model), `fed`, `latency`, `quant`. See `core`'s docstring for how to add a command.
"""

# `supernet` first: `weightshare --help` lists commands in the order they were added.
from . import supernet  # noqa: F401  (registers commands)

# isort: split
from . import accel, convert, fed, latency, quant, search, serve  # noqa: F401  (register commands)
from .core import (
    USER_ERRORS,
    app,
    build_supernet,
    emit_json,
    fmt_count,
    main,
    parse_overrides,
    parse_subnet,
)

__all__ = [
    "USER_ERRORS",
    "app",
    "build_supernet",
    "emit_json",
    "fmt_count",
    "main",
    "parse_overrides",
    "parse_subnet",
]
