"""The peer of the serving benchmark: one exported SubNet behind KServe's own ModelServer.

What a user who does not use weightshare would deploy instead: the ONNX file of
one fixed SubNet (`weightshare export` / `weightshare.export.export_onnx`), an
onnxruntime session with all graph optimisations, wrapped in a `kserve.Model`
(KServe's documented way to serve a custom predictor) and served by
`kserve.ModelServer` with one uvicorn worker, REST only (the Open Inference
Protocol v2: `POST /v2/models/{name}/infer`, JSON or binary tensors, as the
weightshare server speaks it). A request is answered as it comes, batch 1, by a
synchronous `predict` on the event loop, as KServe runs a sync predictor.

Two deliberate departures from `kserve.ModelServer.start()`, both in the peer's
favour or for safety: it binds 127.0.0.1 (KServe 0.21's RESTServer hard-codes
0.0.0.0), and the per-request log lines (latency, access, timing) are off (each
costs a formatted log write per request). The answer's `parameters` carry `subnet` and `subnet_acc`,
as the weightshare server's do, so the one load generator scores both alike.

    taskset -c 1 python benchmarks/kserve_peer.py --onnx s5.onnx --acc 81.2 --port 8085
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model-name", default="weightshare")
    ap.add_argument("--subnet", default="s0", help="Name reported in each answer.")
    ap.add_argument("--acc", type=float, required=True, help="Its test accuracy (%%).")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    # kserve.model_server parses sys.argv when imported: give it none of ours.
    sys.argv = sys.argv[:1]
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))

    import numpy as np
    import onnxruntime as ort
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.model_server import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer
    from kserve.utils.utils import generate_uuid

    class OnnxSubNet(Model):
        """A kserve.Model over one onnxruntime session (input "input", output "logits")."""

        def __init__(self, name: str, path: str, threads: int) -> None:
            super().__init__(name)
            self.path, self.threads = path, threads
            self.session: ort.InferenceSession | None = None
            self.load()

        def load(self) -> bool:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = so.inter_op_num_threads = self.threads
            self.session = ort.InferenceSession(self.path, so,
                                                providers=["CPUExecutionProvider"])
            self.ready = True
            return self.ready

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None
                    ) -> InferResponse:
            assert self.session is not None
            x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            (logits,) = self.session.run(None, {"input": x})
            out = InferOutput("logits", list(logits.shape), "FP32")
            out.set_data_from_numpy(logits, binary_data=payload.use_binary_outputs)
            # The response id must be a string: KServe's own predictors make one up.
            return InferResponse(payload.id or generate_uuid(), self.name, [out],
                                 parameters={"subnet": a.subnet, "subnet_acc": a.acc,
                                             "batch_size": int(logits.shape[0])},
                                 use_binary_outputs=payload.use_binary_outputs)

    class LoopbackModelServer(ModelServer):
        """ModelServer.start() for one worker and REST only, bound to 127.0.0.1."""

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                self.http_port, workers=1, grace_period=self.grace_period,
                event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive)
            self._rest_server.config.host = "127.0.0.1"
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    model = OnnxSubNet(a.model_name, a.onnx, a.threads)
    server = LoopbackModelServer(http_port=a.port, workers=1, enable_grpc=False,
                                 enable_latency_logging=False)
    # After ModelServer configured KServe's logging: no access or timing line per request.
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
