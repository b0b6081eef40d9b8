"""Run checkpoints of search and retraining: one weights_only torch file, written atomically.

Payload: ``{"format": "weightshare-quant-run", "version": 1, "kind": "search" |
"retrain", ...}`` with only tensors and plain values, so `torch.load(...,
weights_only=True)` reads it; `atomic_torch_save` means a kill mid-write
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, atomic_torch_save, load_torch_file, plain

__all__ = ["FORMAT", "load_state", "save_state"]

FORMAT = "weightshare-quant-run"
VERSION = 1


# Saved as they are: `plain` would turn an optimizer state's int keys into strings, and
# load_state_dict would then silently drop the momentum / Adam moments.
_STATE_DICTS = frozenset({"model", "optimizer", "w_opt", "a_opt"})


def save_state(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> Path:
    body = {k: (v if k in _STATE_DICTS else plain(v)) for k, v in payload.items()}
    return atomic_torch_save({"format": FORMAT, "version": VERSION, "kind": kind, **body}, path)


def load_state(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Load a `kind` checkpoint; every failure is a CheckpointError that says why."""
    path = Path(path)
    payload = load_torch_file(path, f"{kind} checkpoint", "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a weightshare quant checkpoint")
    if payload.get("kind") != kind:
        raise CheckpointError(f"{path} is a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} has version {payload['version']}, newer than this "
                              f"weightshare understands ({VERSION})")
    return payload
