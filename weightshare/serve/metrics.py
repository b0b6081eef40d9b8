"""Prometheus metrics of a serving process, on a registry of its own.

Each server gets its own `CollectorRegistry` (so tests can run several servers
in one process) exposed at `/metrics`: requests by outcome, end-to-end
latency, SLO hits and misses, drops and rejections, which SubNet served each
batch, batch sizes and queue depth, and SubNet switches: how many, and for backends that
read weights on a switch (`serve --switch-mode delta`) the bytes read and the time taken.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                    2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The counters and histograms one server updates."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("weightshare_requests", "Inference requests by outcome "
                                "(ok, late, dropped, rejected, bad_request, error).",
                                ["outcome"], registry=r)
        self.latency = Histogram("weightshare_request_latency_seconds",
                                 "End-to-end latency of answered inference requests.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.slo = Counter("weightshare_slo", "Requests that met (hit) or missed their SLO.",
                           ["result"], registry=r)
        self.drops = Counter("weightshare_dropped",
                             "Requests dropped because their deadline could not be met.",
                             registry=r)
        self.subnet = Counter("weightshare_subnet_batches", "Batches served, by SubNet.",
                              ["subnet"], registry=r)
        self.subnet_requests = Counter("weightshare_subnet_requests",
                                       "Requests served, by SubNet.", ["subnet"], registry=r)
        self.batch = Histogram("weightshare_batch_size", "Images per executed batch.",
                               buckets=_BATCH_BUCKETS, registry=r)
        self.service = Histogram("weightshare_batch_seconds", "Execution time of one batch.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("weightshare_queue_depth", "Requests waiting.", registry=r)
        self.loads = Counter("weightshare_model_loads",
                             "Separately stored models loaded (INFaaS-style switching).",
                             registry=r)
        self.switches = Counter("weightshare_subnet_switches",
                                "Batches run on a different SubNet than the batch before.",
                                registry=r)
        self.switch_bytes = Counter("weightshare_switch_bytes",
                                    "Weight bytes read from storage by SubNet switches "
                                    "(FastSwitch delta mode; 0 when every SubNet is resident).",
                                    registry=r)
        self.switch_seconds = Counter("weightshare_switch_seconds",
                                      "Wall time spent switching SubNets' weights in.",
                                      registry=r)

    def record_switch(self, bytes_read: int, seconds: float) -> None:
        """A backend read `bytes_read` bytes in `seconds` to switch SubNets."""
        self.switch_bytes.inc(bytes_read)
        self.switch_seconds.inc(seconds)

    def record_batch(self, subnet: str, images: int, requests: int, seconds: float) -> None:
        self.subnet.labels(subnet).inc()
        self.subnet_requests.labels(subnet).inc(requests)
        self.batch.observe(images)
        self.service.observe(seconds)

    def record_request(self, outcome: str, latency_s: float | None = None) -> None:
        self.requests.labels(outcome).inc()
        if outcome == "dropped":
            self.drops.inc()
        if outcome in ("ok", "late", "dropped"):
            self.slo.labels("hit" if outcome == "ok" else "miss").inc()
        if latency_s is not None and outcome in ("ok", "late"):
            self.latency.observe(latency_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
