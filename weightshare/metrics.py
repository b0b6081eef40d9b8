"""Measured costs of real modules: counted MACs/params and wall-clock latency.

The analytic `SuperNet.cost(subnet)` is what search calls 100k times; the counts
here run the actual extracted model and are what the analytic numbers are
tested against. `measure_latency` is the one timing routine (warm-up, then the
median of repeated runs) shared by benchmarks, profiles and latency tables.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["count_macs_params", "measure_latency", "Latency"]


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs of every Conv2d / Linear in one forward of a batch of 1, and all parameters."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp, out) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs, sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p99_ms: float
    runs: int

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p99_ms": self.p99_ms, "runs": self.runs}


def measure_latency(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30,
                    min_seconds: float = 0.0, sync: Callable[[], None] | None = None) -> Latency:
    """Time `fn()`: `warmup` untimed calls, then at least `runs` timed ones (median, p99)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        if sync:
            sync()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < runs or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return Latency(statistics.median(times), p99, len(times))
