"""FastSwitch in the real server: the same bursty trace against `weightshare serve` in the
normal mode (the whole SuperNet resident) and with `--switch-mode delta` (one SubNet
resident, switched by delta reads), on the same checkpoint, deployed SubNets and profile.

Per mode: the load generator's summary (SLO attainment, mean accuracy, p99 latency, ...),
the server's own Prometheus counters read from `/metrics` after the trace (SubNet switches,
bytes read and seconds spent by delta switches), the weights the backend holds and the
server process's resident memory.

Each mode runs, by default, in a fresh interpreter (`python -m
weightshare.experiments.fastswitch_live`, JSON in and out, through `weightshare.procs`),
so its resident memory is its own and not the other mode's or the caller's. The load
generator is a further process (see `weightshare.serve.loadgen`). An experiment, not
library: `benchmarks/accel.py --live` runs it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MODES", "live_switching", "serve_mode", "format_live_table", "parse_metrics"]

MODES = {"normal": None, "delta": "delta"}  # mode name -> StackConfig.switch_mode

_COUNTERS = {"switches": "weightshare_subnet_switches_total",
             "switch_bytes": "weightshare_switch_bytes_total",
             "switch_seconds": "weightshare_switch_seconds_total"}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition -> {sample name: value}, summed over labels."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux: the peak of this process over its whole life.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def serve_mode(base: Any, mode: str, *, policy: str, trace: str, slo_ms: float,
               queue_capacity: int = 1024) -> dict[str, Any]:
    """Build the stack for `mode` ("normal" or "delta"), serve it on 127.0.0.1 with a fresh
    `policy` worker, replay `trace` (a trace spec) from a load-generator process, read the
    server's `/metrics`, shut down. Returns one row (see the module docstring)."""
    from ..serve.live import started_server
    from ..serve.loadgen import LoadConfig, run_load_process
    from ..serve.memory import module_bytes, rss_bytes
    from ..serve.stack import build_stack
    from ..serve.traces import make_trace

    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    stack = build_stack(dataclasses.replace(base, switch_mode=MODES[mode]))
    try:
        runtime = stack.runtime
        if mode == "delta":
            backend = stack.backend
            # A device boots with some SubNet resident; start from the most accurate, so the
            # counters below see only the switches the traffic caused.
            backend.prepare(stack.profile.most_accurate())
            loads0 = backend.loads
        else:
            backend = runtime
            held = module_bytes(runtime.net) + sum(
                m.numel() * m.element_size() + v.numel() * v.element_size()
                for d in runtime.deployed.values()
                for m, v in runtime.net.subnet_norms[d.subnet].values())
        rss_start = rss_bytes()
        tr = make_trace(trace)
        t0 = time.perf_counter()
        with started_server(stack, policy, slo_ms=slo_ms, queue_capacity=queue_capacity,
                            backend=backend) as server:
            res = run_load_process(tr, LoadConfig(
                url=server.url, slo_ms=slo_ms, input_shape=runtime.input_shape(),
                max_requests=None, max_seconds=None))
            with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
                counters = parse_metrics(r.read().decode())
        wall = time.perf_counter() - t0
        row: dict[str, Any] = {"mode": mode, "switch_mode": MODES[mode] or "none",
                               **res.summary, "http_statuses": res.statuses}
        row.update({k: counters.get(v, 0.0) for k, v in _COUNTERS.items()})
        row["switches"] = int(row["switches"])
        row["switch_bytes"] = int(row["switch_bytes"])
        if mode == "delta":
            row["delta_loads"] = backend.loads - loads0
            held = backend.peak_resident_bytes
        else:
            row["delta_loads"] = 0
        row.update({"weights_held_bytes": int(held), "rss_start_bytes": rss_start,
                    "rss_end_bytes": rss_bytes(), "peak_rss_bytes": _peak_rss_bytes(),
                    "wall_s": round(wall, 2)})
        return row
    finally:
        stack.close()


