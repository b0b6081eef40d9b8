"""Serve on Ray Serve replicas: `weightshare serve --engine ray`.

Each replica is a Ray Serve replica actor holding the whole serving stack of the
single-process server (`build_stack`: the SuperNet, its profile, the executor) and its
own `InferenceWorker`, so SlackFit plans over that replica's queue only. The HTTP front
end is the very same Open Inference Protocol app (`server.create_app`), mounted as each
replica's FastAPI ingress: Ray's proxy on `host:port` forwards every request to a replica
chosen by the request router (`router="slack-aware"`: `ray_router.SlackAwareRouter`,
Ray Serve's request-router hook; `"default"`: Ray's power of two choices), so tritonclient
and the load generator talk to it unchanged.

Ray does the rest of what an engine does: it starts `replicas` replicas (or autoscales
between `autoscale=(min, max)` on `target_ongoing_requests` per replica), calls each
replica's `check_health` (the inference thread must be alive) every
`health_check_period_s`, and replaces a replica that died or failed its check while the
others keep answering. Every answer carries `x-weightshare-replica` (the replica's id),
`/metrics` answers with the metrics of the replica that took the request, and the same
series are exported per replica (tagged `replica`) through Ray's metrics endpoint.

The driver builds the stack once before Ray starts (so a bad checkpoint or option fails
here, and the profile, BN statistics and onnxruntime sessions are cached beside the
checkpoint); each replica then loads them in seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import WeightshareError
from .metrics import ServeMetrics
from .stack import StackConfig

__all__ = ["ROUTERS", "RayEngineConfig", "RayEngineError", "RayServing", "parse_autoscale",
           "serve_forever", "start_ray_serving"]

# Router name -> the RequestRouterConfig class path (None: Ray's default).
ROUTERS: dict[str, str | None] = {
    "slack-aware": "weightshare.serve.ray_router:SlackAwareRouter",
    "default": None,
}


class RayEngineError(WeightshareError):
    """A Ray engine option a user got wrong."""


def parse_autoscale(spec: str) -> tuple[int, int]:
    """'MIN,MAX' -> (min, max) with 1 <= min <= max."""
    try:
        lo, hi = (int(v) for v in spec.split(","))
    except ValueError:
        raise RayEngineError(f"--autoscale must be MIN,MAX (two integers), got {spec!r}"
                             ) from None
    if not 1 <= lo <= hi:
        raise RayEngineError(f"--autoscale needs 1 <= MIN <= MAX, got {lo},{hi}")
    return lo, hi


@dataclass(frozen=True)
class RayEngineConfig:
    """replicas: fixed replica count (ignored with autoscale=(min, max), where Ray scales
    on target_ongoing_requests per replica). router: a ROUTERS name. threads: torch (and
    onnxruntime) threads per replica. pin_cores: CPU cores replicas pin themselves to, one
    replica per core while there are free ones (a replacement takes the dead one's core);
    empty: no pinning. queue_size: requests queued per replica before it answers 429 (also
    Ray's max_ongoing_requests per replica). metrics_port: Ray's Prometheus export port
    (None: Ray picks one; see RayServing.metrics_url). proxy_grpc: Ray's proxy reaches the
    replicas over gRPC (RAY_SERVE_PROXY_USE_GRPC=1, unless that is set already) rather than
    through Ray actor calls; both take effect when Ray starts (the first call)."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    target_ongoing_requests: float = 16.0
    router: str = "slack-aware"
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 1
    pin_cores: tuple[int, ...] = ()
    queue_size: int = 512
    health_check_period_s: float = 2.0
    health_check_timeout_s: float = 10.0
    routing_stats_period_s: float = 1.0
    metrics_port: int | None = None
    proxy_grpc: bool = True
    app_name: str = "weightshare"

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise RayEngineError("--replicas must be >= 1")
        if self.autoscale is not None and not 1 <= self.autoscale[0] <= self.autoscale[1]:
            raise RayEngineError(f"autoscale needs 1 <= min <= max, got {self.autoscale}")
        if self.target_ongoing_requests <= 0:
            raise RayEngineError("--target-ongoing must be > 0")
        if self.router not in ROUTERS:
            raise RayEngineError(f"unknown router {self.router!r}; choose one of "
                                 f"{', '.join(ROUTERS)}")
        if self.threads < 1 or self.queue_size < 1:
            raise RayEngineError("threads and queue_size must be >= 1")
        ncpu = os.cpu_count() or 1
        if any(not 0 <= c < ncpu for c in self.pin_cores):
            raise RayEngineError(f"pin_cores {self.pin_cores} outside this machine's "
                                 f"cores 0..{ncpu - 1}")

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


# ------------------------------------------------------------------ the replica
class _ReplicaMetrics(ServeMetrics):
    """The server's Prometheus metrics, also exported through Ray's metrics (tagged with the
    replica by Ray), plus the drain time per request the slack-aware router ranks by."""

    def __init__(self, initial_ms_per_request: float) -> None:
        super().__init__()
        from ray.serve import metrics as rm

        self.ms_per_request = initial_ms_per_request
        self._ray_requests = rm.Counter("weightshare_replica_requests",
                                        "Inference requests by outcome, per replica.",
                                        tag_keys=("outcome",))
        self._ray_batches = rm.Counter("weightshare_replica_batches",
                                       "Batches served, by SubNet, per replica.",
                                       tag_keys=("subnet",))
        self._ray_latency = rm.Histogram("weightshare_replica_request_latency_ms",
                                         "End-to-end latency of answered requests (ms).",
                                         boundaries=[1, 2.5, 5, 10, 25, 50, 75, 100, 150,
                                                     250, 500, 1000])
        self._ray_queue = rm.Gauge("weightshare_replica_queue_depth",
                                   "Requests waiting or running on the replica.")

    def record_batch(self, subnet: str, images: int, requests: int, seconds: float) -> None:
        super().record_batch(subnet, images, requests, seconds)
        self._ray_batches.inc(tags={"subnet": subnet})
        # An EWMA: quick enough to follow a change of SubNet mix within a second of load.
        per = seconds * 1e3 / max(requests, 1)
        self.ms_per_request = 0.8 * self.ms_per_request + 0.2 * per

    def record_request(self, outcome: str, latency_s: float | None = None) -> None:
        super().record_request(outcome, latency_s)
        self._ray_requests.inc(tags={"outcome": outcome})
        if latency_s is not None and outcome in ("ok", "late"):
            self._ray_latency.observe(latency_s * 1e3)

    def set_queue(self, n: int) -> None:
        self._ray_queue.set(n)


def _pin_to_free_core(cores: tuple[int, ...], tag: str) -> int | None:
    """Pin this process to the first core in `cores` no live replica holds (a lock file per
    core, held for the process's life, so the kernel frees it when a replica dies); all
    taken: the least recently numbered, round robin by pid."""
    if not cores:
        return None
    for c in cores:
        # Held open for the process's life (not a with block): the lock is the claim.
        f = open(os.path.join(tempfile.gettempdir(),  # noqa: SIM115
                              f"weightshare-{tag}-core{c}.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _HELD_LOCKS.append(f)
        os.sched_setaffinity(0, {c})
        return c
    c = cores[os.getpid() % len(cores)]
    os.sched_setaffinity(0, {c})
    return c


_HELD_LOCKS: list[Any] = []
# The app this replica process built: Ray's ingress calls a builder with no arguments after
# the deployment's __init__, and the app needs what __init__ built (one replica per actor
# process, so one slot per process is enough).
_REPLICA_APP: list[Any] = []


def _replica_app() -> Any:
    return _REPLICA_APP[-1]


class _ReplicaHeader:
    """Pure ASGI middleware adding `x-weightshare-replica: <id>` to every answer (cheaper than
    an `@app.middleware("http")` one: no request/response objects are built)."""

    def __init__(self, app: Any, replica_id: str) -> None:
        self.app, self.header = app, (b"x-weightshare-replica", replica_id.encode())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


class WeightshareReplica:
    """One replica: the stack, one inference worker with its policy, and the OIP app."""

    def __init__(self, stack_cfg: StackConfig, server_cfg: Any, queue_size: int, threads: int,
                 pin_cores: tuple[int, ...], tag: str) -> None:
        import torch
        from ray import serve

        from .server import create_app
        from .stack import build_stack
        from .worker import InferenceWorker

        self.core = _pin_to_free_core(pin_cores, tag)
        torch.set_num_threads(threads)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.stack = build_stack(replace(stack_cfg, threads=threads, show_progress=False))
        prof = self.stack.profile
        big = prof.subnets[-1].name
        self.metrics = _ReplicaMetrics(prof.latency_ms(big, prof.max_batch, "median")
                                       / prof.max_batch)
        self.worker = InferenceWorker(self.stack.backend, self.stack.policy, prof,
                                      queue_capacity=queue_size, metrics=self.metrics)
        self.stack.on_profile(self.worker.update_profile)
        app = create_app(self.worker, self.stack.runtime.input_shape(),
                         self.stack.runtime.num_classes, server_cfg, self.metrics)
        # A middleware, not a wrapper: Ray's ingress wants the FastAPI app itself.
        app.add_middleware(_ReplicaHeader, replica_id=self.replica_id)
        _REPLICA_APP.append(app)

    async def check_health(self) -> None:
        # Ray calls this every health_check_period_s; raising makes Ray replace the replica.
        # (The worker starts with the app's lifespan, before Ray's first check.)
        if not self.worker.alive:
            raise RuntimeError("the inference worker thread is not running")

    async def record_routing_stats(self) -> dict[str, Any]:
        pending = self.worker.pending()
        self.metrics.set_queue(pending)
        return {"pending": pending, "ms_per_request": self.metrics.ms_per_request,
                "core": self.core}

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()


# ------------------------------------------------------------------- the driver
@dataclass
class RayServing:
    """A running Ray Serve application (what `start_ray_serving` returns)."""

    url: str
    config: RayEngineConfig
    metrics_url: str | None

    def replicas(self) -> dict[str, int]:
        """Replicas per state (RUNNING, STARTING, ...), from Ray Serve's controller."""
        from ray import serve

        app = serve.status().applications.get(self.config.app_name)
        out: dict[str, int] = {}
        for dep in (app.deployments.values() if app is not None else ()):
            for state, n in dep.replica_states.items():
                key = getattr(state, "value", str(state))
                out[key] = out.get(key, 0) + int(n)
        return out

    def running_replicas(self) -> int:
        return int(self.replicas().get("RUNNING", 0))

    def replica_actor_names(self) -> list[str]:
        import ray

        prefix = f"SERVE_REPLICA::{self.config.app_name}#"
        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith(prefix))

    def kill_replica(self, replica_id: str | None = None) -> str:
        """Kill one replica's actor (Ray starts a replacement); returns the killed id."""
        import ray

        names = self.replica_actor_names()
        if replica_id is not None:
            names = [n for n in names if n.endswith(f"#{replica_id}")]
        if not names:
            raise RayEngineError(f"no replica {replica_id or ''} to kill")
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        return names[0].rsplit("#", 1)[-1]

    def wait_running(self, n: int, timeout_s: float = 120.0) -> float:
        """Wait until `n` replicas are RUNNING; returns the seconds waited."""
        t0 = time.monotonic()
        while self.running_replicas() < n:
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"{n} replicas not running after {timeout_s:.0f} s: "
                                   f"{self.replicas()}")
            time.sleep(0.2)
        return time.monotonic() - t0

    def shutdown(self) -> None:
        import ray
        from ray import serve

        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def _quiet_logs() -> Any:
    # Ray writes an access-log line per request in the proxy and in the replica: CPU taken
    # from inference on every request; the server's own metrics count requests instead.
    from ray.serve.schema import LoggingConfig

    return LoggingConfig(enable_access_log=False, log_level="WARNING")


def start_ray_serving(stack_cfg: StackConfig, server_cfg: Any, cfg: RayEngineConfig,
                      log: Callable[[str], None] = lambda _: None,
                      wait_s: float = 600.0, prepare: bool = True) -> RayServing:
    """Start Ray (a local cluster), Ray Serve's proxy on cfg.host:cfg.port and the
    deployment; return once every replica is running (or min replicas, autoscaling).

    Called again in the same process (Ray already up), it redeploys the application with
    the new options on the running proxy (host and port stay those of the first call).
    prepare: build the stack here first (off only when an earlier call already did).
    """
    import ray
    from ray import serve
    from ray.serve.config import AutoscalingConfig, HTTPOptions, RequestRouterConfig

    from .stack import build_stack

    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: Ray Serve's proxy binds {cfg.host}: reachable from other machines")
    # Fails here, before any actor starts, and leaves profile, BN statistics and onnxruntime
    # sessions beside the checkpoint for the replicas to load.
    if prepare:
        log(f"preparing the deployment ({cfg.threads} thread(s) per replica)")
        pre = build_stack(replace(stack_cfg, threads=cfg.threads, ort_background=False),
                          log=log)
        pre.wait_executor()
        pre.close()

    ncpu = os.cpu_count() or 1
    init: dict[str, Any] = {"num_cpus": max(ncpu, cfg.max_replicas * cfg.threads),
                            "include_dashboard": False, "log_to_driver": False,
                            "configure_logging": False}
    if cfg.metrics_port is not None:
        init["_metrics_export_port"] = cfg.metrics_port
    if not ray.is_initialized():
        # Ray starts its workers at nice 15 by default (to keep the driver responsive); here
        # the replicas are the server, and at nice 15 any other load on the machine starves
        # them (minutes to import torch). The raylet reads this from its environment.
        os.environ.setdefault("RAY_worker_niceness", "0")
        if cfg.proxy_grpc:
            # The proxy hands each request to its replica over gRPC instead of a Ray actor
            # call: measured 1.6x the requests per second through one replica on this
            # machine (82 -> 131 req/s, 8 clients). Ray reads it in the proxy's process.
            os.environ.setdefault("RAY_SERVE_PROXY_USE_GRPC", "1")
        ray.init(**init)
        serve.start(http_options=HTTPOptions(host=cfg.host, port=cfg.port),
                    logging_config=_quiet_logs())
    options: dict[str, Any] = {
        "name": "WeightshareReplica",
        "ray_actor_options": {"num_cpus": cfg.threads},
        "max_ongoing_requests": cfg.queue_size,
        "health_check_period_s": cfg.health_check_period_s,
        "health_check_timeout_s": cfg.health_check_timeout_s,
        "graceful_shutdown_timeout_s": 10.0,
        "logging_config": _quiet_logs(),
    }
    if cfg.autoscale is not None:
        options["autoscaling_config"] = AutoscalingConfig(
            min_replicas=cfg.autoscale[0], max_replicas=cfg.autoscale[1],
            target_ongoing_requests=cfg.target_ongoing_requests)
    else:
        options["num_replicas"] = cfg.replicas
    router = ROUTERS[cfg.router]
    rkw: dict[str, Any] = {"request_routing_stats_period_s": cfg.routing_stats_period_s}
    if router is not None:
        rkw["request_router_class"] = router
    options["request_router_config"] = RequestRouterConfig(**rkw)
    deployment = serve.deployment(**options)(serve.ingress(_replica_app)(WeightshareReplica))
    # One core-claim namespace per deployment: replicas of a redeployment must not wait for
    # the old ones' locks, a replacement of a dead replica must find its core free.
    tag = f"{cfg.app_name}-{cfg.port}-{os.getpid()}-{time.monotonic_ns()}"
    log(f"starting {cfg.autoscale or cfg.replicas} Ray Serve replica(s), router "
        f"{cfg.router}")
    serve.run(deployment.bind(stack_cfg, server_cfg, cfg.queue_size, cfg.threads,
                              cfg.pin_cores, tag),
              name=cfg.app_name, route_prefix="/")
    node = ray._private.worker.global_worker.node  # where Ray exports Prometheus metrics
    port = getattr(node, "metrics_export_port", None)
    serving = RayServing(f"http://{cfg.host}:{cfg.port}", cfg,
                         f"http://127.0.0.1:{port}/metrics" if port else None)
    serving.wait_running(cfg.autoscale[0] if cfg.autoscale else cfg.replicas, wait_s)
    return serving


def serve_forever(stack_cfg: StackConfig, server_cfg: Any, cfg: RayEngineConfig,
                  log: Callable[[str], None] = print) -> None:
    """`weightshare serve --engine ray`: start, log replica changes, shut down on Ctrl-C."""
    serving = start_ray_serving(stack_cfg, server_cfg, cfg, log=log)
    try:
        last = serving.replicas()
        log(f"ready: serving {server_cfg.model_name!r} on {serving.url}/v2 with "
            f"{last.get('RUNNING', 0)} Ray replica(s), router {cfg.router}; per-replica "
            f"metrics: {serving.metrics_url or 'Ray metrics export'}")
        while True:
            time.sleep(2.0)
            now = serving.replicas()
            if now != last:
                log(f"replicas: {now}")
                last = now
    except KeyboardInterrupt:
        log("shutting down Ray Serve")
    finally:
        serving.shutdown()
