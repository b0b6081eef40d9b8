"""The real server on loopback for one run: start it for a built stack, replay a trace at it.

`started_server` starts a fresh `InferenceWorker` + Open Inference Protocol app for one
policy on an already built `Stack` (one SuperNet, one profile), bound to 127.0.0.1 on a
free port; `replay` serves one policy and replays a trace with the open-loop load
generator in a separate process (a client in this process would contend for the
interpreter lock with the server it measures), then shuts the server down gracefully.
Nothing here is listening once a function returns.

The experiments built on these (the demo's serving step, the simulator check, the
overhead measurement, the live FastSwitch comparison) live in `weightshare.experiments`.
"""

from __future__ import annotations

from typing import Any

from .loadgen import LoadConfig, LoadResult, run_load_process, run_load_sync
from .traces import Trace

__all__ = ["replay", "started_server"]

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
