"""The one timing module: how weightshare times a call, summarises the times, and says where.

Every latency weightshare reports goes through `repeat` (untimed warm-up calls,
then at least `runs` recorded ones, optionally for at least `min_seconds`) and
`timed_ms` (one call, synchronised with the device when asked). The statistics
are `median_ms` / `p99_ms` (what serving plans with: typical and tail) and
`fastest` (what latency tables keep: on a shared machine other processes only
ever add time). `measure_latency` combines them for a plain callable; the latency
table (`time_in_context`), the serving profile, the switch cost and the model
load cost build on the same two pieces.

`machine_identity()` is the machine a latency was measured on (CPU model,
logical cores, Python; no host name). Every latency artefact -- the per-op
latency table and the serving profile -- records it under ``meta["machine"]``,
and `same_machine` is the one check of it.

torch is imported only by `measure_latency`, so this module is cheap to import.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Latency",
    "fastest",
    "machine_identity",
    "measure_latency",
    "median_ms",
    "p99_ms",
    "repeat",
    "same_machine",
    "summarize",
    "timed_ms",
]

T = TypeVar("T")


# ------------------------------------------------------------------- the loop
def timed_ms(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> float:
    """Milliseconds of one `fn()` call (followed by `sync()`, e.g. a CUDA synchronise)."""
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - t0) * 1e3


def repeat(measure: Callable[[], T], *, warmup: int = 0, runs: int = 1,
           min_seconds: float = 0.0) -> list[T]:
    """`warmup` untimed calls of `measure`, then the results of at least `runs` calls (and
    of as many more as fit in `min_seconds`). `measure` does its own timing (e.g. with
    `timed_ms`) and returns what it measured: one number, or a tuple for several clocks
    read in one round (the switch cost times three calls a round)."""
    for _ in range(max(0, warmup)):
        measure()
    out: list[T] = []
    start = time.perf_counter()
    while len(out) < max(1, runs) or time.perf_counter() - start < min_seconds:
        out.append(measure())
    return out


# ----------------------------------------------------------------- statistics
def median_ms(times: Sequence[float]) -> float:
    return float(statistics.median(times))


def p99_ms(times: Sequence[float]) -> float:
    """The 99th percentile, read at the nearest rank (no interpolation)."""
    s = sorted(times)
    return float(s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))])


def fastest(times: Sequence[float]) -> float:
    return float(min(times))


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p99_ms: float
    runs: int

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p99_ms": self.p99_ms, "runs": self.runs}


def summarize(times: Sequence[float]) -> Latency:
    """Median and p99 of `times` (ms)."""
    return Latency(median_ms(times), p99_ms(times), len(times))


def measure_latency(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30,
                    min_seconds: float = 0.0, sync: Callable[[], None] | None = None) -> Latency:
    """Time `fn()`: `warmup` untimed calls, then at least `runs` timed ones (median, p99)."""
    import torch

    with torch.no_grad():
        return summarize(repeat(lambda: timed_ms(fn, sync), warmup=warmup, runs=runs,
                                min_seconds=min_seconds))


# ------------------------------------------------------------- the machine
def machine_identity() -> dict[str, Any]:
    """The machine facts a latency is only valid for (no host name)."""
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


def same_machine(recorded: Any) -> bool:
    """Whether a latency artefact's recorded ``meta["machine"]`` is this machine."""
    return isinstance(recorded, dict) and recorded == machine_identity()
