"""Latency profiles: how long each deployed SubNet takes at each batch size, on this machine.

A `Profile` is what the scheduler plans with and what the simulator executes
with: per deployed SubNet (named s0, s1, ... by increasing MACs) its accuracy,
and the median and p99 latency at batch sizes 1, 2, 4, ..., B (powers of two
plus B), plus the measured cost of loading that SubNet as a separate model
from disk (what INFaaS-style switching pays) and the SubNetAct switch cost.
It is saved as JSON with the machine, thread count and checkpoint identity,
and reused while those match (the machine as `weightshare.timing` identifies it).
This module is torch-free and imports nothing of the runtime: measuring a profile
is `weightshare.serve.profiling`. `DeployedSubnet` lives in `weightshare.deployment`
and `machine_identity` in `weightshare.timing` (both re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..deployment import DeployedSubnet
from ..io import atomic_write_text, read_json
from ..timing import machine_identity, same_machine

__all__ = [
    "PROFILE_FORMAT",
    "DeployedSubnet",
    "Profile",
    "batch_sizes_up_to",
    "checkpoint_identity",
    "machine_identity",
    "pareto_filter",
]

PROFILE_FORMAT = "weightshare-serve-profile"
STATS = ("median", "p99")


def batch_sizes_up_to(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `max_batch`, then `max_batch` itself."""
    if max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch)


def checkpoint_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and SHA-256 of a checkpoint file: a profile belongs to these exact weights."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": h.hexdigest()}


@dataclass
class Profile:
    """Deployed SubNets (by increasing MACs) and their latency per batch size, in ms."""

    subnets: tuple[DeployedSubnet, ...]
    batch_sizes: tuple[int, ...]
    median_ms: dict[str, list[float]]
    p99_ms: dict[str, list[float]]
    load_ms: dict[str, float] = field(default_factory=dict)
    switch_us: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.subnets = tuple(sorted(self.subnets, key=lambda s: (s.macs, s.name)))
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if not self.subnets:
            raise ValueError("a profile needs at least one deployed SubNet")
        if list(self.batch_sizes) != sorted(set(self.batch_sizes)) or self.batch_sizes[0] != 1:
            raise ValueError(f"batch sizes must be increasing from 1, got {list(self.batch_sizes)}")
        self._by_name = {s.name: s for s in self.subnets}
        if len(self._by_name) != len(self.subnets):
            raise ValueError("deployed SubNet names must be unique")
        for table_name, table in (("median_ms", self.median_ms), ("p99_ms", self.p99_ms)):
            for s in self.subnets:
                row = table.get(s.name)
                if row is None or len(row) != len(self.batch_sizes):
                    raise ValueError(
                        f"{table_name} needs {len(self.batch_sizes)} latencies for {s.name!r}"
                    )

    # ------------------------------------------------------------------ lookup
    @property
    def names(self) -> list[str]:
        return [s.name for s in self.subnets]

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def get(self, name: str) -> DeployedSubnet:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {self.names}") from None

    def acc(self, name: str) -> float:
        return self.get(name).acc

    def most_accurate(self) -> str:
        # Ties go to the cheaper SubNet.
        return max(self.subnets, key=lambda s: (s.acc, -s.macs)).name

    def resolve(self, spec: str) -> str:
        """A deployed name from 's3', 'smallest', 'largest', 'most-accurate' or an index."""
        word = spec.strip().lower()
        if word == "smallest":
            return self.subnets[0].name
        if word == "largest":
            return self.subnets[-1].name
        if word in ("most-accurate", "maxacc"):
            return self.most_accurate()
        if word.isdigit() and int(word) < len(self.subnets):
            return self.subnets[int(word)].name
        return self.get(spec.strip()).name

    def level(self, batch: int) -> int:
        """Index of the smallest profiled batch size >= `batch`."""
        if batch < 1 or batch > self.max_batch:
            raise ValueError(f"batch {batch} is outside the profiled 1..{self.max_batch}")
        lo, hi = 0, len(self.batch_sizes) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.batch_sizes[mid] >= batch:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def latency_ms(self, name: str, batch: int, stat: str = "p99") -> float:
        """Latency of `name` at `batch`, read at the next profiled size up (never optimistic)."""
        table = self._table(stat)
        try:
            row = table[name]
        except KeyError:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {self.names}") from None
        return row[self.level(batch)]

    def _table(self, stat: str) -> dict[str, list[float]]:
        if stat == "median":
            return self.median_ms
        if stat == "p99":
            return self.p99_ms
        raise ValueError(f"unknown latency statistic {stat!r}; use one of {STATS}")

    # ------------------------------------------------------------- (de)serial
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "subnets": [s.to_dict() for s in self.subnets],
            "batch_sizes": list(self.batch_sizes),
            "median_ms": self.median_ms,
            "p99_ms": self.p99_ms,
            "load_ms": self.load_ms,
            "switch_us": self.switch_us,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        if d.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a serving profile (no 'format': {PROFILE_FORMAT!r})")
        return cls(
            subnets=tuple(DeployedSubnet.from_dict(s) for s in d["subnets"]),
            batch_sizes=tuple(d["batch_sizes"]),
            median_ms={k: [float(v) for v in row] for k, row in d["median_ms"].items()},
            p99_ms={k: [float(v) for v in row] for k, row in d["p99_ms"].items()},
            load_ms={k: float(v) for k, v in d.get("load_ms", {}).items()},
            switch_us=d.get("switch_us"),
            meta=d.get("meta", {}),
        )

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        path = Path(path)
        data = read_json(path, "profile")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid serving profile: {err}") from None

    def matches(self, *, checkpoint: dict[str, Any] | None = None, threads: int | None = None,
                max_batch: int | None = None) -> bool:
        """Whether this profile still describes the given checkpoint, thread count and machine."""
        meta = self.meta
        if checkpoint is not None and meta.get("checkpoint", {}).get("sha256") != checkpoint.get(
                "sha256"):
            return False
        if threads is not None and meta.get("threads") != threads:
            return False
        if max_batch is not None and self.max_batch != max_batch:
            return False
        return same_machine(meta.get("machine"))


def pareto_filter(subnets: Sequence[DeployedSubnet], latency_ms: dict[str, float]
                  ) -> tuple[list[DeployedSubnet], list[dict[str, Any]]]:
    """Keep the SubNets non-dominated in (accuracy up, batch-1 latency down); say why others go.

    B is dominated by A when A is at least as accurate and at least as fast, and strictly
    better in one of the two. Returns (kept by MACs, dropped as {"name", "subnet", "acc",
    "latency_ms", "dominated_by", "reason"}).
    """
    kept, dropped = [], []
    for b in subnets:
        lb = latency_ms[b.name]
        better = [a for a in subnets if a is not b and a.acc >= b.acc and latency_ms[a.name] <= lb
                  and (a.acc > b.acc or latency_ms[a.name] < lb)]
        if not better:
            kept.append(b)
            continue
        # Name the dominating SubNet that is fastest (ties: most accurate), the clearest reason.
        a = min(better, key=lambda s: (latency_ms[s.name], -s.acc))
        dropped.append({
            "name": b.name, "subnet": b.subnet.to_dict(), "acc": b.acc,
            "latency_ms": round(lb, 4), "dominated_by": a.name,
            "reason": f"at least as accurate ({a.acc:.2f} % vs {b.acc:.2f} %) and at least as "
                      f"fast at batch 1 ({latency_ms[a.name]:.3f} ms vs {lb:.3f} ms)",
        })
    return sorted(kept, key=lambda s: (s.macs, s.name)), dropped
