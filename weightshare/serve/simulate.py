"""Discrete-event simulation of the serving loop: the same policies, profile and traces,
on a virtual clock.

One worker, as in the server: whenever it is free and requests wait, the
policy decides; the batch then takes its profiled latency (`exec_stat`,
median by default, optionally with seeded multiplicative jitter), plus, for
`separate` policies (INFaaS), the profiled time to load a model it does not
hold, with the same LRU bound the policy assumes. Arrivals beyond the queue's
capacity are rejected, as the server's admission control does. With an
`overhead` model (`serve.overhead.RequestOverhead`, what the server measures at
startup) the request path is replayed too: a request joins the queue once its
arrival work is done, a batch also pays its collation, the arrival work of every
request that comes in while it runs (when the event loop shares the core), and
its answers are encoded one after another, the k-th finishing k answer-times
after the batch. The result is deterministic for a given (policy, profile,
trace, config).
"""

from __future__ import annotations

import bisect
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .batching import QueueFull, RequestQueue
from .core import Decision, ManualClock, Request
from .outcomes import Outcome, summarize
from .overhead import RequestOverhead
from .policies import Policy
from .profile import Profile
from .traces import Trace

__all__ = ["SimBackend", "SimConfig", "SimResult", "simulate"]


@dataclass(frozen=True)
class SimConfig:
    """slo_ms: every request's deadline is arrival + slo_ms.
    queue_capacity: admission control bound (requests), None for unbounded.
    exec_stat: which profiled latency a batch takes ("median" or "p99").
    jitter: each batch's time is multiplied by uniform(1 - jitter, 1 + jitter).
    overhead: the server's time around the model (None: model time only).
    """

    slo_ms: float = 100.0
    queue_capacity: int | None = 1024
    exec_stat: str = "median"
    jitter: float = 0.0
    seed: int = 0
    overhead: RequestOverhead | None = None

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ValueError(f"slo_ms must be > 0, got {self.slo_ms}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.exec_stat not in ("median", "p99"):
            raise ValueError(f"exec_stat must be 'median' or 'p99', got {self.exec_stat!r}")


class SimBackend:
    """The time a decision takes, from the profile.

    kind "subnetact": every deployed SubNet is resident; changing SubNet costs the
    profiled switch time. kind "separate": at most `max_held` models resident
    (LRU); loading one costs its profiled load time.
    """

    def __init__(self, profile: Profile, kind: str = "subnetact", max_held: int | None = None,
                 exec_stat: str = "median", jitter: float = 0.0, seed: int = 0) -> None:
        if kind not in ("subnetact", "separate"):
            raise ValueError(f"unknown runtime kind {kind!r}")
        self.profile, self.kind, self.exec_stat, self.jitter = profile, kind, exec_stat, jitter
        self.max_held = max_held or len(profile.subnets)
        self.held: OrderedDict[str, None] = OrderedDict()
        self.last: str | None = None
        self.loads = 0
        self.load_s = 0.0
        self._rng = random.Random(seed)

    def _noise(self) -> float:
        return self._rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0

    def _ensure(self, name: str) -> float:
        if self.kind == "subnetact":
            return 0.0
        if name in self.held:
            self.held.move_to_end(name)
            return 0.0
        self.held[name] = None
        while len(self.held) > self.max_held:
            self.held.popitem(last=False)
        cost = self.profile.load_ms.get(name)
        if cost is None:
            raise ValueError(f"the profile has no load time for {name!r}; re-run the profile")
        self.loads += 1
        self.load_s += cost / 1000.0
        return cost / 1000.0

    def duration(self, decision: Decision) -> float:
        """Seconds the worker is busy carrying out `decision`."""
        t = 0.0
        if decision.load is not None:
            t += self._ensure(decision.load)
        if decision.requests:
            assert decision.subnet is not None
            t += self._ensure(decision.subnet)
            if self.kind == "subnetact" and self.last not in (None, decision.subnet):
                # A switch measured below zero is timing noise: it cannot give time back.
                t += max(0.0, self.profile.switch_us or 0.0) / 1e6
            self.last = decision.subnet
            ms = self.profile.latency_ms(decision.subnet, decision.batch_size, self.exec_stat)
            t += ms / 1000.0 * self._noise()
        return t


@dataclass
class SimResult:
    outcomes: list[Outcome]
    summary: dict[str, Any]
    decisions: int
    loads: int = 0
    load_s: float = 0.0
    timeline: list[tuple[float, str, int]] = field(default_factory=list)

    def to_dict(self, with_outcomes: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": self.summary, "decisions": self.decisions,
                               "loads": self.loads, "load_s": self.load_s}
        if with_outcomes:
            out["outcomes"] = [o.to_dict() for o in self.outcomes]
        return out


def simulate(policy: Policy, profile: Profile, trace: Trace,
             config: SimConfig | None = None) -> SimResult:
    """Run `policy` over `trace` with one worker on a virtual clock."""
    cfg = config or SimConfig()
    backend = SimBackend(profile, policy.runtime_kind, policy.max_held, cfg.exec_stat,
                         cfg.jitter, cfg.seed)
    clock = ManualClock(0.0)
    queue = RequestQueue(cfg.queue_capacity)
    outcomes: list[Outcome] = []
    timeline: list[tuple[float, str, int]] = []
    arrivals = trace.arrivals
    ov = cfg.overhead
    # A request is queued once its arrival work (framing, decode, hand-off) is done.
    lag_s = ov.arrival_ms / 1000.0 if ov is not None else 0.0
    queued_at = [a + lag_s for a in arrivals]
    slo_s = cfg.slo_ms / 1000.0
    i = n_decisions = 0

    def admit_until(t: float) -> None:
        nonlocal i
        while i < len(arrivals) and queued_at[i] <= t:
            a = arrivals[i]
            req = Request(i, a, a + slo_s)
            try:
                queue.push(req)
            except QueueFull:
                outcomes.append(Outcome(i, a, req.deadline, "rejected"))
            i += 1

    def stretched(start: float, busy: float) -> float:
        """`busy` seconds of work started at `start`, plus the arrival work of every request
        arriving meanwhile on a shared core (which arrives later again stretches it)."""
        if ov is None or not ov.shared_core or ov.arrival_ms <= 0:
            return busy
        lo = bisect.bisect_right(arrivals, start)
        total, seen = busy, 0
        for _ in range(100):  # converges: each round adds only the arrivals of the extension
            n = bisect.bisect_right(arrivals, start + total) - lo
            if n == seen:
                break
            seen = n
            total = busy + n * lag_s
        return total

    while i < len(arrivals) or len(queue):
        if not len(queue):
            clock.set(max(clock.now(), queued_at[i]))
        admit_until(clock.now())
        now = clock.now()
        decision = policy.decide(queue, now, profile)
        n_decisions += 1
        queue.remove(decision.requests + decision.dropped)
        for r in decision.dropped:
            outcomes.append(Outcome(r.id, r.arrival, r.deadline, "dropped", finish=now))
        if decision.idle:
            if i >= len(arrivals):  # nothing will ever arrive: what waits is never served
                for r in queue.clear():
                    outcomes.append(Outcome(r.id, r.arrival, r.deadline, "dropped", finish=now))
                break
            clock.set(max(now, queued_at[i]))
            continue
        busy = backend.duration(decision)
        b = decision.batch_size
        answer_s = 0.0
        if ov is not None and decision.requests:
            busy += (ov.batch_ms + b * ov.item_ms) / 1000.0
            answer_s = ov.answer_ms / 1000.0
        model_end = now + stretched(now, busy)
        finish = model_end + len(decision.requests) * answer_s
        if decision.requests:
            assert decision.subnet is not None
            acc = profile.acc(decision.subnet)
            for k, r in enumerate(decision.requests, start=1):
                done = model_end + k * answer_s
                status = "ok" if done <= r.deadline + 1e-12 else "late"
                outcomes.append(Outcome(r.id, r.arrival, r.deadline, status, done,
                                        decision.subnet, acc, b))
            timeline.append((now, decision.subnet, b))
        policy.observe(decision, now, finish)
        clock.set(finish)

    outcomes.sort(key=lambda o: o.id)
    duration = max(trace.duration, clock.now())
    return SimResult(outcomes, summarize(outcomes, duration), n_decisions, backend.loads,
                     backend.load_s, timeline)
