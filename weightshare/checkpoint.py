"""Self-describing SuperNet checkpoints, written atomically and loaded safely.

A checkpoint is one torch file holding only tensors and plain Python values, so
it loads with `torch.load(weights_only=True)` (no pickled code runs):

    format, version        -- "weightshare-checkpoint", 1
    supernet               -- {"name": registry name, "config": constructor kwargs}
    space                  -- the SearchSpace, for readers that do not build the net
    state_dict             -- the SuperNet's weights and shared BN buffers
    subnet_norms           -- [{"subnet": SubnetConfig JSON, "stats": {bn key: [mean, var]}}]
    train_state            -- whatever a trainer needs to resume (epoch, optimizer, RNG...)
    meta                   -- versions and time, for people

Writing goes to a temporary file in the same folder, fsync, then rename, so a
kill mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import WeightshareError
from .io import atomic_path
from .models import SuperNet, create_supernet
from .space import SearchSpace, SubnetConfig

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "atomic_torch_save",
    "load_torch_file",
    "plain",
    "FORMAT",
    "VERSION",
]

FORMAT = "weightshare-checkpoint"
VERSION = 1


class CheckpointError(WeightshareError, RuntimeError):
    """A checkpoint file is missing, truncated, foreign or does not fit its SuperNet."""


@dataclass
class Checkpoint:
    supernet: SuperNet
    train_state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def plain(value: Any) -> Any:
    """Tuples become lists so the payload holds only weights_only-safe containers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temp file beside `path`, fsync, then rename over it."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def save_checkpoint(path: str | os.PathLike, supernet: SuperNet, *,
                    train_state: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write `supernet` (weights, per-SubNet BN statistics) and `train_state` atomically."""
    norms = [
        {"subnet": cfg.to_json(),
         "stats": {k: [m.detach().cpu(), v.detach().cpu()] for k, (m, v) in stats.items()}}
        for cfg, stats in supernet.subnet_norms.items()
    ]
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "supernet": {"name": supernet.name, "config": plain(supernet.config)},
        "space": plain(supernet.space.to_dict()),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in supernet.state_dict().items()},
        "subnet_norms": norms,
        "train_state": train_state or {},
        "meta": {
            "torch": str(torch.__version__),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(meta or {}),
        },
    }
    return atomic_torch_save(payload, path)


def load_torch_file(path: str | os.PathLike, missing: str = "checkpoint",
                    what: str = "weightshare checkpoint") -> Any:
    """`torch.load(path, weights_only=True)`; a missing or unreadable file is a CheckpointError
    ("no MISSING at PATH", "PATH is not a readable WHAT ...")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {missing} at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated / foreign files
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable {what} (truncated, corrupt or not a torch file): {reason}"
        ) from None


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check the raw payload; every failure is a CheckpointError saying why."""
    path = Path(path)
    payload = load_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a weightshare checkpoint "
            f"(no 'format': {FORMAT!r} entry); make one with `weightshare init` or training"
        )
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload['version']}, newer than this "
            f"weightshare understands ({VERSION}); upgrade weightshare"
        )
    for key in ("supernet", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path} is missing its {key!r} entry")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the SuperNet a checkpoint describes and load its weights and SubNet norms."""
    payload = read_payload(path)
    spec = payload["supernet"]
    try:
        net = create_supernet(spec["name"], **spec.get("config", {}))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild SuperNet: {err}") from None
    saved_space = payload.get("space")
    if saved_space is not None and SearchSpace.from_dict(saved_space) != net.space:
        raise CheckpointError(f"{path}: its search space differs from {spec['name']!r}'s")
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"{path}: weights do not fit SuperNet {spec['name']!r}: {' '.join(first[:3])[:300]}"
        ) from None
    for entry in payload.get("subnet_norms", []):
        cfg = SubnetConfig.from_json(entry["subnet"])
        net.set_subnet_stats(cfg, {k: (m, v) for k, (m, v) in entry["stats"].items()})
    net.to(map_location)
    return Checkpoint(net, payload.get("train_state", {}), payload.get("meta", {}), Path(path))
