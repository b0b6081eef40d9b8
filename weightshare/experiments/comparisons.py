"""Live comparisons on the real server: the simulator check and the overhead measurement.

Both start the real server on 127.0.0.1 for an already built `Stack` (one SuperNet,
one profile) with `weightshare.serve.live.started_server` / `replay`, drive it with
the load generator in a separate process, and shut it down; nothing is listening
once a function returns. `benchmarks/serving.py` reports them.

* `compare_with_simulator`: the same trace and policy on the server and in the
  simulator (same profile, same SLO, same queue bound) -> both SLO attainments and
  the difference.
* `measure_overhead`: the server's throughput at saturation (closed loop) vs the raw
  model's batched throughput on the same SubNet (`raw_throughput`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..serve.live import replay, started_server
from ..serve.loadgen import LoadConfig, run_closed_loop_process
from ..serve.traces import Trace

__all__ = ["compare_with_simulator", "measure_overhead", "raw_throughput"]


def compare_with_simulator(stack: Any, policies: Sequence[str], trace: Trace, *,
                           slo_ms: float, queue_capacity: int = 1024, client: str = "process",
                           log: Callable[[str], None] = lambda _: None
                           ) -> list[dict[str, Any]]:
    """Each policy on the real server and in the simulator, on the same trace, profile, SLO
    and queue bound. Per policy: both summaries and `diff_points`, server minus simulator SLO
    attainment in percentage points (the issue's check: |diff| <= 5)."""
    from ..serve.policies import make_policy
    from ..serve.simulate import SimConfig, simulate

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

    from ..timing import measure_latency

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
