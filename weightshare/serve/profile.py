"""Latency profiles: how long each deployed SubNet takes at each batch size, on this machine.

A `Profile` is what the scheduler plans with and what the simulator executes
with: per deployed SubNet (named s0, s1, ... by increasing MACs) its accuracy,
and the median and p99 latency at batch sizes 1, 2, 4, ..., B (powers of two
plus B), plus the measured cost of loading that SubNet as a separate model
from disk (what INFaaS-style switching pays) and the SubNetAct switch cost.
It is saved as JSON with the machine, thread count and checkpoint identity,
and reused while those match. The data class is torch-free; `measure_profile`
imports torch (through the runtime) when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write_text, read_json
from ..space import SubnetConfig

if TYPE_CHECKING:
    from .runtime import SubNetActRuntime

__all__ = [
    "PROFILE_FORMAT",
    "DeployedSubnet",
    "Profile",
    "batch_sizes_up_to",
    "checkpoint_identity",
    "machine_identity",
    "measure_latency_rows",
    "measure_profile",
    "pareto_filter",
]

PROFILE_FORMAT = "weightshare-serve-profile"
STATS = ("median", "p99")


@dataclass(frozen=True)
class DeployedSubnet:
    """One SubNet the server may choose: its name, config, cost and test accuracy (%)."""

    name: str
    subnet: SubnetConfig
    macs: int
    params: int
    acc: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subnet": self.subnet.to_dict(), "macs": self.macs,
                "params": self.params, "acc": self.acc}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeployedSubnet:
        return cls(str(d["name"]), SubnetConfig.from_dict(d["subnet"]), int(d["macs"]),
                   int(d["params"]), float(d["acc"]))


def batch_sizes_up_to(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `max_batch`, then `max_batch` itself."""
    if max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch)


def machine_identity() -> dict[str, Any]:
    """The machine facts a profile is only valid for (no host name)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "python": platform.python_version()}


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
        return meta.get("machine") == machine_identity()


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


def measure_latency_rows(run: Callable[[Any, str], Any], name: str,
                         input_shape: tuple[int, ...], sizes: Sequence[int], *,
                         runs: int = 20, warmup: int = 3) -> tuple[list[float], list[float]]:
    """(median ms, p99 ms) of `run(batch, name)` at each batch size in `sizes`."""
    import torch

    from ..metrics import measure_latency

    median, p99 = [], []
    for b in sizes:
        x = torch.randn(b, *input_shape)
        lat = measure_latency(lambda x=x: run(x, name), warmup=warmup, runs=runs)
        median.append(round(lat.median_ms, 4))
        p99.append(round(lat.p99_ms, 4))
    return median, p99


def measure_profile(runtime: SubNetActRuntime, *, max_batch: int = 32, runs: int = 20,
                    warmup: int = 3, load_runs: int = 5, names: Sequence[str] | None = None,
                    checkpoint: dict[str, Any] | None = None,
                    store_dir: str | os.PathLike | None = None,
                    switch_rounds: int | None = None, show_progress: bool = False) -> Profile:
    """Time every deployed SubNet of `runtime` at batch sizes 1..`max_batch`.

    Also measures, per SubNet, loading it as a separately stored extracted model
    from disk (median of `load_runs`), and the SubNetAct switch cost. With
    `show_progress`, a progress bar (one line per interval off a terminal).
    """
    import tempfile

    import torch

    from .runtime import ExtractedModelStore

    sizes = batch_sizes_up_to(max_batch)
    deployed = [runtime.deployed[n] for n in names] if names else list(runtime.deployed.values())
    median: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    items: Any = deployed
    if show_progress:
        from ..progress import progress

        items = progress(deployed, desc="profiling", unit="subnet", log_interval_s=5.0)
    for d in items:
        median[d.name], p99[d.name] = measure_latency_rows(
            runtime.run, d.name, runtime.input_shape(d.name), sizes, runs=runs, warmup=warmup)
    with tempfile.TemporaryDirectory(prefix="ws-profile-") as tmp:
        store = ExtractedModelStore.from_runtime(runtime, store_dir or tmp)
        load_ms = {d.name: round(store.measure_load_ms(d.name, runs=load_runs), 3)
                   for d in deployed}
    switch = runtime.measure_switch_us(rounds=switch_rounds or max(20, 5 * runs))
    meta = {
        "machine": machine_identity(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "checkpoint": checkpoint or {},
        "runs": runs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profile_s": round(time.perf_counter() - t0, 2),
    }
    return Profile(tuple(deployed), sizes, median, p99, load_ms, round(switch["switch_us"], 2),
                   meta)
