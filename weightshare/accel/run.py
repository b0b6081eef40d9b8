"""Glue for the CLI and the benchmark: simulator sweeps and FastSwitch pairs on a deployment.

The deployment (checkpoint + frontier file -> SubNets named s0.. by MACs) is
`weightshare.deployment.load_deployment`, re-exported here.

Load model of a simulation (documented in the README): the serving trace keeps
its shape (burstiness) but is stretched in time so its mean rate is `load`
queries per uncached service time of the most accurate SubNet on that device,
and every query's latency target is `slo_factor` times that service time. So
the same trace and the same targets drive every buffer size and policy.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..deployment import DeployedSubnet, load_deployment
from ..models import SuperNet
from .device import Device
from .fastswitch import DeltaLoader, FullLoader, save_supernet_weights
from .sim import AccelModel, SimConfig, scale_arrivals, simulate

__all__ = ["load_deployment", "trace_arrivals", "sweep", "fastswitch_pairs"]


def trace_arrivals(spec: str, model: AccelModel, device: Device, load: float) -> list[float]:
    from ..serve.traces import make_trace

    if load <= 0:
        raise ValueError(f"load must be positive, got {load}")
    service = model.uncached_latency_s(model.most_accurate(), device)
    return scale_arrivals(list(make_trace(spec).arrivals), load / service)


def sweep(model: AccelModel, devices: Sequence[Device], buffers_kb: Sequence[float],
          caches: Sequence[str], schedulers: Sequence[str], trace: str, *, load: float = 0.5,
          slo_factor: float = 2.0, cache_options: dict[str, Any] | None = None
          ) -> list[dict[str, Any]]:
    """One row per (device, buffer, cache, scheduler), in the benchmark's JSON shape."""
    rows = []
    for device in devices:
        arrivals = trace_arrivals(trace, model, device, load)
        slo_ms = 1e3 * slo_factor * model.uncached_latency_s(model.most_accurate(), device)
        for kb, cache, sched in itertools.product(buffers_kb, caches, schedulers):
            opts = dict(cache_options or {}) if cache == "subgraph-stationary" else {}
            res = simulate(model, device.with_buffer_kb(kb), arrivals,
                           SimConfig(slo_ms=slo_ms, cache=cache, scheduler=sched,
                                     cache_options=opts))
            rows.append({"device": device.name, "buffer_kb": kb, "policy": cache,
                         "scheduler": sched, "slo_ms": round(slo_ms, 4), **res.to_dict()})
    return rows


def fastswitch_pairs(net: SuperNet, deployed: Sequence[DeployedSubnet], directory: str | os.PathLike | None = None,
                     repeats: int = 5) -> list[dict[str, Any]]:
    """Every ordered pair (A, B), A != B: delta switch A->B vs loading B's whole extracted model.

    Times are medians over `repeats` (files in the page cache: both paths warm).
    """
    from ..models import create_supernet

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = save_supernet_weights(net, Path(tmp) / "supernet.safetensors")
        cfgs = {d.name: d.subnet for d in deployed}
        full = FullLoader(net, list(cfgs.values()), Path(tmp) / "extracted")
        loader = DeltaLoader(create_supernet(net.name, **net.config), path)
        rows = []
        for a, b in itertools.permutations(cfgs, 2):
            delta_s, full_s = [], []
            read = 0
            for _ in range(max(1, repeats)):
                loader.switch(cfgs[a])
                stats = loader.switch(cfgs[b])
                delta_s.append(stats.seconds)
                read = stats.bytes_read
                _, fstats = full.load(cfgs[b])
                full_s.append(fstats.seconds)
            rows.append({"from": a, "to": b, "delta_bytes": read,
                         "full_bytes": fstats.bytes_read,
                         "delta_ms": round(1e3 * statistics.median(delta_s), 4),
                         "full_ms": round(1e3 * statistics.median(full_s), 4)})
        return rows
