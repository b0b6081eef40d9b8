"""The request queue the batcher draws from: deadline-ordered, bounded, with an arrival meter.

Mechanism only: it keeps requests earliest-deadline-first (EDF) and answers
what policies ask of a `QueueView` (length, images waiting, the i-th request,
recent arrival rate). Which requests form a batch is the policy's call. The
queue is not locked; the worker that shares it with the event loop holds its
own lock around every use. No torch.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator

from .core import Request

__all__ = ["QueueFull", "RequestQueue"]


class QueueFull(RuntimeError):
    """Admission control refused a request: the queue holds `capacity` requests already."""


class RequestQueue:
    """Requests sorted by (deadline, id), at most `capacity` of them.

    Insertion is a binary search plus a list insert (a memmove: fast for the
    thousands of requests a bounded queue holds); the head is index 0, so a
    policy reads the earliest deadlines in O(1).
    """

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._keys: list[tuple[float, int]] = []
        self._reqs: list[Request] = []
        self._items = 0
        self._arrivals: deque[float] = deque()
        self._max_window_s = 60.0

    # ---------------------------------------------------------------- QueueView
    def __len__(self) -> int:
        return len(self._reqs)

    def __getitem__(self, index: int) -> Request:
        return self._reqs[index]

    def __iter__(self) -> Iterator[Request]:
        return iter(self._reqs)

    @property
    def items(self) -> int:
        return self._items

    def arrival_rate(self, now: float, window_s: float = 1.0) -> float:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        start = now - window_s
        # Arrival times are appended in increasing order, so count from the right end.
        n = len(self._arrivals) - bisect.bisect_right(self._arrivals, start)
        return n / window_s

    # ---------------------------------------------------------------- mechanism
    @property
    def full(self) -> bool:
        return self.capacity is not None and len(self._reqs) >= self.capacity

    def push(self, req: Request) -> None:
        """Queue `req`, or raise QueueFull (the server answers 429)."""
        if self.full:
            raise QueueFull(f"queue full ({self.capacity} requests waiting)")
        key = (req.deadline, req.id)
        i = bisect.bisect_right(self._keys, key)
        self._keys.insert(i, key)
        self._reqs.insert(i, req)
        self._items += req.size
        self._arrivals.append(req.arrival)
        while self._arrivals and self._arrivals[0] < req.arrival - self._max_window_s:
            self._arrivals.popleft()

    def remove(self, reqs: Iterable[Request]) -> None:
        """Take `reqs` (a decision's batch and drops) out of the queue."""
        gone = {id(r) for r in reqs}
        if not gone:
            return
        # Decisions take from the head, so the common case is one slice.
        k = 0
        while k < len(self._reqs) and id(self._reqs[k]) in gone:
            k += 1
        removed = self._reqs[:k]
        del self._reqs[:k], self._keys[:k]
        if len(removed) < len(gone):
            keep = [i for i, r in enumerate(self._reqs) if id(r) not in gone]
            removed += [r for r in self._reqs if id(r) in gone]
            self._reqs = [self._reqs[i] for i in keep]
            self._keys = [self._keys[i] for i in keep]
        if len(removed) != len(gone):
            raise ValueError("a decision named requests that are not in the queue")
        self._items -= sum(r.size for r in removed)

    def clear(self) -> list[Request]:
        """Empty the queue and return what was in it (to answer each one at shutdown)."""
        out = self._reqs
        self._reqs, self._keys, self._items = [], [], 0
        return out
