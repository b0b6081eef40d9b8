"""weightshare's serving runtime as a KServe predictor (`kserve.Model`, V2 protocol).

`WeightsharePredictor.load()` builds the same stack as `weightshare serve` (`build_stack`:
one SuperNet, the profile, the executor) and starts one `InferenceWorker` with the policy
(SlackFit by default); `predict` turns the V2 `InferRequest` KServe decoded (JSON or the
binary tensor extension) into a tensor, queues it on the worker -- so concurrent requests
are batched and the SubNet is chosen per batch, as in the single-process server -- and
answers with an `InferResponse` whose `parameters` say which SubNet served it. KServe's
`ModelServer` supplies the routes (`/v2/models/{name}/infer`, health, metadata) and its own
Prometheus metrics; Kubernetes (the InferenceService in `deploy/kserve/`) supplies
replicas, autoscaling and restarts.

    python -m weightshare.serve.kserve_predictor --checkpoint CKPT --model_name weightshare \
        --http_port 8080 [--host 0.0.0.0] [--slo_ms 100] [--executor auto]

binds 127.0.0.1 unless --host says otherwise (the container passes 0.0.0.0). Every other
KServe server flag (`--workers`, `--enable_grpc`, ...) is KServe's own parser's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from kserve import Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from .batching import QueueFull
from .stack import Stack, StackConfig, build_stack
from .threads import UvicornThread
from .worker import Completion, InferenceWorker, ShuttingDown

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "KServeThread", "WeightsharePredictor", "build_parser",
           "main"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class WeightsharePredictor(Model):
    """One SuperNet behind a KServe V2 endpoint; SubNet and batch chosen by the policy."""

    def __init__(self, name: str, stack_cfg: StackConfig, *, slo_ms: float = 100.0,
                 max_slo_ms: float = 60_000.0, queue_size: int = 512, grace_s: float = 1.0,
                 log: Callable[[str], None] = lambda _: None) -> None:
        super().__init__(name)
        if not 0 < slo_ms <= max_slo_ms:
            raise ValueError(f"slo_ms must be in (0, {max_slo_ms}], got {slo_ms}")
        self.stack_cfg, self.slo_ms, self.max_slo_ms = stack_cfg, slo_ms, max_slo_ms
        self.queue_size, self.grace_s, self.log = queue_size, grace_s, log
        self.stack: Stack | None = None
        self.worker: InferenceWorker | None = None
        self.ready = False

    # --------------------------------------------------------------- lifecycle
    def load(self) -> bool:
        from .metrics import ServeMetrics

        self.stack = build_stack(self.stack_cfg, log=self.log)
        self.worker = InferenceWorker(self.stack.backend, self.stack.policy, self.stack.profile,
                                      queue_capacity=self.queue_size, metrics=ServeMetrics())
        self.stack.on_profile(self.worker.update_profile)
        self.worker.start()
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        # KServe's readiness probe: ready only while the inference thread runs.
        return self.ready and self.worker is not None and self.worker.alive

    def stop(self) -> None:
        self.ready = False
        if self.worker is not None:
            self.worker.stop(drain=True)
        if self.stack is not None:
            self.stack.close()

    @property
    def input_shape(self) -> tuple[int, ...]:
        assert self.stack is not None, "load() first"
        return tuple(int(s) for s in self.stack.runtime.input_shape())

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *self.input_shape]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        assert self.stack is not None, "load() first"
        return [{"name": OUTPUT_NAME, "datatype": "FP32",
                 "shape": [-1, int(self.stack.runtime.num_classes)]}]

    # --------------------------------------------------------------- inference
    def _decode(self, payload: InferRequest) -> tuple[torch.Tensor, float]:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this predictor speaks the V2 protocol (/v2/models/.../infer)")
        if len(payload.inputs) != 1:
            raise InvalidInput(f"exactly one input tensor named {INPUT_NAME!r} is expected")
        inp = payload.inputs[0]
        if inp.name != INPUT_NAME:
            raise InvalidInput(f"unknown input {inp.name!r}; this model's input is "
                               f"{INPUT_NAME!r}")
        if inp.datatype != "FP32":
            raise InvalidInput(f"input datatype must be 'FP32', got {inp.datatype!r}")
        shape = list(inp.shape)
        max_batch = self.stack.profile.max_batch if self.stack else 1
        if shape[1:] != list(self.input_shape) or not 1 <= shape[0] <= max_batch:
            raise InvalidInput(f"input shape must be [N, {', '.join(map(str, self.input_shape))}]"
                               f" with 1 <= N <= {max_batch}, got {shape}")
        try:
            arr = np.asarray(inp.as_numpy(), dtype=np.float32).reshape(shape)
        except (ValueError, TypeError) as err:
            raise InvalidInput(f"input data does not fit shape {shape}: {err}") from None
        if not np.isfinite(arr).all():
            raise InvalidInput("input holds NaN or infinite values")
        params = payload.parameters or {}
        slo = params.get("slo_ms", self.slo_ms)
        if isinstance(slo, bool) or not isinstance(slo, int | float) or not math.isfinite(slo) \
                or not 0 < slo <= self.max_slo_ms:
            raise InvalidInput(f"parameters.slo_ms must be a number in (0, {self.max_slo_ms}], "
                               f"got {slo!r}")
        return torch.from_numpy(arr.copy()), float(slo)

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None
                      ) -> InferResponse:
        t0 = time.perf_counter()
        if self.worker is None:
            raise InferenceError("the model is not loaded")
        x, slo_ms = self._decode(payload)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Completion] = loop.create_future()

        def deliver(c: Completion) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(c))

        try:
            self.worker.submit(x, slo_ms / 1e3 - (time.perf_counter() - t0), deliver)
        except (QueueFull, ShuttingDown) as exc:
            raise InferenceError(f"{exc}; retry later") from None
        try:
            c = await asyncio.wait_for(fut, timeout=slo_ms / 1e3 + self.grace_s)
        except TimeoutError:
            raise InferenceError(f"deadline of {slo_ms:g} ms exceeded") from None
        if c.status != "ok" or c.output is None:
            raise InferenceError(f"deadline of {slo_ms:g} ms missed: {c.error}"
                                 if c.status in ("late", "dropped") else
                                 c.error or "inference failed")
        logits = c.output.float().contiguous().numpy()
        out = InferOutput(OUTPUT_NAME, list(logits.shape), "FP32", data=logits)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
            infer_outputs=[out], model_version=payload.model_version,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
            parameters={"subnet": c.subnet, "subnet_acc": c.acc, "batch_size": c.batch,
                        "queue_ms": round(c.queue_ms, 3), "service_ms": round(c.service_ms, 3),
                        "latency_ms": round((time.perf_counter() - t0) * 1e3, 3)})


# ------------------------------------------------------------------ running
class KServeThread(UvicornThread):
    """KServe's REST server (its FastAPI app with the V2 routes) for `models`, in a background
    thread on a socket bound to `host:port` (port 0: a free one). KServe's `ModelServer.start`
    always binds 0.0.0.0 and blocks; this is the same server on a socket of our choosing,
    for tests and for `main(--host)`. The thread, the wait for startup and the stop are
    `threads.UvicornThread`'s (as `server.ServerThread`'s); `stop` also stops the models."""

    what = "the KServe server"
    start_timeout = 30.0

    def __init__(self, models: list[Model], host: str = "127.0.0.1", port: int = 0) -> None:
        from kserve.model_server import ModelServer
        from kserve.protocol.rest.server import RESTServer

        super().__init__(host, port)
        self.model_server = ModelServer(http_port=self.port, enable_grpc=False)
        self.model_server._register_and_check_atleast_one_model_is_ready(models)
        self.rest = RESTServer("kserve.model_server:app", self.model_server.dataplane,
                               self.model_server.model_repository_extension, self.port)
        self.rest.config.host = host
        self.models = models
        # RESTServer.run builds KServe's app, then runs its uvicorn server (`_server`)
        self._serve_with(self.rest._server, self.rest.run, "weightshare-kserve")

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        for m in self.models:
            m.stop()

    def run_forever(self) -> None:
        self.thread.start()
        self.thread.join()


def build_parser() -> argparse.ArgumentParser:
    """KServe's server flags (`--http_port`, `--model_name`, ...) plus the stack's."""
    from kserve.model_server import parser as kserve_parser

    ap = argparse.ArgumentParser(parents=[kserve_parser], description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="SuperNet checkpoint to serve.")
    ap.add_argument("--host", default="127.0.0.1", help="Address to bind (loopback default).")
    ap.add_argument("--slo_ms", type=float, default=100.0, help="Default deadline (ms).")
    ap.add_argument("--policy", default="slackfit")
    ap.add_argument("--deploy", default=None, help="Frontier JSON of candidate SubNets.")
    ap.add_argument("--num_subnets", type=int, default=6)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--max_batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--executor", default="auto", help="torch | onnxruntime | auto")
    ap.add_argument("--queue_size", type=int, default=512)
    return ap


def main(argv: list[str] | None = None) -> None:
    import sys

    a = build_parser().parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    model = WeightsharePredictor(
        a.model_name, StackConfig(checkpoint=a.checkpoint, policy=a.policy, deploy=a.deploy,
                                  num_subnets=a.num_subnets, dataset=a.dataset,
                                  data_dir=a.data_dir, max_batch=a.max_batch,
                                  threads=a.threads, executor=a.executor),
        slo_ms=a.slo_ms, queue_size=a.queue_size, log=log)
    model.load()
    server = KServeThread([model], a.host, a.http_port)
    log(f"serving {a.model_name!r} (KServe V2) on {server.url}/v2/models/{a.model_name}")
    server.run_forever()


if __name__ == "__main__":
    main()