def _serve_in_process(job: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """`serve_mode` in a fresh interpreter (its memory is then its own), JSON in and out."""
    from ..procs import run_json_module

    return run_json_module("weightshare.experiments.fastswitch_live", job, timeout_s,
                           f"the {job['mode']} server")


def live_switching(base: Any, *, seconds: float = 8.0, cv2: float = 8.0,
                   rate: float | None = None, slo_ms: float | None = None,
                   load: float = 0.7, max_rate: float = 60.0,
                   policy: str = "slackfit", seed: int = 0, isolate: bool = True,
                   log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Both modes on the same gamma trace (`seconds` long, burstiness `cv2`).

    base: the `StackConfig` both modes serve (its `switch_mode` is replaced per mode). Its
        profile is measured here first when it cannot be reused, so both modes reuse it:
        same deployed SubNets, accuracies and latencies.
    slo_ms, rate: None: derived from the profile (`load.slo_and_rate`: `load` times what the
        most accurate SubNet sustains, at most `max_rate` requests per second).
    isolate: run each server in a fresh interpreter (needed for per-mode resident memory);
        False runs both in this process (faster; the tests).
    """
    from ..serve.stack import build_stack
    from ..serve.traces import make_trace
    from .load import slo_and_rate

    stack = build_stack(dataclasses.replace(base, switch_mode=None), log=log)
    try:
        prof = stack.profile
        slo, qps = slo_and_rate(prof, slo_ms=slo_ms, rate=rate, load=load, max_rate=max_rate)
        profile_path = str(stack.profile_path)
    finally:
        stack.close()
    base = dataclasses.replace(base, profile=profile_path, reprofile=False)
    spec = f"gamma:rate={qps:g},cv2={cv2:g},duration={seconds:g},seed={seed}"
    n = len(make_trace(spec))
    log(f"live FastSwitch: {spec} ({n} requests, SLO {slo:g} ms, {policy}), "
        "normal vs --switch-mode delta")
    rows = []
    for mode in MODES:
        job = {"stack": dataclasses.asdict(base), "mode": mode, "policy": policy,
               "trace": spec, "slo_ms": slo}
        if isolate:
            row = _serve_in_process(job, timeout_s=seconds + 300)
        else:
            row = serve_mode(base, mode, policy=policy, trace=spec, slo_ms=slo)
            row["peak_rss_bytes"] = None  # the caller's whole life, not this server's
        log(f"  {mode}: SLO met {100 * row['slo_attainment']:.1f} %, acc "
            f"{row['mean_acc']:.2f} %, p99 {row['p99_ms']:.1f} ms, {row['switches']} switches, "
            f"{row['switch_bytes'] / 1e6:.2f} MB in {row['switch_seconds']:.3f} s")
        rows.append(row)
    return {"trace": spec, "requests": n, "slo_ms": slo, "rate": qps, "policy": policy,
            "isolated": isolate, "rows": rows}


def format_live_table(result: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows for a Markdown table of `live_switching`'s result."""
    headers = ["mode", "SLO met %", "mean acc %", "p99 ms", "switches", "delta loads",
               "switch MB read", "switch s", "ms / switch", "weights held MB",
               "peak RSS MB"]
    rows = []
    for r in result["rows"]:
        per = 1e3 * r["switch_seconds"] / r["delta_loads"] if r["delta_loads"] else math.nan
        rows.append([r["mode"], round(100 * r["slo_attainment"], 1), round(r["mean_acc"], 2),
                     round(r["p99_ms"], 1), r["switches"], r["delta_loads"],
                     round(r["switch_bytes"] / 1e6, 2), round(r["switch_seconds"], 3),
                     "-" if math.isnan(per) else round(per, 2),
                     round(r["weights_held_bytes"] / 1e6, 2),
                     round(r["peak_rss_bytes"] / 1e6, 1) if r["peak_rss_bytes"] else "-"])
    return headers, rows


def _main() -> int:
    from ..serve.stack import StackConfig

    job = json.loads(sys.stdin.read())
    base = StackConfig(**job["stack"])
    row = serve_mode(base, job["mode"], policy=job["policy"], trace=job["trace"],
                     slo_ms=float(job["slo_ms"]))
    sys.stdout.write("\n" + json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
