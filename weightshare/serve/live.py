"""The real server on loopback, driven by the real load generator: the demo's serving step,
the simulator check and the overhead measurement of `benchmarks/serving.py`.

Each run starts a fresh `InferenceWorker` + Open Inference Protocol app for one policy on
an already built `Stack` (one SuperNet, one profile), binds 127.0.0.1 on a free port,
replays a trace with the open-loop load generator in a separate process (a client in this
process would contend for the interpreter lock with the server it measures), then shuts
the server down gracefully. Nothing here is listening once a function returns.

* `replay`: one policy, one trace, over HTTP -> the load generator's report.
* `compare_with_simulator`: the same trace and policy on the server and in the simulator
  (same profile, same SLO, same queue bound) -> both SLO attainments and the difference.
* `measure_overhead`: the server's throughput at saturation (closed loop) vs the raw
  model's batched throughput on the same SubNet.
* `serving_demo` + `format_demo_table`: SlackFit vs a fixed SubNet on a short bursty trace;
  `demo_serving` does it from a checkpoint (the end of `weightshare demo`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .loadgen import (
    LoadConfig,
    LoadResult,
    run_closed_loop_process,
    run_load_process,
    run_load_sync,
)
from .profile import Profile
from .traces import Trace, make_trace

__all__ = [
    "DemoConfig",
    "compare_with_simulator",
    "demo_serving",
    "demo_settings",
    "format_demo_table",
    "measure_overhead",
    "raw_throughput",
    "replay",
    "serving_demo",
    "started_server",
    "write_deploy_file",
]


def started_server(stack: Any, policy: str, *, slo_ms: float, queue_capacity: int = 1024,
                   token: str | None = None, backend: Any = None) -> Any:
    """A `ServerThread` (not yet started) serving `stack` with a fresh worker for `policy`.

    backend: what the worker runs batches on; None: the stack's SuperNet runtime (every
    SubNet resident). `stack.backend` serves as `weightshare serve` would, e.g. with
    `--switch-mode delta`.
    """
    from .metrics import ServeMetrics
    from .policies import make_policy
    from .server import ServerConfig, ServerThread, create_app
    from .worker import InferenceWorker

    metrics = ServeMetrics()  # per run: counters of one policy do not leak into the next
    worker = InferenceWorker(stack.runtime if backend is None else backend,
                             make_policy(policy), stack.profile,
                             queue_capacity=queue_capacity, metrics=metrics)
    app = create_app(worker, stack.runtime.input_shape(), stack.runtime.num_classes,
                     ServerConfig(slo_ms=slo_ms, max_request_batch=stack.profile.max_batch,
                                  token=token), metrics)
    return ServerThread(app, host="127.0.0.1", port=0)


def replay(stack: Any, policy: str, trace: Trace, *, slo_ms: float,
           queue_capacity: int = 1024, client: str = "process",
           max_seconds: float | None = None) -> LoadResult:
    """Serve `stack` with `policy` on 127.0.0.1 and replay `trace` against it over HTTP.

    client: "process" (default, a separate load-generator process) or "thread" (in this
    process: cheaper to start, but it competes with the server for the interpreter lock).
    """
    if client not in ("process", "thread"):
        raise ValueError(f"client must be 'process' or 'thread', got {client!r}")
    with started_server(stack, policy, slo_ms=slo_ms, queue_capacity=queue_capacity) as server:
        cfg = LoadConfig(url=server.url, slo_ms=slo_ms, input_shape=stack.runtime.input_shape(),
                         max_requests=None, max_seconds=max_seconds)
        run = run_load_process if client == "process" else run_load_sync
        return run(trace, cfg)


def compare_with_simulator(stack: Any, policies: Sequence[str], trace: Trace, *,
                           slo_ms: float, queue_capacity: int = 1024, client: str = "process",
                           log: Callable[[str], None] = lambda _: None
                           ) -> list[dict[str, Any]]:
    """Each policy on the real server and in the simulator, on the same trace, profile, SLO
    and queue bound. Per policy: both summaries and `diff_points`, server minus simulator SLO
    attainment in percentage points (the issue's check: |diff| <= 5)."""
    from .policies import make_policy
    from .simulate import SimConfig, simulate

    rows = []
    for p in policies:
        server = replay(stack, p, trace, slo_ms=slo_ms, queue_capacity=queue_capacity,
                        client=client).summary
        sim = simulate(make_policy(p), stack.profile, trace,
                       SimConfig(slo_ms=slo_ms, queue_capacity=queue_capacity)).summary
        diff = 100.0 * (server["slo_attainment"] - sim["slo_attainment"])
        rows.append({"policy": p, "server": server, "sim": sim, "diff_points": diff})
        log(f"  {p}: server {100 * server['slo_attainment']:.1f} % vs simulator "
            f"{100 * sim['slo_attainment']:.1f} % SLO attainment ({diff:+.1f} points)")
    return rows


def raw_throughput(stack: Any, subnet: str, batch: int | None = None, runs: int = 20
                   ) -> dict[str, Any]:
    """Images per second of `subnet` called directly at `batch` (default: the largest
    profiled), no server: the ceiling the server's throughput is compared with."""
    import torch

    from ..metrics import measure_latency

    b = batch or stack.profile.max_batch
    x = torch.randn(b, *stack.runtime.input_shape(subnet))
    lat = measure_latency(lambda: stack.runtime.run(x, subnet), warmup=3, runs=runs)
    return {"subnet": subnet, "batch": b, "median_ms": lat.median_ms,
            "throughput_ips": b * 1000.0 / lat.median_ms}


def measure_overhead(stack: Any, subnet: str | None = None, *, seconds: float = 3.0,
                     concurrency: int | None = None, runs: int = 20) -> dict[str, Any]:
    """Server throughput at saturation vs the raw model's batched throughput, one SubNet.

    The server runs `fixed:<subnet>` (batching up to the profile's largest batch) with a
    deadline long enough that nothing is dropped; `concurrency` closed-loop clients (default
    twice the largest batch, so a full batch always waits) keep it saturated with
    single-image requests. `ratio` = server / raw (the issue's goal: >= 0.7).
    """
    subnet = subnet or stack.profile.most_accurate()
    conc = concurrency or 2 * stack.profile.max_batch
    raw = raw_throughput(stack, subnet, runs=runs)
    slo_ms = 30_000.0
    with started_server(stack, f"fixed:{subnet}", slo_ms=slo_ms,
                        queue_capacity=max(1024, 2 * conc)) as server:
        cfg = LoadConfig(url=server.url, slo_ms=slo_ms,
                         input_shape=stack.runtime.input_shape(), timeout_s=60.0)
        sat = run_closed_loop_process(cfg, conc, seconds)
    return {"subnet": subnet, "server_throughput": sat["throughput_rps"],
            "raw_model_throughput": raw["throughput_ips"], "raw_batch": raw["batch"],
            "ratio": sat["throughput_rps"] / raw["throughput_ips"],
            "server_mean_batch": sat["mean_batch"], "concurrency": conc,
            "http_statuses": sat["http_statuses"]}


# ------------------------------------------------------------------------ demo
@dataclass(frozen=True)
class DemoConfig:
    """The serving step of the demo.

    seconds, cv2: length and burstiness (squared coefficient of variation of the gamma
        inter-arrival times) of the replayed trace.
    slo_ms: per-request deadline; None: `demo_settings` derives it from the profile.
    rate: mean requests per second; None: derived from the profile, at most `max_rate`.
    fixed: the fixed SubNet to compare with; None: the deployed SubNet whose accuracy is
        closest to SlackFit's measured mean accuracy (the comparison at equal accuracy).
    """

    seconds: float = 4.0
    cv2: float = 8.0
    slo_ms: float | None = None
    rate: float | None = None
    max_rate: float = 60.0
    load: float = 0.7
    fixed: str | None = None
    seed: int = 0
    client: str = "process"

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.cv2 <= 0 or self.max_rate <= 0 or self.load <= 0:
            raise ValueError("seconds, cv2, max_rate and load must be > 0")


def demo_settings(profile: Profile, cfg: DemoConfig) -> tuple[float, float]:
    """(slo_ms, rate) for the demo trace.

    SLO: five times the most accurate SubNet's batch-1 latency plus 20 ms for HTTP and
    JSON, which the profile does not see. Rate: `load` times what the most accurate
    SubNet sustains when its batches take at most half the SLO -- so a burst overwhelms a
    fixed large SubNet while smaller SubNets and bigger batches can absorb it -- capped at
    `max_rate` because the load generator shares this machine with the server (on 2 busy
    cores, bursts above ~60 req/s on average overwhelm every policy alike).
    """
    big = profile.most_accurate()
    slo = cfg.slo_ms or round(5.0 * profile.latency_ms(big, 1, "median") + 20.0, 1)
    if cfg.rate is not None:
        return slo, cfg.rate
    sustained = [b * 1000.0 / profile.latency_ms(big, b, "median") for b in profile.batch_sizes
                 if profile.latency_ms(big, b, "median") <= slo / 2]
    peak = max(sustained or [1000.0 / profile.latency_ms(big, 1, "median")])
    return slo, round(min(cfg.max_rate, cfg.load * peak), 1)


def _nearest_fixed(profile: Profile, acc: float) -> str:
    if math.isnan(acc):
        return profile.most_accurate()
    # Ties go to the more accurate SubNet: the comparison should not favour SlackFit.
    return min(profile.subnets, key=lambda s: (abs(s.acc - acc), -s.acc)).name


def serving_demo(stack: Any, cfg: DemoConfig | None = None,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """SlackFit vs a fixed SubNet on the same short bursty trace, each on a freshly started
    server on 127.0.0.1 with the real load generator. Returns the settings and one summary
    row per policy (`format_demo_table` prints them)."""
    cfg = cfg or DemoConfig()
    prof = stack.profile
    slo_ms, rate = demo_settings(prof, cfg)
    spec = f"gamma:rate={rate:g},cv2={cfg.cv2:g},duration={cfg.seconds:g},seed={cfg.seed}"
    trace = make_trace(spec)
    log(f"replaying {spec} ({len(trace)} requests, SLO {slo_ms:g} ms) against "
        "http://127.0.0.1 (free port), one fresh server per policy")
    rows = []
    t0 = time.perf_counter()
    first = replay(stack, "slackfit", trace, slo_ms=slo_ms, client=cfg.client)
    rows.append({"policy": "slackfit", **first.summary, "http_statuses": first.statuses})
    fixed = cfg.fixed or _nearest_fixed(prof, first.summary["mean_acc"])
    fixed = prof.resolve(fixed)
    res = replay(stack, f"fixed:{fixed}", trace, slo_ms=slo_ms, client=cfg.client)
    rows.append({"policy": f"fixed:{fixed}", **res.summary, "http_statuses": res.statuses})
    sf, fx = rows[0]["slo_attainment"], rows[1]["slo_attainment"]
    return {"trace": spec, "requests": len(trace), "slo_ms": slo_ms, "rate": rate,
            "rows": rows, "wall_s": round(time.perf_counter() - t0, 2),
            "slo_ratio": sf / fx if fx > 0 else math.inf}


def format_demo_table(result: dict[str, Any]) -> str:
    """The demo's SLO / accuracy table, one line per policy, plus the SlackFit ratio."""
    lines = [f"{'policy':<14} {'SLO met %':>9} {'mean acc %':>10} {'p50 ms':>7} "
             f"{'p99 ms':>7} {'req/s':>6} {'missed':>6}  SubNets used"]
    for r in result["rows"]:
        missed = r["late"] + r["dropped"] + r["rejected"] + r["errors"]
        used = ", ".join(f"{k}x{v}" for k, v in r["subnets"].items()) or "-"
        lines.append(f"{r['policy']:<14} {100 * r['slo_attainment']:9.1f} "
                     f"{r['mean_acc']:10.2f} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} "
                     f"{r['throughput_rps']:6.1f} {missed:6d}  {used}")
    ratio = result["slo_ratio"]
    lines.append(f"SlackFit meets {'all' if math.isinf(ratio) else f'{ratio:.2f}x'} "
                 f"{'' if math.isinf(ratio) else 'the '}SLO attainment of "
                 f"{result['rows'][1]['policy']} on {result['trace']} "
                 f"(SLO {result['slo_ms']:g} ms)")
    return "\n".join(lines)


def write_deploy_file(rows: Sequence[dict[str, Any]], path: Any) -> Any:
    """A frontier file (`--deploy`) from evaluation rows ({"subnet": {...}, "acc": ...}),
    one entry per distinct SubNet: serving then needs neither BN recalibration nor test
    accuracy, because training saved both."""
    import json
    from pathlib import Path

    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(json.dumps(r["subnet"], sort_keys=True),
                        {"subnet": r["subnet"], "acc": r["acc"]})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(list(seen.values()), indent=1))
    return out


def demo_serving(stack_config: Any, demo: DemoConfig | None = None,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The demo's serving step from a checkpoint: build the stack (profile measured, or
    reused when it matches), run `serving_demo`, release everything. The result carries
    the printed `table`; no server or client process is left running."""
    from .stack import build_stack

    t0 = time.perf_counter()
    stack = build_stack(stack_config, log=log)
    try:
        prof = stack.profile
        log(f"deployed {len(prof.subnets)} SubNets: " + ", ".join(
            f"{s.name} {s.acc:.1f} % {prof.latency_ms(s.name, 1, 'median'):.1f} ms"
            for s in prof.subnets) + " (accuracy, batch-1 latency)")
        result = serving_demo(stack, demo, log)
    finally:
        stack.close()
    result["table"] = format_demo_table(result)
    result["total_s"] = round(time.perf_counter() - t0, 2)
    return result
