"""weightshare: train one weight-shared SuperNet, specialize and serve its SubNets.

The top-level names are the ones most scripts need; everything else lives in
its submodule (`weightshare.space`, `.nn`, `.models`, `.data`, `.checkpoint`, ...).
Torch-backed names load lazily, so `import weightshare.space` stays torch-free
for search and scheduling code.
"""

from __future__ import annotations

import importlib
from typing import Any

from .space import SearchSpace, SubnetConfig

__version__ = "0.1.0"

_LAZY = {
    "SuperNet": "weightshare.models",
    "create_supernet": "weightshare.models",
    "list_supernets": "weightshare.models",
    "register_supernet": "weightshare.models",
    "load_checkpoint": "weightshare.checkpoint",
    "save_checkpoint": "weightshare.checkpoint",
    "load_dataset": "weightshare.data",
}

__all__ = ["SearchSpace", "SubnetConfig", "__version__", "convert", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("nn", "models", "data", "checkpoint", "export", "metrics", "convert"):
        return importlib.import_module(f"weightshare.{name}")
    raise AttributeError(f"module 'weightshare' has no attribute {name!r}")
