"""Serving policies: which SubNet runs which requests next. SlackFit and its baselines.

A policy is one method, `decide(queue, now, profile) -> Decision`: it reads the
deadline-ordered queue (`core.QueueView`), the time on the injected clock and
the latency profile, and answers which deployed SubNet serves which requests
as one batch, and which requests to drop because they can no longer meet their
deadline. It never touches tensors, threads or sockets, so the real server,
the simulator and unit tests with a hand-moved clock run the same objects.
An optional `observe(decision, start, finish)` feeds back what a batch took.

Registered policies (`make_policy("name[:arg][,key=value...]")`):

* `slackfit` -- SuperServe's scheduler: earliest deadline first; the head
  request's slack picks, from a table precomputed from the profile, the
  largest batch and then the most accurate SubNet whose latency fits (O(1)).
* `fixed:<subnet>` -- one SubNet always (s0..sN, smallest, largest), with
  Clipper's AIMD adaptive batching (additive increase, multiplicative decrease
  on a deadline miss).
* `maxacc` -- always the most accurate SubNet, the largest batch that fits.
* `infaas` -- INFaaS-style model switching among separately stored models:
  the most accurate (or, with `acc_target`, the cheapest accurate-enough)
  model whose throughput at the SLO covers the current arrival rate; a model
  it does not hold is loaded from disk first (`Decision.load`), keeping at
  most `max_held` in memory.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..registry import Registry
from .core import Decision, QueueView, Request
from .overhead import RequestOverhead
from .profile import Profile
from .spec import make_from_spec

__all__ = [
    "FixedAIMD",
    "Infaas",
    "MaxAcc",
    "Policy",
    "SlackFit",
    "list_policies",
    "make_policy",
    "register_policy",
]


class Policy(ABC):
    """Decides what the single inference worker does next."""

    name: ClassVar[str] = ""
    #: Positional argument of the spec string ("fixed:s3" -> model="s3"), if any.
    positional: ClassVar[str | None] = None
    #: "subnetact": every deployed SubNet runs from the one SuperNet; "separate": the
    #: mechanism holds separately stored models and loads them on `Decision.load`.
    runtime_kind: ClassVar[str] = "subnetact"
    #: For "separate" policies: how many models may be held in memory at once.
    max_held: int | None = None
    #: The server's own time per request and batch (measured at its startup), for policies
    #: that plan with the whole request path; None: plan with model time only.
    overhead: RequestOverhead | None = None

    @abstractmethod
    def decide(self, queue: QueueView, now: float, profile: Profile) -> Decision: ...

    def observe(self, decision: Decision, start: float, finish: float) -> None:
        """Feedback after a batch ran from `start` to `finish` (clock seconds). Default: none."""
        return None

    def describe(self) -> str:
        return self.name

    def set_overhead(self, overhead: RequestOverhead | None) -> None:
        """Plan with `overhead` from the next decision on (the server measures it at startup)."""
        self.overhead = overhead


# ------------------------------------------------------------------- registry
_POLICIES: Registry[type[Policy]] = Registry("policy")


def register_policy(name: str) -> Callable[[type[Policy]], type[Policy]]:
    return _POLICIES.register(name, set_name=True)


def list_policies() -> list[str]:
    return _POLICIES.names()


def make_policy(spec: str, **options: Any) -> Policy:
    """Build a policy from "name", "name:arg" or "name:arg,key=value,..." (plus `options`).

    Examples: "slackfit", "slackfit:bucket_ms=0.5", "fixed:s3", "fixed:largest,add=2",
    "infaas:max_held=2,acc_target=80".
    """
    return make_from_spec(spec, _POLICIES, options)


# -------------------------------------------------------------------- helpers
def _slack_ms(req: Request, now: float) -> float:
    return (req.deadline - now) * 1000.0


def _take(queue: QueueView, start: int, max_items: int) -> tuple[Request, ...]:
    """Requests from `start` on, in EDF order, while their images fit in `max_items`."""
    out: list[Request] = []
    total = 0
    for i in range(start, len(queue)):
        r = queue[i]
        if total + r.size > max_items:
            break
        out.append(r)
        total += r.size
    return tuple(out)


def _fit_level(profile: Profile, name: str, slack_ms: float, head_size: int, pending: int,
               stat: str) -> int | None:
    """The largest profiled batch level (>= the head's size) `name` finishes within the slack."""
    lo = profile.level(head_size)
    for lvl in range(profile.level(max(head_size, min(pending, profile.max_batch))), lo - 1, -1):
        if profile.latency_ms(name, profile.batch_sizes[lvl], stat) <= slack_ms:
            return lvl
    return None


def _check_stat(stat: str) -> str:
    if stat not in ("median", "p99"):
        raise ValueError(f"stat must be 'median' or 'p99', got {stat!r}")
    return stat


def _single_model_decision(queue: QueueView, now: float, profile: Profile, name: str,
                           stat: str, margin_ms: float, max_items: int | None
                           ) -> Decision:
    """Serve with one fixed SubNet: drop heads it cannot finish in time, batch the rest.

    With `max_items` (AIMD's cap) the batch is that many images; without, the largest
    profiled batch that fits the head's slack.
    """
    dropped: list[Request] = []
    pending = queue.items
    for i in range(len(queue)):
        head = queue[i]
        slack = _slack_ms(head, now) - margin_ms
        if head.size > profile.max_batch or slack < profile.latency_ms(name, head.size, stat):
            dropped.append(head)
            pending -= head.size
            continue
        if max_items is None:
            lvl = _fit_level(profile, name, slack, head.size, pending, stat)
            assert lvl is not None  # the head's own size fits, checked above
            cap = profile.batch_sizes[lvl]
        else:
            cap = max(head.size, min(max_items, profile.max_batch))
        batch = _take(queue, i, cap)
        planned = profile.latency_ms(name, sum(r.size for r in batch), stat)
        return Decision(name, batch, tuple(dropped), planned)
    return Decision(None, (), tuple(dropped))


# ------------------------------------------------------------------- SlackFit
@dataclass(frozen=True)
class _SlackTable:
    """Precomputed: for slack bucket k (slack >= k * bucket_ms) and batch level j, the most
    accurate SubNet whose latency at that batch fits, or None."""

    bucket_ms: float
    table: tuple[tuple[str | None, ...], ...]


@register_policy("slackfit")
class SlackFit(Policy):
    """Earliest deadline first; the head's slack -> the largest batch, then the most accurate
    SubNet whose profiled latency fits; requests that cannot make it are dropped.

    bucket_ms: width of a slack bucket (default: a tenth of the fastest profiled latency),
        so a decision is a table lookup; slack is floored to its bucket (never optimistic).
    stat: plan with the profile's "p99" (default, safe) or "median" latency.
    margin_ms: slack held back for what neither the profile nor the overhead model sees.
    overhead: the server's own time (`RequestOverhead`, or `set_overhead` later): each table
        entry then holds model time plus the batch's collation and its answers' encoding, and
        the head's slack is scaled by the share of the core left after the arrival work at
        the arrival rate of the last `rate_window_s` -- still one lookup per decision.
    """

    def __init__(self, bucket_ms: float | None = None, stat: str = "p99",
                 margin_ms: float = 0.0, overhead: RequestOverhead | None = None,
                 rate_window_s: float = 0.5) -> None:
        if bucket_ms is not None and bucket_ms <= 0:
            raise ValueError(f"bucket_ms must be > 0, got {bucket_ms}")
        if rate_window_s <= 0:
            raise ValueError(f"rate_window_s must be > 0, got {rate_window_s}")
        self.bucket_ms = bucket_ms
        self.stat = _check_stat(stat)
        self.margin_ms = float(margin_ms)
        self.rate_window_s = float(rate_window_s)
        self.overhead = overhead
        self._profile: Profile | None = None
        self._plan: _SlackTable | None = None
        self._plan_overhead: RequestOverhead | None = None

    def set_overhead(self, overhead: RequestOverhead | None) -> None:
        self.overhead = overhead
        self._plan = None  # the table holds the overhead: rebuild it on the next decision

    def describe(self) -> str:
        return self.name + (" (+ request overhead)" if self.overhead is not None else "")

    def planned_ms(self, profile: Profile, name: str, batch: int, rate: float = 0.0) -> float:
        """What a batch of `batch` images on `name` is planned to take, answers included."""
        model = profile.latency_ms(name, batch, self.stat)
        return model if self.overhead is None else self.overhead.batch_ms_total(model, batch,
                                                                                 rate)

    def table_for(self, profile: Profile) -> _SlackTable:
        """The bucket table of `profile` (built once per profile object and overhead)."""
        if (self._profile is profile and self._plan is not None
                and self._plan_overhead is self.overhead):
            return self._plan
        ov = self.overhead
        lat = {(s.name, j): profile.latency_ms(s.name, b, self.stat)
               + (ov.static_ms(b) if ov is not None else 0.0)
               for s in profile.subnets for j, b in enumerate(profile.batch_sizes)}
        width = self.bucket_ms or max(1e-3, min(lat.values()) / 10.0)
        n_buckets = min(200_000, int(math.ceil(max(lat.values()) / width)) + 1)
        by_acc = sorted(profile.subnets, key=lambda s: (-s.acc, s.macs))
        rows = []
        for k in range(n_buckets):
            slack = k * width
            row = []
            for j in range(len(profile.batch_sizes)):
                row.append(next((s.name for s in by_acc if lat[s.name, j] <= slack), None))
            rows.append(tuple(row))
        self._profile, self._plan = profile, _SlackTable(width, tuple(rows))
        self._plan_overhead = ov
        return self._plan

    def decide(self, queue: QueueView, now: float, profile: Profile) -> Decision:
        plan = self.table_for(profile)
        last = len(plan.table) - 1
        rate = queue.arrival_rate(now, self.rate_window_s) if self.overhead is not None else 0.0
        # Arrival work on a shared core stretches a batch by 1 / (1 - u): fitting the
        # stretched latency into the slack is fitting the table's latency into slack * (1 - u).
        share = 1.0 - (self.overhead.utilisation(rate) if self.overhead is not None else 0.0)
        dropped: list[Request] = []
        pending = queue.items
        for i in range(len(queue)):
            head = queue[i]
            slack = _slack_ms(head, now) - self.margin_ms
            if head.size > profile.max_batch or slack < 0:
                dropped.append(head)
                pending -= head.size
                continue
            row = plan.table[min(int(slack * share / plan.bucket_ms), last)]
            lo = profile.level(head.size)
            top = profile.level(max(head.size, min(pending, profile.max_batch)))
            for lvl in range(top, lo - 1, -1):
                name = row[lvl]
                if name is not None:
                    batch = _take(queue, i, profile.batch_sizes[lvl])
                    planned = self.planned_ms(profile, name, sum(r.size for r in batch), rate)
                    return Decision(name, batch, tuple(dropped), planned)
            dropped.append(head)  # not even the fastest SubNet finishes in time
            pending -= head.size
        return Decision(None, (), tuple(dropped))


# --------------------------------------------------------------- fixed + AIMD
@register_policy("fixed")
class FixedAIMD(Policy):
    """One SubNet always, batch size adapted by AIMD (Clipper).

    The batch cap grows by `add` after a batch that met every deadline and is
    multiplied by `backoff` after one that missed any; it starts at `start`.
    """

    positional = "model"

    def __init__(self, model: str = "largest", add: float = 1.0, backoff: float = 0.9,
                 start: float = 1.0, stat: str = "p99", margin_ms: float = 0.0) -> None:
        if add <= 0 or not 0 < backoff < 1 or start < 1:
            raise ValueError("AIMD needs add > 0, 0 < backoff < 1 and start >= 1")
        self.model = str(model)
        self.add, self.backoff, self.cap = float(add), float(backoff), float(start)
        self.stat = _check_stat(stat)
        self.margin_ms = float(margin_ms)
        self._max_batch: int | None = None

    def describe(self) -> str:
        return f"fixed:{self.model}"

    def decide(self, queue: QueueView, now: float, profile: Profile) -> Decision:
        self._max_batch = profile.max_batch
        return _single_model_decision(queue, now, profile, profile.resolve(self.model),
                                      self.stat, self.margin_ms, int(self.cap))

    def observe(self, decision: Decision, start: float, finish: float) -> None:
        if not decision.requests:
            return
        if finish > min(r.deadline for r in decision.requests):
            self.cap = max(1.0, self.cap * self.backoff)
        else:
            self.cap = min(float(self._max_batch or math.inf), self.cap + self.add)


# --------------------------------------------------------------------- maxacc
@register_policy("maxacc")
class MaxAcc(Policy):
    """Always the most accurate deployed SubNet, with the largest batch that fits the slack."""

    def __init__(self, stat: str = "p99", margin_ms: float = 0.0) -> None:
        self.stat = _check_stat(stat)
        self.margin_ms = float(margin_ms)

    def decide(self, queue: QueueView, now: float, profile: Profile) -> Decision:
        return _single_model_decision(queue, now, profile, profile.most_accurate(), self.stat,
                                      self.margin_ms, None)


# --------------------------------------------------------------------- INFaaS
@register_policy("infaas")
class Infaas(Policy):
    """INFaaS-style switching between separately stored models.

    Every `hold_s` seconds it re-picks a model for the current load: the arrival
    rate over the last `window_s`, times `headroom`, must not exceed the model's
    throughput when a batch takes at most half the SLO. Among those it takes the
    most accurate, or with `acc_target` the cheapest whose accuracy reaches it;
    if none keeps up, the one with the highest throughput. A model not held is
    loaded first (`Decision.load`), evicting the least recently used beyond
    `max_held`; the mechanism pays the real load time.
    """

    runtime_kind = "separate"

    def __init__(self, max_held: int = 2, acc_target: float | None = None,
                 window_s: float = 1.0, headroom: float = 1.2, hold_s: float = 1.0,
                 stat: str = "p99", margin_ms: float = 0.0) -> None:
        if max_held < 1:
            raise ValueError(f"max_held must be >= 1, got {max_held}")
        self.max_held = int(max_held)
        self.acc_target = acc_target
        self.window_s, self.headroom, self.hold_s = float(window_s), float(headroom), float(hold_s)
        self.stat = _check_stat(stat)
        self.margin_ms = float(margin_ms)
        self.held: OrderedDict[str, None] = OrderedDict()
        self.current: str | None = None
        self._chosen_at = -math.inf

    def capacity(self, profile: Profile, name: str, slo_ms: float) -> float:
        """Requests per second `name` sustains when each batch takes at most half the SLO."""
        best = 0.0
        for b in profile.batch_sizes:
            ms = profile.latency_ms(name, b, self.stat)
            if ms <= slo_ms / 2:
                best = max(best, b * 1000.0 / ms)
        return best

    def select(self, profile: Profile, rate: float, slo_ms: float) -> str:
        need = rate * self.headroom
        cap = {s.name: self.capacity(profile, s.name, slo_ms) for s in profile.subnets}
        if self.acc_target is None:
            order = sorted(profile.subnets, key=lambda s: (-s.acc, s.macs))
        else:
            order = sorted((s for s in profile.subnets if s.acc >= self.acc_target),
                           key=lambda s: s.macs)
        for s in order:
            if cap[s.name] >= need and cap[s.name] > 0:
                return s.name
        return max(profile.subnets, key=lambda s: (cap[s.name], -s.macs)).name

    def _hold(self, name: str) -> None:
        self.held[name] = None
        self.held.move_to_end(name)
        while len(self.held) > self.max_held:
            self.held.popitem(last=False)

    def decide(self, queue: QueueView, now: float, profile: Profile) -> Decision:
        if not len(queue):
            return Decision(None)
        if self.current is None or now - self._chosen_at >= self.hold_s:
            rate = queue.arrival_rate(now, self.window_s)
            self.current = self.select(profile, rate, queue[0].slo_s * 1000.0)
            self._chosen_at = now
        name = self.current
        if name not in self.held:
            self._hold(name)
            return Decision(None, load=name, planned_ms=profile.load_ms.get(name, 0.0))
        self._hold(name)  # touch: most recently used
        return _single_model_decision(queue, now, profile, name, self.stat, self.margin_ms, None)
