"""Per-SubNet BN statistics and test accuracies beside a checkpoint (`CKPT.subnet-stats.pt`).

A serving start recalibrates the BN statistics and measures the test accuracy of
SubNets the checkpoint has none for; it writes them here (atomically, after each
SubNet, keyed by the checkpoint's SHA-256 and, for accuracies, by the test set they
were measured on) so the next start reuses them. A file for other weights is ignored,
a corrupt one ignored with a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..space import SubnetConfig

__all__ = ["STATS_FORMAT", "default_stats_path", "load_subnet_stats", "save_subnet_stats"]

STATS_FORMAT = "weightshare-subnet-stats"


def default_stats_path(checkpoint: str | os.PathLike) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.name + ".subnet-stats.pt")



def load_subnet_stats(net: Any, path: Path, sha256: str, dataset_key: str,
                      log: Callable[[str], None] = lambda _: None) -> dict[SubnetConfig, float]:
    """Give `net` the BN statistics an earlier start recalibrated (for SubNets it lacks) and
    return the test accuracies measured on `dataset_key`. A file for other weights is ignored;
    a corrupt one is ignored with a warning (it is rewritten on the next measurement)."""
    if not path.is_file():
        return {}
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(doc, dict) or doc.get("format") != STATS_FORMAT:
            raise ValueError(f"no 'format': {STATS_FORMAT!r}")
        if doc.get("checkpoint_sha256") != sha256:
            log(f"{path.name} is for other weights: ignored")
            return {}
        accs: dict[SubnetConfig, float] = {}
        for entry in doc["subnets"]:
            cfg = SubnetConfig.from_json(entry["subnet"])
            if cfg not in net.subnet_norms and entry.get("stats"):
                net.set_subnet_stats(cfg, {k: (m, v) for k, (m, v) in entry["stats"].items()})
            acc = (entry.get("acc") or {}).get(dataset_key)
            if acc is not None:
                accs[cfg] = float(acc)
        return accs
    except Exception as err:  # never let a stale side file stop the server
        warnings.warn(f"{path} is unusable ({type(err).__name__}: {err}); ignoring it",
                      stacklevel=2)
        log(f"warning: {path} is unusable ({err}); recalibrating instead")
        return {}


def save_subnet_stats(net: Any, path: Path, sha256: str, dataset_key: str,
                      accs: dict[SubnetConfig, float]) -> Path:
    """Write every SubNet's BN statistics on `net` and the accuracies, atomically."""
    from ..checkpoint import atomic_torch_save

    old: dict[str, dict[str, float]] = {}
    if path.is_file():
        try:
            doc = torch.load(path, map_location="cpu", weights_only=True)
            if doc.get("checkpoint_sha256") == sha256:
                old = {e["subnet"]: dict(e.get("acc") or {}) for e in doc["subnets"]}
        except Exception:
            old = {}
    entries = []
    for cfg, stats in net.subnet_norms.items():
        key = cfg.to_json()
        acc = old.get(key, {})
        if cfg in accs:
            acc[dataset_key] = float(accs[cfg])
        entries.append({"subnet": key, "acc": acc,
                        "stats": {k: [m.detach().cpu(), v.detach().cpu()]
                                  for k, (m, v) in stats.items()}})
    return atomic_torch_save({"format": STATS_FORMAT, "checkpoint_sha256": sha256,
                              "subnets": entries}, path)
