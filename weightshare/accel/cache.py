"""On-chip weight cache policies behind one interface, and their registry.

A policy sees queries as sets of cell ids (see `cells.py`) streamed in layer
order. `cached()` is what is on chip when a query starts; `observe(needed)` is
called after it ran, with every cell it streamed through (so a policy may keep
any of them without extra off-chip traffic: cells are only ever installed on
their way through, never prefetched).

- ``none``: nothing stays on chip; every query streams its whole footprint.
- ``lru``: keep the most recently used cells up to the capacity. Weights stream
  cyclically, so when a footprint is larger than the buffer LRU evicts each
  cell just before it is needed again: the classic weakness SUSHI targets.
- ``subgraph-stationary``: every `every` queries, pick the cells shared by the
  SubNets served in the last `window` queries, by how many of them read each
  cell (reuse per byte), greedily up to the capacity; keep that SubGraph fixed
  until the next update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from ..registry import Registry

__all__ = ["CachePolicy", "register_cache", "make_cache", "list_caches",
           "NoCache", "LRUCache", "SubGraphStationary"]


class CachePolicy(ABC):
    """Holds cells up to `capacity` bytes; `sizes[i]` is cell i's size in bytes."""

    name = ""

    def __init__(self, capacity: float, sizes: Sequence[float]) -> None:
        if capacity < 0:
            raise ValueError("cache capacity must be >= 0")
        self.capacity = float(capacity)
        self.sizes = list(sizes)

    @abstractmethod
    def cached(self) -> frozenset[int]: ...

    @abstractmethod
    def observe(self, needed: Sequence[int]) -> None: ...

    def used(self) -> float:
        return sum(self.sizes[i] for i in self.cached())


_CACHES: Registry[type[CachePolicy]] = Registry("cache policy", sort=False)


def register_cache(name: str) -> Callable[[type[CachePolicy]], type[CachePolicy]]:
    return _CACHES.register(name, set_name=True)


def list_caches() -> list[str]:
    return _CACHES.names()


def make_cache(name: str, capacity: float, sizes: Sequence[float], **options: Any) -> CachePolicy:
    return _CACHES.get(name)(capacity, sizes, **options)


@register_cache("none")
class NoCache(CachePolicy):
    def cached(self) -> frozenset[int]:
        return frozenset()

    def observe(self, needed: Sequence[int]) -> None:
        pass


@register_cache("lru")
class LRUCache(CachePolicy):
    def __init__(self, capacity: float, sizes: Sequence[float]) -> None:
        super().__init__(capacity, sizes)
        self._order: OrderedDict[int, None] = OrderedDict()
        self._used = 0.0

    def cached(self) -> frozenset[int]:
        return frozenset(self._order)

    def observe(self, needed: Sequence[int]) -> None:
        for cid in needed:  # stream order: the last cells used are the most recent
            size = self.sizes[cid]
            if cid in self._order:
                self._order.move_to_end(cid)
                continue
            if size > self.capacity:
                continue  # never fits: pass it through
            while self._used + size > self.capacity:
                old, _ = self._order.popitem(last=False)
                self._used -= self.sizes[old]
            self._order[cid] = None
            self._used += size


@register_cache("subgraph-stationary")
class SubGraphStationary(CachePolicy):
    def __init__(self, capacity: float, sizes: Sequence[float], window: int = 32,
                 every: int = 8) -> None:
        super().__init__(capacity, sizes)
        if window < 1 or every < 1:
            raise ValueError("window and every must be >= 1")
        self.window, self.every = window, every
        self._recent: deque[tuple[int, ...]] = deque(maxlen=window)
        self._target: frozenset[int] = frozenset()
        self._held: set[int] = set()
        self._seen = 0

    def cached(self) -> frozenset[int]:
        return frozenset(self._held)

    def target(self) -> frozenset[int]:
        return self._target

    def observe(self, needed: Sequence[int]) -> None:
        self._recent.append(tuple(needed))
        self._seen += 1
        if self._seen == 1 or self._seen % self.every == 0:
            self._target = self.choose(list(self._recent))
            self._held &= self._target
        # Cells of the SubGraph are installed as they stream through.
        self._held.update(c for c in needed if c in self._target)

    def choose(self, recent: list[tuple[int, ...]]) -> frozenset[int]:
        """Cells by reuse count (ties: earlier layers first), greedily under the capacity."""
        count: dict[int, int] = {}
        for ids in recent:
            for c in ids:
                count[c] = count.get(c, 0) + 1
        chosen: set[int] = set()
        used = 0.0
        for c in sorted(count, key=lambda c: (-count[c], c)):
            if used + self.sizes[c] <= self.capacity:
                chosen.add(c)
                used += self.sizes[c]
        return frozenset(chosen)
