"""Arrival traces: when each request is sent. Synthetic processes and Azure Functions replay.

A `Trace` is a sorted tuple of arrival times in seconds from 0. Generators are
registered by name and built from a spec string (`make_trace("gamma:rate=100,
cv2=4,duration=10")`), so the CLI, the simulator and the benchmarks name
traces the same way:

* `poisson(rate, duration)` -- exponential inter-arrivals.
* `gamma(rate, cv2, duration)` -- gamma inter-arrivals with squared coefficient
  of variation `cv2` (1 is Poisson; 4 and 8 are the bursty traces of the
  SuperServe paper); the mean rate stays `rate`.
* `varying(rates, segment, cv2)` -- piecewise-constant rate: "rates=50/200/50"
  holds each rate for `segment` seconds (gamma arrivals within each).
* `azure(path, minutes, start, seconds_per_minute, scale)` -- per-minute
  invocation counts in the layout of the public Azure Functions 2019 trace
  (columns HashOwner,HashApp,HashFunction,Trigger,1..1440), summed over the
  file's functions, time-compressed (a trace minute lasts `seconds_per_minute`)
  and scaled; each minute's arrivals are spread uniformly at random in it.
  Without `path` it reads the small *synthetic* sample shipped in
  `weightshare/serve/data/` (same layout, made by `write_azure_sample`; the
  real trace is not downloaded).

Every generator is seeded: the same spec and seed give the same trace.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry
from .spec import make_from_spec

__all__ = [
    "AZURE_SAMPLE",
    "Trace",
    "azure_trace",
    "gamma_trace",
    "list_traces",
    "make_trace",
    "poisson_trace",
    "read_azure_counts",
    "register_trace",
    "varying_trace",
    "write_azure_sample",
]

AZURE_SAMPLE = Path(__file__).resolve().parent / "data" / "azure_functions_sample.csv"
AZURE_FIXED_COLUMNS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Trace:
    """Arrival times (s, sorted, from 0) and how they were made."""

    arrivals: tuple[float, ...]
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(b < a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)):
            raise ValueError("trace arrivals must be sorted")
        if self.arrivals and self.arrivals[0] < 0:
            raise ValueError("trace arrivals must be >= 0")

    def __len__(self) -> int:
        return len(self.arrivals)

    @property
    def duration(self) -> float:
        return float(self.params.get("duration", self.arrivals[-1] if self.arrivals else 0.0))

    @property
    def mean_rate(self) -> float:
        return len(self.arrivals) / self.duration if self.duration > 0 else 0.0

    def limit(self, max_requests: int | None = None, max_seconds: float | None = None) -> Trace:
        """The first `max_requests` arrivals before `max_seconds` (bounded replays)."""
        arr = [t for t in self.arrivals if max_seconds is None or t < max_seconds]
        if max_requests is not None:
            arr = arr[:max_requests]
        params = dict(self.params)
        if max_seconds is not None:
            params["duration"] = min(self.duration, max_seconds)
        return Trace(tuple(arr), self.name, params)

    def cv2(self) -> float:
        """Squared coefficient of variation of the inter-arrival times."""
        gaps = [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]
        if len(gaps) < 2:
            return float("nan")
        mean = sum(gaps) / len(gaps)
        var = sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)
        return var / mean**2 if mean > 0 else float("nan")


# ------------------------------------------------------------------- registry
_TRACES: Registry[Callable[..., Trace]] = Registry("trace")


def register_trace(name: str) -> Callable[[Callable[..., Trace]], Callable[..., Trace]]:
    return _TRACES.register(name)


def list_traces() -> list[str]:
    return _TRACES.names()


def make_trace(spec: str, **overrides: Any) -> Trace:
    """A trace from "name:key=value,...", e.g. "gamma:rate=100,cv2=4,duration=10,seed=1"."""
    return make_from_spec(spec, _TRACES, overrides)


# ------------------------------------------------------------------ processes
def _check(rate: float, duration: float) -> None:
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be > 0, got rate={rate}, duration={duration}")


def _gamma_arrivals(rng: random.Random, rate: float, cv2: float, start: float, end: float,
                    out: list[float]) -> None:
    if cv2 <= 0:
        raise ValueError(f"cv2 must be > 0, got {cv2}")
    shape = 1.0 / cv2  # CV^2 of a gamma variable is 1 / shape
    scale = 1.0 / (rate * shape)  # mean gap = shape * scale = 1 / rate
    t = start + rng.gammavariate(shape, scale)
    while t < end:
        out.append(t)
        t += rng.gammavariate(shape, scale)


@register_trace("poisson")
def poisson_trace(rate: float = 50.0, duration: float = 10.0, seed: int = 0) -> Trace:
    """Poisson arrivals at `rate` per second for `duration` seconds."""
    _check(rate, duration)
    rng = random.Random(seed)
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        out.append(t)
        t += rng.expovariate(rate)
    return Trace(tuple(out), "poisson", {"rate": rate, "duration": duration, "seed": seed})


@register_trace("gamma")
def gamma_trace(rate: float = 50.0, cv2: float = 4.0, duration: float = 10.0,
                seed: int = 0) -> Trace:
    """Gamma inter-arrivals: mean rate `rate`, burstiness CV^2 = `cv2`."""
    _check(rate, duration)
    out: list[float] = []
    _gamma_arrivals(random.Random(seed), rate, cv2, 0.0, duration, out)
    return Trace(tuple(out), "gamma",
                 {"rate": rate, "cv2": cv2, "duration": duration, "seed": seed})


@register_trace("varying")
def varying_trace(rates: Sequence[float] | float = (50.0, 200.0, 50.0), segment: float = 5.0,
                  cv2: float = 1.0, seed: int = 0) -> Trace:
    """Piecewise-constant rate: each of `rates` for `segment` seconds."""
    rates = [float(rates)] if isinstance(rates, int | float) else [float(r) for r in rates]
    if not rates or segment <= 0 or min(rates) < 0:
        raise ValueError("varying needs rates >= 0 and segment > 0")
    rng = random.Random(seed)
    out: list[float] = []
    for i, r in enumerate(rates):
        if r > 0:
            _gamma_arrivals(rng, r, cv2, i * segment, (i + 1) * segment, out)
    return Trace(tuple(out), "varying", {"rates": rates, "segment": segment, "cv2": cv2,
                                         "duration": segment * len(rates), "seed": seed})


# ---------------------------------------------------------------------- Azure
def read_azure_counts(path: str | os.PathLike = AZURE_SAMPLE,
                      function: str | int | None = None) -> list[int]:
    """Per-minute invocation counts (1440) of an Azure Functions 2019 invocation file.

    function: None sums all rows; an int picks that row; a string picks the row
    whose HashFunction starts with it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Azure Functions trace file at {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        expected = [*AZURE_FIXED_COLUMNS, *(str(i) for i in range(1, MINUTES_PER_DAY + 1))]
        if header is None or [h.strip() for h in header] != expected:
            raise ValueError(
                f"{path}: not in the Azure Functions 2019 layout (header "
                f"{','.join(AZURE_FIXED_COLUMNS)},1..{MINUTES_PER_DAY})"
            )
        total = [0] * MINUTES_PER_DAY
        matched = 0
        for i, row in enumerate(reader):
            if len(row) != len(expected):
                raise ValueError(f"{path}: row {i + 2} has {len(row)} columns, expected "
                                 f"{len(expected)}")
            if function is not None and not (
                (isinstance(function, int) and i == function)
                or (isinstance(function, str) and row[2].startswith(function))
            ):
                continue
            try:
                counts = [int(c) for c in row[len(AZURE_FIXED_COLUMNS):]]
            except ValueError:
                raise ValueError(f"{path}: row {i + 2} has a non-integer count") from None
            if min(counts) < 0:
                raise ValueError(f"{path}: row {i + 2} has a negative count")
            total = [a + b for a, b in zip(total, counts, strict=True)]
            matched += 1
    if matched == 0:
        raise ValueError(f"{path}: no function matched {function!r}")
    return total


@register_trace("azure")
def azure_trace(path: str | None = None, minutes: int = 10, start: int = 0,
                seconds_per_minute: float = 1.0, scale: float = 1.0,
                function: str | int | None = None, seed: int = 0) -> Trace:
    """Replay `minutes` trace minutes from minute `start`, each lasting `seconds_per_minute`."""
    if minutes < 1 or not 0 <= start < MINUTES_PER_DAY or seconds_per_minute <= 0 or scale <= 0:
        raise ValueError("azure needs minutes >= 1, 0 <= start < 1440, seconds_per_minute > 0 "
                         "and scale > 0")
    counts = read_azure_counts(path or AZURE_SAMPLE, function)[start:start + minutes]
    rng = random.Random(seed)
    out: list[float] = []
    for m, c in enumerate(counts):
        n = int(c * scale) + (1 if rng.random() < (c * scale) % 1 else 0)
        out.extend(sorted((m + rng.random()) * seconds_per_minute for _ in range(n)))
    return Trace(tuple(out), "azure", {
        "path": str(path or AZURE_SAMPLE), "start": start, "minutes": len(counts),
        "seconds_per_minute": seconds_per_minute, "scale": scale, "function": function,
        "duration": len(counts) * seconds_per_minute, "seed": seed,
    })


def write_azure_sample(path: str | os.PathLike = AZURE_SAMPLE, n_functions: int = 8,
                       seed: int = 0) -> Path:
    """Write a small *synthetic* per-minute invocation file in the Azure 2019 layout.

    Each function has a diurnal base rate, a trigger-dependent shape (timers fire
    on a period, HTTP functions follow the day and burst) and occasional bursts,
    so replays show the rate swings the real trace is known for. Not real data.
    """
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    triggers = ("http", "timer", "queue", "event", "http", "http", "storage", "orchestration")

    def h(*parts: object) -> str:
        return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*AZURE_FIXED_COLUMNS, *range(1, MINUTES_PER_DAY + 1)])
        for i in range(n_functions):
            trig = triggers[i % len(triggers)]
            base = rng.choice((5, 20, 60, 150, 400))
            phase = rng.uniform(0, 2 * math.pi)
            period = rng.choice((1, 5, 15, 60))
            counts = []
            burst = 0
            for m in range(MINUTES_PER_DAY):
                day = 1.0 + 0.6 * math.sin(2 * math.pi * m / MINUTES_PER_DAY + phase)
                if trig == "timer":
                    c = base if m % period == 0 else 0
                else:
                    if burst == 0 and rng.random() < 0.01:
                        burst = rng.randint(2, 8)
                    mult = rng.uniform(3, 8) if burst else 1.0
                    burst = max(0, burst - 1)
                    lam = base * day * mult
                    c = max(0, int(rng.gauss(lam, math.sqrt(lam))))
                counts.append(c)
            w.writerow([h(seed, "owner", i // 3), h(seed, "app", i // 2), h(seed, "fn", i), trig,
                        *counts])
    return path
