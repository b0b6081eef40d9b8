"""Measuring a serving profile: every deployed SubNet of a runtime, timed per batch size.

`measure_profile` is what `build_stack` runs when no saved profile matches; it
times each SubNet at batch sizes 1..B with `weightshare.timing`'s loop (median
and p99), the cost of loading it as a separate extracted model from disk, and the
SubNetAct switch cost, and records the machine, threads and checkpoint. The data
it produces is `weightshare.serve.profile.Profile` (which imports nothing of the
runtime, so the policies and the simulator read profiles without torch).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..timing import machine_identity, measure_latency
from .profile import Profile, batch_sizes_up_to
from .runtime import ExtractedModelStore, SubNetActRuntime

__all__ = ["measure_latency_rows", "measure_profile"]


def measure_latency_rows(run: Callable[[Any, str], Any], name: str,
                         input_shape: tuple[int, ...], sizes: Sequence[int], *,
                         runs: int = 20, warmup: int = 3) -> tuple[list[float], list[float]]:
    """(median ms, p99 ms) of `run(batch, name)` at each batch size in `sizes`."""
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
