"""Open-loop load generator: replay a trace against an Open Inference Protocol server.

Each arrival of the trace becomes one POST /v2/models/{name}/infer sent at its
time whatever happened to earlier ones (open loop: a slow server does not slow
the sender, as with real users). Every request carries its SLO
(`parameters.slo_ms`); a 200 within the SLO counts as met, a 504 as a drop or a
late answer, a 429 as rejected. The report is `outcomes.summarize`: SLO
attainment, mean served accuracy (the `subnet_acc` the server reports),
throughput, p50/p99 latency, drops. Bounded by the trace, `max_requests` and
`max_seconds`; it stops by itself. `run_closed_loop` instead keeps a fixed number of
requests in flight, to find the server's throughput at saturation.

The client speaks HTTP/1.1 keep-alive over asyncio streams itself (`HTTPPool`): a
general-purpose async client (httpx) spends milliseconds of CPU per request at a few
hundred connections, and on a small machine shared with the server it, not the server,
would be what saturates. The `*_process` variants run it in a separate interpreter
through `weightshare.procs.run_json_module`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..procs import run_json_module
from .outcomes import Outcome, summarize
from .traces import Trace

__all__ = [
    "LoadConfig",
    "LoadResult",
    "HTTPPool",
    "make_payload",
    "run_closed_loop",
    "run_closed_loop_process",
    "run_load",
    "run_load_process",
    "run_load_sync",
]


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
    #: CPUs the load generator process runs on (`run_*_process` only; None: the parent's),
    #: so that a benchmark keeps the client off the server's cores.
    cpus: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ValueError("slo_ms must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if self.cpus is not None and not self.cpus:
            raise ValueError("cpus must name at least one CPU (or be None)")


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    summary: dict[str, Any]
    statuses: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "http_statuses": self.statuses}


def _pool(config: LoadConfig, connections: int) -> HTTPPool:
    headers = {"authorization": f"Bearer {config.token}"} if config.token else {}
    return HTTPPool(config.url, connections, config.timeout_s, headers)


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


_ERRORS = (OSError, EOFError, TimeoutError, ValueError, asyncio.IncompleteReadError)


class HTTPPool:
    """Up to `max_connections` keep-alive HTTP/1.1 connections to one `http://host:port`.

    Only what the load generator needs: POST with a body, answers with Content-Length
    (what uvicorn sends for JSON). Raises one of `_ERRORS` on a broken connection.
    """

    def __init__(self, url: str, max_connections: int = 256, timeout_s: float = 10.0,
                 headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load generator speaks plain http://host:port, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._free = asyncio.Semaphore(max_connections)
        self._all: set[asyncio.StreamWriter] = set()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self._free:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                              self.timeout_s)
                self._all.add(conn[1])
            try:
                status, data, keep = await asyncio.wait_for(self._roundtrip(conn, path, body),
                                                            self.timeout_s)
            except BaseException:
                self._drop(conn[1])
                raise
            if keep:
                self._idle.append(conn)
            else:
                self._drop(conn[1])
            return status, data

    async def _roundtrip(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                         path: str, body: bytes) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(f"POST {self.prefix}{path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
                     f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                     f"{self.headers}\r\n".encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in
                  (line.partition(":") for line in lines[1:] if line)}
        data = await reader.readexactly(int(fields.get("content-length", "0")))
        return status, data, fields.get("connection", "").lower() != "close"

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._all.discard(writer)
        writer.close()

    async def aclose(self) -> None:
        for w in list(self._all):
            self._drop(w)
        self._idle.clear()


async def run_load(trace: Trace, config: LoadConfig) -> LoadResult:
    """Send the trace; return one Outcome per request sent (times from the first send)."""
    trace = trace.limit(config.max_requests, config.max_seconds)
    payload = make_payload(config.input_shape, config.slo_ms, config.seed)
    path = f"/v2/models/{config.model_name}/infer"
    outcomes: list[Outcome] = []
    statuses: dict[int, int] = {}
    lags: list[float] = []
    slo_s = config.slo_ms / 1000.0
    client = _pool(config, config.max_connections)
    try:
        start = time.perf_counter()

        async def one(i: int, at: float) -> None:
            delay = at - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter() - start
            lags.append(sent - at)
            try:
                code, data = await client.post(path, payload)
            except _ERRORS:
                outcomes.append(Outcome(i, sent, sent + slo_s, "error"))
                statuses[0] = statuses.get(0, 0) + 1
                return
            done = time.perf_counter() - start
            statuses[code] = statuses.get(code, 0) + 1
            if code == 200:
                params = json.loads(data).get("parameters", {})
                status = "ok" if done - sent <= slo_s else "late"
                outcomes.append(Outcome(i, sent, sent + slo_s, status, done,
                                        params.get("subnet"), params.get("subnet_acc"),
                                        int(params.get("batch_size", 0))))
            elif code == 504:
                outcomes.append(Outcome(i, sent, sent + slo_s, "dropped", done))
            elif code == 429:
                outcomes.append(Outcome(i, sent, sent + slo_s, "rejected", done))
            else:
                outcomes.append(Outcome(i, sent, sent + slo_s, "error", done))

        await asyncio.gather(*(one(i, t) for i, t in enumerate(trace.arrivals)))
        elapsed = time.perf_counter() - start
    finally:
        await client.aclose()
    outcomes.sort(key=lambda o: o.id)
    summary = summarize(outcomes, max(elapsed, trace.duration))
    # How late the client itself sent (behind the trace's times): near zero while the client
    # is not what limits the run.
    lags.sort()
    summary["send_lag_p99_ms"] = 1e3 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0
    summary["send_lag_max_ms"] = 1e3 * lags[-1] if lags else 0.0
    return LoadResult(outcomes, summary, statuses)


def run_load_sync(trace: Trace, config: LoadConfig) -> LoadResult:
    return asyncio.run(run_load(trace, config))


async def run_closed_loop(config: LoadConfig, concurrency: int = 32, seconds: float = 3.0,
                          warmup_s: float = 0.5) -> dict[str, Any]:
    """Saturate a server: `concurrency` clients each send the next request as soon as the last
    is answered, for `seconds`; report answers per second after `warmup_s`.

    Closed loop on purpose: the open-loop `run_load` at overload fills the server's queue
    and measures admission control, this measures the most the server answers (its
    throughput at saturation). Requests carry `config.slo_ms` (set it high: nothing
    should be dropped).
    """
    if concurrency < 1 or seconds <= 0:
        raise ValueError("concurrency must be >= 1 and seconds > 0")
    payload = make_payload(config.input_shape, config.slo_ms, config.seed)
    path = f"/v2/models/{config.model_name}/infer"
    statuses: dict[int, int] = {}
    done_at: list[float] = []
    batches: list[int] = []
    cpu0 = time.process_time()
    client = _pool(config, concurrency)
    try:
        start = time.perf_counter()
        end = start + warmup_s + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                try:
                    code, data = await client.post(path, payload)
                except _ERRORS:
                    statuses[0] = statuses.get(0, 0) + 1
                    continue
                statuses[code] = statuses.get(code, 0) + 1
                if code == 200:
                    done_at.append(time.perf_counter() - start)
                    batches.append(int(json.loads(data).get("parameters", {})
                                       .get("batch_size", 0)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.aclose()
    counted = [t for t in done_at if warmup_s <= t <= warmup_s + seconds]
    return {"throughput_rps": len(counted) / seconds, "answered": len(done_at),
            "concurrency": concurrency, "seconds": seconds,
            "mean_batch": sum(batches) / len(batches) if batches else float("nan"),
            # The client's own CPU time: when it nears the wall time, the client (not the
            # server) is what saturated.
            "client_cpu_s": time.process_time() - cpu0, "http_statuses": statuses}


def _config_dict(config: LoadConfig) -> dict[str, Any]:
    d = dict(config.__dict__)
    d["input_shape"] = list(d["input_shape"])
    d["cpus"] = list(d["cpus"]) if d["cpus"] is not None else None
    return d


def _run_in_process(job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    return run_json_module("weightshare.serve.loadgen", job, timeout_s, "the load generator")


def run_load_process(trace: Trace, config: LoadConfig, timeout_s: float | None = None
                     ) -> LoadResult:
    """`run_load` in a separate process, as a real client would be.

    Run beside a server in this process (the demo, the benchmark), an in-process client
    would share the interpreter lock with the server's event loop and inference thread and
    slow both; a separate process shares only the CPU. This module needs no torch, so the
    child starts in well under a second.
    """
    trace = trace.limit(config.max_requests, config.max_seconds)
    limit = timeout_s if timeout_s is not None else trace.duration + config.timeout_s + 30
    d = _run_in_process({"mode": "open", "config": _config_dict(config),
                         "arrivals": list(trace.arrivals), "duration": trace.duration}, limit)
    outcomes = [Outcome(**o) for o in d["outcomes"]]
    return LoadResult(outcomes, d["summary"], {int(k): v for k, v in d["statuses"].items()})


def run_closed_loop_process(config: LoadConfig, concurrency: int = 32, seconds: float = 3.0,
                            warmup_s: float = 0.5) -> dict[str, Any]:
    """`run_closed_loop` in a separate process (see `run_load_process` for why)."""
    d = _run_in_process({"mode": "closed", "config": _config_dict(config),
                         "concurrency": concurrency, "seconds": seconds,
                         "warmup_s": warmup_s}, warmup_s + seconds + config.timeout_s + 30)
    d["http_statuses"] = {int(k): v for k, v in d["http_statuses"].items()}
    return d


def _main() -> None:
    import sys

    job = json.loads(sys.stdin.read())
    cfg = job["config"]
    cpus = tuple(cfg["cpus"]) if cfg.get("cpus") is not None else None
    config = LoadConfig(**{**cfg, "input_shape": tuple(cfg["input_shape"]), "cpus": cpus})
    if cpus is not None:
        import os

        os.sched_setaffinity(0, cpus)
    if job["mode"] == "closed":
        out = asyncio.run(run_closed_loop(config, job["concurrency"], job["seconds"],
                                          job["warmup_s"]))
    else:
        arrivals = tuple(job["arrivals"])
        trace = Trace(arrivals, "replay", {"duration": job["duration"]})
        res = run_load_sync(trace, config)
        out = {"outcomes": [o.to_dict() for o in res.outcomes], "summary": res.summary,
               "statuses": res.statuses}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    _main()
