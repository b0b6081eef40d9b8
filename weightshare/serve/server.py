"""The HTTP front end: the Open Inference Protocol (KServe v2) over FastAPI + uvicorn.

Endpoints (as Triton and KServe serve them, so `tritonclient.http` works
unmodified, including its binary tensor extension):

    GET  /v2                                  server metadata
    GET  /v2/health/live, /v2/health/ready    liveness / readiness (no auth)
    GET  /v2/models/{name}[/versions/1]       model metadata (inputs, outputs)
    GET  /v2/models/{name}[/versions/1]/ready model readiness
    GET  /v2/models/{name}[/versions/1]/config the deployment (SubNets, policy, SLO)
    POST /v2/models/{name}[/versions/1]/infer inference
    GET  /metrics                             Prometheus
    GET  /v2/openapi.json                     this API as OpenAPI 3 (request schemas too)

An infer request carries one FP32 input of shape [N, C, H, W] (`data` flat and
row-major, or binary after an `Inference-Header-Content-Length` JSON header)
and may set `"parameters": {"slo_ms": 50}`. The handler only parses and
validates; the request then waits in the `InferenceWorker`'s queue, so the
event loop never runs a model. The response's `parameters` say which SubNet
served it, the batch size and the queueing delay. Failures are
`{"error": "..."}`: 400 bad input, 401 bad token, 404 unknown model, 429 queue
full (with Retry-After), 503 shutting down, 504 deadline missed (never a late
answer).

The wire format (names, JSON schemas, decoding a request, encoding an answer) is
`protocol`; this module is the app, its routes and the thread that runs it. Both are
re-exported here, where callers import them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .batching import QueueFull
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
from .protocol import (
    HEADER_LEN,
    INFER_REQUEST_SCHEMA,
    INFER_RESPONSE_SCHEMA,
    INPUT_NAME,
    METADATA_SCHEMA,
    MODEL_VERSION,
    NO_BODY,
    OUTPUT_NAME,
    BadRequest,
    encode_infer_response,
    error_docs,
    json_doc,
    parse_infer_request,
    request_slo_ms,
    wants_binary_output,
)
from .threads import UvicornThread
from .worker import Completion, InferenceWorker, ShuttingDown

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ServerConfig", "ServerThread", "WorkerSlot",
           "create_app", "encode_infer_response", "parse_infer_request"]


@dataclass(frozen=True)
class ServerConfig:
    """model_name: the one model this server exposes. slo_ms: default deadline per request.
    max_request_batch: most images in one request. max_slo_ms: the largest slo_ms a request
    may ask for. token: bearer token required on model and metrics endpoints (None: open).
    grace_s: how long past its deadline a handler waits for the worker before giving up.
    """

    model_name: str = "weightshare"
    slo_ms: float = 100.0
    max_request_batch: int = 32
    max_slo_ms: float = 60_000.0
    token: str | None = None
    grace_s: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.slo_ms <= self.max_slo_ms:
            raise ValueError(f"slo_ms must be in (0, {self.max_slo_ms}], got {self.slo_ms}")
        if self.max_request_batch < 1:
            raise ValueError("max_request_batch must be >= 1")


class WorkerSlot:
    """Where the inference worker will be once startup is done.

    The server answers from the first second: `/v2/health/live` is 200 while the
    stack is built (recalibration, evaluation, profiling), `/v2/health/ready` and
    the model endpoints say 503 until `attach(worker)`; `fail(message)` makes
    liveness fail too, so an orchestrator restarts a server whose startup broke.
    """

    def __init__(self, worker: InferenceWorker | None = None, stage: str = "starting") -> None:
        self.worker = worker
        self.stage = stage
        self.error: str | None = None
        self._running = False
        self._lock = threading.Lock()

    def attach(self, worker: InferenceWorker) -> None:
        with self._lock:
            self.worker = worker
            self.stage = "ready"
            if self._running and not worker.alive:
                worker.start()

    def fail(self, message: str) -> None:
        self.error = message
        self.stage = f"startup failed: {message}"

    def _started(self) -> None:
        with self._lock:
            self._running = True
            if self.worker is not None and not self.worker.alive:
                self.worker.start()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# ---------------------------------------------------------------------- app
def create_app(worker: InferenceWorker | WorkerSlot, input_shape: tuple[int, ...],
               num_classes: int, config: ServerConfig | None = None,
               metrics: ServeMetrics | None = None) -> FastAPI:
    """The FastAPI app in front of `worker` (started on startup, drained on shutdown).

    `worker` may be a `WorkerSlot` still empty: the server is then live but not ready
    until the slot is attached (see `WorkerSlot`).
    """
    cfg = config or ServerConfig()
    slot = worker if isinstance(worker, WorkerSlot) else WorkerSlot(worker, "ready")
    metrics = metrics or (slot.worker.metrics if slot.worker else None) or ServeMetrics()
    input_shape = tuple(int(s) for s in input_shape)

    def starting() -> JSONResponse:
        return _error(503, f"server is not ready: {slot.stage}", {"Retry-After": "1"})

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        slot._started()
        yield
        # Uvicorn has already waited for in-flight HTTP requests; drain anything left.
        if slot.worker is not None:
            await asyncio.to_thread(slot.worker.stop, True)

    app = FastAPI(title="weightshare", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.slot, app.state.metrics, app.state.config = slot, metrics, cfg
    app.state.worker = slot.worker

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request: {exc.errors()}")

    def authorized(request: Request) -> bool:
        if cfg.token is None:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {cfg.token}".encode())

    def guard(request: Request, name: str, version: str | None) -> JSONResponse | None:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token",
                          {"WWW-Authenticate": "Bearer"})
        if name != cfg.model_name:
            return _error(404, f"unknown model {name!r}; this server serves "
                               f"{cfg.model_name!r}")
        if version not in (None, "", MODEL_VERSION):
            return _error(404, f"unknown version {version!r} of {name!r}; "
                               f"versions: [{MODEL_VERSION!r}]")
        return None

    @app.get("/v2/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        return JSONResponse(app.openapi())

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "weightshare", "version": __version__,
                "extensions": ["binary_tensor_data"]}

    # response_class=Response: these answer with a status only; without it FastAPI would
    # document a JSON body that is never sent.
    @app.get("/v2/health/live", response_class=Response,
             responses={200: NO_BODY, 503: NO_BODY})
    async def live() -> Response:
        w = slot.worker
        if slot.error is not None:
            return Response(status_code=503)
        # Starting up (recalibrating, profiling) is alive: not yet ready.
        return Response(status_code=200 if w is None or w.alive else 503)

    @app.get("/v2/health/ready", response_class=Response,
             responses={200: NO_BODY, 503: NO_BODY})
    async def ready() -> Response:
        w = slot.worker
        return Response(status_code=200 if w is not None and w.accepting else 503)

    async def model_metadata(request: Request, name: str, version: str | None = None
                             ) -> Response:
        if (err := guard(request, name, version)) is not None:
            return err
        return JSONResponse({
            "name": cfg.model_name, "versions": [MODEL_VERSION], "platform": "pytorch",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *input_shape]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, num_classes]}],
        })

    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        if (err := guard(request, name, version)) is not None:
            return err
        w = slot.worker
        return Response(status_code=200 if w is not None and w.accepting else 503)

    async def model_config(request: Request, name: str, version: str | None = None
                           ) -> Response:
        if (err := guard(request, name, version)) is not None:
            return err
        worker = slot.worker
        if worker is None:
            return starting()
        return JSONResponse({
            "name": cfg.model_name, "policy": worker.policy.describe(), "slo_ms": cfg.slo_ms,
            "max_batch_size": cfg.max_request_batch,
            "deployed": [s.to_dict() for s in worker.profile.subnets], **cfg.info,
        })

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        t_start = time.perf_counter()
        if (err := guard(request, name, version)) is not None:
            return err
        worker = slot.worker
        if worker is None:
            return starting()
        body = await request.body()
        try:
            req, x = parse_infer_request(body, request.headers.get(HEADER_LEN), input_shape,
                                         cfg.max_request_batch)
            slo_ms = request_slo_ms(req, cfg.slo_ms, cfg.max_slo_ms)
            binary = wants_binary_output(req)
        except BadRequest as exc:
            metrics.record_request("bad_request")
            return _error(400, str(exc))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Completion] = loop.create_future()

        def deliver(c: Completion) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(c))

        # The time spent parsing counts against the deadline.
        remaining_s = slo_ms / 1000.0 - (time.perf_counter() - t_start)
        try:
            worker.submit(x, remaining_s, deliver)
        except QueueFull as exc:
            metrics.record_request("rejected")
            return _error(429, f"{exc}; retry later", {"Retry-After": "1"})
        except ShuttingDown as exc:
            metrics.record_request("error")
            return _error(503, str(exc))
        try:
            c = await asyncio.wait_for(fut, timeout=slo_ms / 1000.0 + cfg.grace_s)
        except TimeoutError:
            metrics.record_request("late")
            return _error(504, f"deadline of {slo_ms:g} ms exceeded (no answer from the "
                               "inference worker in time)")
        latency_s = time.perf_counter() - t_start
        metrics.record_request(c.status, latency_s)
        if c.status in ("late", "dropped"):
            return _error(504, f"deadline of {slo_ms:g} ms missed: {c.error}")
        if c.status != "ok" or c.output is None:
            return _error(500, c.error or "inference failed")
        body, headers = encode_infer_response(
            c.output, cfg.model_name, binary,
            {"subnet": c.subnet, "subnet_acc": c.acc, "batch_size": c.batch,
             "queue_ms": round(c.queue_ms, 3), "service_ms": round(c.service_ms, 3),
             "latency_ms": round(latency_s * 1e3, 3)}, req.get("id"))
        return Response(body, headers=headers, media_type="application/octet-stream"
                        if binary else "application/json")

    infer_doc = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": INFER_REQUEST_SCHEMA},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
    infer_responses = {200: {"description": "logits, with the SubNet that served them",
                             "content": {"application/json": {"schema": INFER_RESPONSE_SCHEMA},
                                         "application/octet-stream": {"schema": {
                                             "type": "string", "format": "binary"}}}},
                       **error_docs(400, 401, 404, 429, 503, 504)}
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_metadata, methods=["GET"],
                          responses={200: json_doc(METADATA_SCHEMA, "model metadata"),
                                     **error_docs(401, 404)})
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"], response_class=Response,
                          responses={200: NO_BODY, 503: NO_BODY, **error_docs(401, 404)})
        app.add_api_route(prefix + "/config", model_config, methods=["GET"],
                          responses={200: json_doc({"type": "object"}, "deployment"),
                                     **error_docs(401, 404)})
        app.add_api_route(prefix + "/infer", infer, methods=["POST"], openapi_extra=infer_doc,
                          responses=infer_responses)

    @app.get("/metrics", response_class=Response, responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
        **error_docs(401)})
    async def prometheus(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


# ------------------------------------------------------------------ running
class ServerThread(UvicornThread):
    """Run an app under uvicorn in a background thread on 127.0.0.1 (tests, benchmarks).

    The socket is bound before the thread starts, so `port` is known at once
    (port 0 picks a free one). `stop()` asks uvicorn for a graceful shutdown.
    The thread, the wait for startup and the stop are `threads.UvicornThread`'s.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        super().__init__(host, port)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=10))
        self._serve_with(self.server, self.server.run, "weightshare-http")
