"""Open-loop load generator: replay a trace against an Open Inference Protocol server.

Each arrival of the trace becomes one POST /v2/models/{name}/infer sent at its
time whatever happened to earlier ones (open loop: a slow server does not slow
the sender, as with real users). Every request carries its SLO
(`parameters.slo_ms`); a 200 within the SLO counts as met, a 504 as a drop or a
late answer, a 429 as rejected. The report is `outcomes.summarize`: SLO
attainment, mean served accuracy (the `subnet_acc` the server reports),
throughput, p50/p99 latency, drops. Bounded by the trace, `max_requests` and
`max_seconds`; it stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .outcomes import Outcome, summarize
from .traces import Trace

__all__ = ["LoadConfig", "LoadResult", "make_payload", "run_load", "run_load_sync"]


@dataclass(frozen=True)
class LoadConfig:
    url: str = "http://127.0.0.1:8000"
    model_name: str = "weightshare"
    slo_ms: float = 100.0
    input_shape: tuple[int, ...] = (1, 28, 28)
    token: str | None = None
    max_requests: int | None = 10_000
    max_seconds: float | None = 120.0
    timeout_s: float = 10.0
    max_connections: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ValueError("slo_ms must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    summary: dict[str, Any]
    statuses: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "http_statuses": self.statuses}


def make_payload(input_shape: tuple[int, ...], slo_ms: float, seed: int = 0) -> bytes:
    """One JSON infer request with a random image (built once: the client stays cheap)."""
    rng = random.Random(seed)
    n = 1
    for s in input_shape:
        n *= s
    body = {
        "inputs": [{"name": "input", "shape": [1, *input_shape], "datatype": "FP32",
                    "data": [round(rng.gauss(0, 1), 4) for _ in range(n)]}],
        "parameters": {"slo_ms": slo_ms},
    }
    return json.dumps(body).encode()


async def run_load(trace: Trace, config: LoadConfig) -> LoadResult:
    """Send the trace; return one Outcome per request sent (times from the first send)."""
    trace = trace.limit(config.max_requests, config.max_seconds)
    payload = make_payload(config.input_shape, config.slo_ms, config.seed)
    headers = {"content-type": "application/json"}
    if config.token:
        headers["authorization"] = f"Bearer {config.token}"
    url = f"{config.url.rstrip('/')}/v2/models/{config.model_name}/infer"
    outcomes: list[Outcome] = []
    statuses: dict[int, int] = {}
    slo_s = config.slo_ms / 1000.0
    limits = httpx.Limits(max_connections=config.max_connections,
                          max_keepalive_connections=config.max_connections)
    async with httpx.AsyncClient(limits=limits, timeout=config.timeout_s) as client:
        start = time.perf_counter()

        async def one(i: int, at: float) -> None:
            delay = at - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter() - start
            try:
                r = await client.post(url, content=payload, headers=headers)
            except httpx.HTTPError:
                outcomes.append(Outcome(i, sent, sent + slo_s, "error"))
                statuses[0] = statuses.get(0, 0) + 1
                return
            done = time.perf_counter() - start
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                params = r.json().get("parameters", {})
                status = "ok" if done - sent <= slo_s else "late"
                outcomes.append(Outcome(i, sent, sent + slo_s, status, done,
                                        params.get("subnet"), params.get("subnet_acc"),
                                        int(params.get("batch_size", 0))))
            elif r.status_code == 504:
                outcomes.append(Outcome(i, sent, sent + slo_s, "dropped", done))
            elif r.status_code == 429:
                outcomes.append(Outcome(i, sent, sent + slo_s, "rejected", done))
            else:
                outcomes.append(Outcome(i, sent, sent + slo_s, "error", done))

        await asyncio.gather(*(one(i, t) for i, t in enumerate(trace.arrivals)))
        elapsed = time.perf_counter() - start
    outcomes.sort(key=lambda o: o.id)
    return LoadResult(outcomes, summarize(outcomes, max(elapsed, trace.duration)), statuses)


def run_load_sync(trace: Trace, config: LoadConfig) -> LoadResult:
    return asyncio.run(run_load(trace, config))
