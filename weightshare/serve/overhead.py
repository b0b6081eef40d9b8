"""The request path around the model: what the server spends on a request besides the SubNet.

A latency profile times the SubNet's forward only. Behind HTTP each request also
costs the server's own work, and on a small CPU that work shares the cores with
the model:

* on arrival (event loop): HTTP framing and routing, decoding the body into a
  tensor (JSON, or the binary tensor extension), handing it to the worker;
* per batch (worker thread): collating the requests' tensors and handing each
  answer back, a fixed part and a part per image;
* per answer (event loop, one after another once the batch is done): encoding
  the logits and writing the response.

`RequestOverhead` holds these in milliseconds and says what a batch really
takes with them (`batch_ms`), which SlackFit plans with and the simulator
replays; `measure_request_overhead` times the real server functions at startup
(a null backend, so no model time is in it). When the event loop and the worker
share a core (`shared_core`), arrival work steals time from the batch running:
at `rate` requests/s a batch stretches by 1 / (1 - rate * arrival_ms / 1000).

No torch at import: policies and the simulator import this module.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RequestOverhead", "measure_request_overhead"]

#: The share of a core arrivals may be planned to take; beyond it the server is overloaded
#: whatever the policy does, and dividing by (1 - u) would plan with absurd latencies.
MAX_UTILISATION = 0.9


@dataclass(frozen=True)
class RequestOverhead:
    """Server time outside the model, in ms (see the module doc).

    decode_ms: parsing one request's body into a tensor (part of the arrival work).
    http_ms: HTTP framing and routing per request, both directions.
    handoff_ms: one request's trip into the worker's queue and its answer's trip back.
    encode_ms: encoding one answer.
    batch_ms, item_ms: per batch, and per image in it (collation, slicing answers out).
    shared_core: the event loop runs on the cores the model runs on (the default: one
        process, `--threads` = its cores), so arrival work slows the running batch.
    """

    decode_ms: float = 0.0
    http_ms: float = 0.0
    handoff_ms: float = 0.0
    encode_ms: float = 0.0
    batch_ms: float = 0.0
    item_ms: float = 0.0
    shared_core: bool = True
    encoding: str = "json"

    def __post_init__(self) -> None:
        for k in ("decode_ms", "http_ms", "handoff_ms", "encode_ms", "batch_ms", "item_ms"):
            v = getattr(self, k)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")

    @property
    def arrival_ms(self) -> float:
        """Event-loop work before a request is queued: framing in, decode, submit."""
        return self.http_ms / 2 + self.decode_ms + self.handoff_ms / 2

    @property
    def answer_ms(self) -> float:
        """Work per answer after its batch: the hand-off back, encode, framing out."""
        return self.handoff_ms / 2 + self.encode_ms + self.http_ms / 2

    def utilisation(self, rate: float) -> float:
        """Share of a core the arrival work takes at `rate` requests/s (0 if not shared)."""
        if not self.shared_core or rate <= 0:
            return 0.0
        return min(MAX_UTILISATION, rate * self.arrival_ms / 1000.0)

    def static_ms(self, batch: int) -> float:
        """What a batch of `batch` images adds to its model time at no concurrent load:
        collation plus every answer of it encoded and sent (the last one waits for all)."""
        return self.batch_ms + batch * (self.item_ms + self.answer_ms)

    def batch_ms_total(self, model_ms: float, batch: int, rate: float = 0.0) -> float:
        """When the last answer of a batch is out, counted from its start, at `rate` arrivals/s:
        (model + per-batch + per-answer work) stretched by the arrivals' share of the core."""
        return (model_ms + self.static_ms(batch)) / (1.0 - self.utilisation(rate))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(arrival_ms=self.arrival_ms, answer_ms=self.answer_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestOverhead:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


# ---------------------------------------------------------------- measurement
def _median_ms(fn: Callable[[], Any], runs: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


class _NullBackend:
    """Answers instantly with zeros: what is left of a request's time is the server's own."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def run(self, batch: Any, name: str) -> Any:
        import torch

        return torch.zeros(batch.shape[0], self.num_classes)

    def prepare(self, name: str) -> float:
        return 0.0


def _request_bodies(input_shape: tuple[int, ...], seed: int = 0) -> dict[str, tuple[bytes, str | None]]:
    """A batch-1 request as the load generator sends it (JSON) and as tritonclient sends it
    with binary_data=True: (body, Inference-Header-Content-Length)."""
    import numpy as np
    import orjson

    from .loadgen import make_payload

    x = np.random.default_rng(seed).standard_normal((1, *input_shape)).astype("<f4")
    header = orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                       "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}]})
    # A long SLO: a probe delayed by a busy machine must still be answered, not be a 504.
    return {"json": (make_payload(input_shape, 60_000.0, seed), None),
            "binary": (header + x.tobytes(), str(len(header)))}


def measure_decode_ms(input_shape: tuple[int, ...], runs: int = 200) -> dict[str, float]:
    """Median ms to decode a batch-1 request: `json` (Python's json + torch.tensor, the
    parser the server used before), `orjson` (what it uses), `binary` (tensor extension)."""
    import json

    import torch

    from .server import parse_infer_request

    bodies = _request_bodies(input_shape)
    body, _ = bodies["json"]

    def stdlib() -> Any:
        req = json.loads(body)
        return torch.tensor(req["inputs"][0]["data"], dtype=torch.float32)

    out = {"json": _median_ms(stdlib, runs)}
    out["orjson"] = _median_ms(lambda: parse_infer_request(body, None, input_shape, 1), runs)
    bbody, hlen = bodies["binary"]
    out["binary"] = _median_ms(lambda: parse_infer_request(bbody, hlen, input_shape, 1), runs)
    return out


def _median_trip_ms(num_classes: int, runs: int,
                    make_trip: Callable[[Any], Callable[[], Awaitable[Any]]],
                    warmup: int = 10) -> float:
    """Median ms of `runs` awaits of one trip (after `warmup` more, discarded), all in one
    asyncio event loop, against a real worker thread with a null backend started for them
    and stopped after: `_median_ms` for the probes that go through the worker and a loop.
    `make_trip(worker)`, called once before the loop runs, returns the coroutine function
    one trip awaits; only the awaits are timed."""
    import asyncio

    from .worker import InferenceWorker

    policy, profile = _handoff_parts(num_classes)
    worker = InferenceWorker(_NullBackend(num_classes), policy, profile,
                             queue_capacity=None).start()

    async def trips(trip: Callable[[], Awaitable[Any]]) -> list[float]:
        times = []
        for _ in range(runs + warmup):
            t0 = time.perf_counter()
            await trip()
            times.append(time.perf_counter() - t0)
        return times[warmup:]

    try:
        times = asyncio.run(trips(make_trip(worker)))
    finally:
        worker.stop(drain=False)
    return statistics.median(times) * 1e3


def _handoff_ms(num_classes: int, input_shape: tuple[int, ...], runs: int) -> float:
    """Median round trip of one request through a real worker thread with a null backend
    and back to an asyncio event loop, as the server's handler does it."""
    import asyncio

    import torch

    x = torch.zeros(1, *input_shape)

    def make_trip(worker: Any) -> Callable[[], Awaitable[Any]]:
        # The future is made inside the timed trip, as the server's handler makes one per
        # request (about a microsecond here).
        async def trip() -> Any:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[Any] = loop.create_future()
            worker.submit(x, 10.0, lambda c: loop.call_soon_threadsafe(
                lambda: fut.done() or fut.set_result(c)))
            return await fut

        return trip

    return _median_trip_ms(num_classes, runs, make_trip)


def _asgi_infer_ms(input_shape: tuple[int, ...], num_classes: int, body: bytes,
                   header_len: str | None, runs: int) -> float:
    """Median ms of one infer request through the real app (routing, decode, hand-off to a
    worker with a null backend, encode), called over ASGI in this process: the server's
    whole request path short of the socket."""
    from .server import ServerConfig, create_app

    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if header_len is not None:
        headers.append((b"inference-header-content-length", header_len.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v2/models/weightshare/infer",
             "raw_path": b"/v2/models/weightshare/infer", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80)}

    def make_trip(worker: Any) -> Callable[[], Awaitable[None]]:
        app = create_app(worker, input_shape, num_classes,
                         ServerConfig(slo_ms=60_000.0, max_request_batch=1))

        async def trip() -> None:
            sent = False
            status = 0

            async def receive() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(msg: dict[str, Any]) -> None:
                nonlocal status
                if msg["type"] == "http.response.start":
                    status = msg["status"]

            await app(scope, receive, send)
            if status != 200:
                raise RuntimeError(f"overhead probe answered {status}")

        return trip

    return _median_trip_ms(num_classes, runs, make_trip)


def _handoff_parts(num_classes: int) -> tuple[Any, Any]:
    """A policy that serves everything waiting at once, and the little of a profile the
    worker reads: the null backend's companions."""
    from .core import Decision
    from .policies import Policy

    class _All(Policy):
        name = "null"

        def decide(self, queue: Any, now: float, profile: Any) -> Decision:
            return Decision("null", tuple(queue))

    class _Profile:
        @staticmethod
        def acc(name: str) -> float:
            return 0.0

    return _All(), _Profile()


def _batch_costs(input_shape: tuple[int, ...], num_classes: int, max_batch: int,
                 runs: int) -> tuple[float, float]:
    """(fixed ms per batch, ms per image) of the worker's own work around `backend.run`:
    collation, answers sliced out and handed back; a line through batch 1 and max_batch."""
    import torch

    from .core import Decision, Request
    from .worker import InferenceWorker

    policy, profile = _handoff_parts(num_classes)
    worker = InferenceWorker(_NullBackend(num_classes), policy, profile, queue_capacity=None)

    def cost(b: int) -> float:
        reqs = tuple(Request(i, 0.0, math.inf, 1, torch.zeros(1, *input_shape),
                             lambda c: None) for i in range(b))
        d = Decision("null", reqs)
        return _median_ms(lambda: worker._execute(d, 0.0), runs)

    hi = max(2, max_batch)
    c1, cb = cost(1), cost(hi)
    item = max(0.0, (cb - c1) / (hi - 1))
    return max(0.0, c1 - item), item


def measure_request_overhead(input_shape: tuple[int, ...], num_classes: int, *,
                             max_batch: int = 32, encoding: str = "json", runs: int = 200,
                             shared_core: bool = True) -> RequestOverhead:
    """Time the server's own request path at startup (about half a second; no model runs).

    decode and encode are the server's functions on a batch-1 request in `encoding`
    ("json" as the load generator sends, or "binary"); the hand-off is a round trip through
    a real worker thread and event loop; http is what the full in-process ASGI request
    takes beyond those three (routing, FastAPI, the handler), plus nothing for the socket
    (loopback syscalls and uvicorn's C parser are not timed).
    """
    if encoding not in ("json", "binary"):
        raise ValueError(f"encoding must be 'json' or 'binary', got {encoding!r}")
    import torch

    from .server import encode_infer_response, parse_infer_request

    body, hlen = _request_bodies(input_shape)[encoding]
    decode = _median_ms(lambda: parse_infer_request(body, hlen, input_shape, 1), runs)
    logits = torch.randn(1, num_classes)
    params = {"subnet": "s0", "subnet_acc": 80.0, "batch_size": 1, "queue_ms": 1.0,
              "service_ms": 1.0, "latency_ms": 1.0}
    encode = _median_ms(lambda: encode_infer_response(logits, "weightshare",
                                                      encoding == "binary", params), runs)
    trip = _handoff_ms(num_classes, input_shape, runs)
    total = _asgi_infer_ms(input_shape, num_classes, body, hlen, runs)
    batch, item = _batch_costs(input_shape, num_classes, max_batch, max(20, runs // 4))
    # The round trip ran a batch of one through the worker: its batch costs are counted
    # apart; what the ASGI request takes beyond the parts is routing and the handler.
    return RequestOverhead(decode_ms=decode, http_ms=max(0.0, total - decode - encode - trip),
                           handoff_ms=max(0.0, trip - batch - item), encode_ms=encode,
                           batch_ms=batch, item_ms=item, shared_core=shared_core,
                           encoding=encoding)
