"""The values every part of serving shares: a request, a policy's decision, the clock.

The server, the simulator and the unit tests all speak in these terms, so a
policy written against them runs unchanged under each. Times are seconds on an
injected `Clock` (wall time in the server, virtual time in the simulator, a
hand-moved clock in tests); latencies in profiles are milliseconds. No torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Clock",
    "Decision",
    "ManualClock",
    "MonotonicClock",
    "QueueView",
    "Request",
]


class Clock(Protocol):
    """Anything with `now()` in seconds; only differences between readings matter."""

    def now(self) -> float: ...


class MonotonicClock:
    """Wall time for the real server (`time.perf_counter`, never jumps backwards)."""

    def now(self) -> float:
        return time.perf_counter()


class ManualClock:
    """A clock that moves only when told: the simulator's and the tests'."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"a clock cannot go back from {self._t} to {t}")
        self._t = float(t)

    def advance(self, dt: float) -> None:
        self.set(self._t + dt)


# eq=False: requests are identities (the same image twice is two requests); hashing by id
# lets the queue remove a decision's requests in O(1) each.
@dataclass(eq=False)
class Request:
    """One inference request waiting to be served.

    id: increasing in arrival order (ties in deadline are broken by it, so order is stable).
    arrival, deadline: seconds on the serving clock; deadline = arrival + the request's SLO.
    size: images in the request (an Open Inference Protocol request may carry a batch).
    payload: the input tensor in the server; None in simulation.
    on_done: called once by the mechanism with the outcome (server only).
    """

    id: int
    arrival: float
    deadline: float
    size: int = 1
    payload: Any = None
    on_done: Callable[..., None] | None = field(default=None, repr=False)

    @property
    def slo_s(self) -> float:
        return self.deadline - self.arrival


class QueueView(Protocol):
    """What a policy may read of the queue: requests in earliest-deadline-first order."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Request: ...

    def __iter__(self) -> Iterator[Request]: ...

    @property
    def items(self) -> int:
        """Images waiting (the sum of the requests' sizes)."""
        ...

    def arrival_rate(self, now: float, window_s: float = 1.0) -> float:
        """Requests per second that arrived during the last `window_s` seconds."""
        ...


@dataclass(frozen=True)
class Decision:
    """What a policy wants done now.

    subnet: the deployed SubNet's name to run `requests` on (None when nothing runs).
    requests: served together as one batch, in EDF order.
    dropped: requests that can no longer meet their deadline; answered with an error.
    planned_ms: the latency the policy expected for the batch (for reports and metrics).
    load: a separately stored model to load before anything else runs (INFaaS-style
        switching); the mechanism pays its real cost. None for SubNetAct policies.
    """

    subnet: str | None
    requests: tuple[Request, ...] = ()
    dropped: tuple[Request, ...] = ()
    planned_ms: float = 0.0
    load: str | None = None

    @property
    def batch_size(self) -> int:
        return sum(r.size for r in self.requests)

    @property
    def idle(self) -> bool:
        """True when the policy chose to do nothing now (wait for more requests)."""
        return not self.requests and not self.dropped and self.load is None
