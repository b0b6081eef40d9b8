"""The one inference worker thread: asks the policy, runs the batch, answers each request.

Mechanism only. Requests are submitted from any thread (the server's event
loop) into a bounded `RequestQueue`; the worker thread waits for work, calls
`policy.decide(queue, clock.now(), profile)` under the queue lock, then --
outside the lock, so submissions never wait on inference -- loads a model if
the decision asks (separate-model policies), concatenates the batch, runs it
on the backend and calls each request's `on_done` with a `Completion`.
Answers that would arrive after the deadline are reported as "late", never
passed off as on time. `stop(drain=True)` stops admitting and finishes what
is queued.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .batching import RequestQueue
from .core import Clock, Decision, MonotonicClock, Request
from .metrics import ServeMetrics
from .policies import Policy
from .profile import Profile

__all__ = ["Backend", "Completion", "InferenceWorker", "ShuttingDown"]


class ShuttingDown(RuntimeError):
    """The worker no longer admits requests (graceful shutdown in progress)."""


class Backend(Protocol):
    """What the worker runs batches on: `SubNetActRuntime` or `SeparateModelsRuntime`."""

    def run(self, batch: Tensor, name: str) -> Tensor: ...

    def prepare(self, name: str) -> float: ...


@dataclass(frozen=True)
class Completion:
    """A request's answer. status: ok | late | dropped | error."""

    status: str
    output: Tensor | None = None
    subnet: str | None = None
    acc: float | None = None
    batch: int = 0
    queue_ms: float = 0.0
    service_ms: float = 0.0
    latency_ms: float = 0.0
    error: str | None = None


class InferenceWorker:
    """Dynamic batching through a policy, in one thread."""

    def __init__(self, backend: Backend, policy: Policy, profile: Profile, *,
                 clock: Clock | None = None, queue_capacity: int | None = 256,
                 metrics: ServeMetrics | None = None, idle_wait_s: float = 0.001) -> None:
        self.backend, self.policy, self.profile = backend, policy, profile
        self.clock = clock or MonotonicClock()
        self.queue = RequestQueue(queue_capacity)
        self.metrics = metrics
        self.idle_wait_s = idle_wait_s
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._accepting = True
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="weightshare-infer", daemon=True)
        self.batches = 0
        # Seeded from the backend so a SubNet loaded before traffic (a delta-switch backend
        # warmed up with its default SubNet) is not counted as a switch on the first batch.
        self._last_subnet: str | None = getattr(backend, "current", None)
        attach = getattr(backend, "attach_metrics", None)
        if metrics is not None and attach is not None:
            attach(metrics)  # backends that read weights on a switch report bytes and time

    # -------------------------------------------------------------- lifecycle
    def start(self) -> InferenceWorker:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def accepting(self) -> bool:
        return self._accepting and self.alive

    def stop(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop admitting; with `drain`, serve what is queued first; then end the thread."""
        with self._cond:
            self._accepting = False
            if not drain:
                for r in self.queue.clear():
                    self._finish(r, Completion("error", error="server shutting down"))
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def update_profile(self, profile: Profile) -> None:
        """Plan with `profile` from the next decision on (e.g. an onnxruntime session became
        ready, so a SubNet got faster). One attribute swap: the loop reads it per decision."""
        self.profile = profile

    def pending(self) -> int:
        with self._cond:
            return len(self.queue) + (1 if self._busy else 0)

    # ------------------------------------------------------------- submission
    def submit(self, payload: Tensor, slo_s: float,
               on_done: Callable[[Completion], Any]) -> Request:
        """Queue one request; raises QueueFull (answer 429) or ShuttingDown (503)."""
        now = self.clock.now()
        req = Request(next(self._ids), now, now + slo_s, int(payload.shape[0]), payload, on_done)
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("server is shutting down")
            self.queue.push(req)
            if self.metrics:
                self.metrics.queue_depth.set(len(self.queue))
            self._cond.notify()
        return req

    # ------------------------------------------------------------------- loop
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not len(self.queue) and not self._stopping:
                    self._cond.wait()
                if not len(self.queue):
                    return  # stopping and drained
                now = self.clock.now()
                try:
                    decision = self.policy.decide(self.queue, now, self.profile)
                    self.queue.remove(decision.requests + decision.dropped)
                except Exception as err:  # a policy bug must not hang every client
                    for r in self.queue.clear():
                        self._finish(r, Completion("error", error=f"policy failed: {err}"))
                    continue
                if self.metrics:
                    self.metrics.queue_depth.set(len(self.queue))
                if decision.idle:
                    self._cond.wait(self.idle_wait_s)
                    continue
                self._busy = True
            try:
                self._execute(decision, now)
            finally:
                with self._cond:
                    self._busy = False

    def _finish(self, req: Request, completion: Completion) -> None:
        if req.on_done is not None:
            # A client that went away must not kill the worker.
            with contextlib.suppress(Exception):
                req.on_done(completion)

    def _execute(self, d: Decision, now: float) -> None:
        for r in d.dropped:
            self._finish(r, Completion(
                "dropped", latency_ms=(now - r.arrival) * 1e3,
                error=f"deadline cannot be met: {(r.deadline - now) * 1e3:.1f} ms of slack left, "
                      "less than any deployed SubNet needs"))
        start = self.clock.now()
        if d.load is not None:
            self.backend.prepare(d.load)
            if self.metrics:
                self.metrics.loads.inc()
        if not d.requests:
            self.policy.observe(d, start, self.clock.now())
            return
        assert d.subnet is not None
        try:
            x = torch.cat([r.payload for r in d.requests]) if len(d.requests) > 1 \
                else d.requests[0].payload
            t0 = self.clock.now()
            out = self.backend.run(x, d.subnet)
            finish = self.clock.now()
        except Exception as err:
            for r in d.requests:
                self._finish(r, Completion("error", subnet=d.subnet, error=f"inference failed: "
                                           f"{type(err).__name__}: {err}"))
            return
        self.batches += 1
        acc = self.profile.acc(d.subnet)
        switched = self._last_subnet is not None and d.subnet != self._last_subnet
        self._last_subnet = d.subnet
        if self.metrics:
            self.metrics.record_batch(d.subnet, d.batch_size, len(d.requests), finish - t0)
            if switched:
                self.metrics.switches.inc()
        offset = 0
        for r in d.requests:
            status = "ok" if finish <= r.deadline else "late"
            self._finish(r, Completion(
                status, out[offset:offset + r.size], d.subnet, acc, d.batch_size,
                queue_ms=(t0 - r.arrival) * 1e3, service_ms=(finish - t0) * 1e3,
                latency_ms=(finish - r.arrival) * 1e3,
                error=None if status == "ok" else
                f"deadline exceeded by {(finish - r.deadline) * 1e3:.1f} ms"))
            offset += r.size
        self.policy.observe(d, start, finish)
