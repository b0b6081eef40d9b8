"""A name -> object registry with a decorator, shared by every pluggable kind.

SuperNets, training methods, samplers, datasets, policies, traces, executors,
cache policies and schedulers are looked up by name (DESIGN: registries, not
if-chains); this is the one implementation of "register once, list, look up
with a clear error". It reads like a read-only mapping (``name in reg``,
``reg[name]``, ``sorted(reg)``), so tests can be parametrized over it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import WeightshareError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(WeightshareError, ValueError):
    """A name no entry of a registry has; the message lists the registered ones."""


class Registry(Generic[T]):
    """Objects by name. `kind` names them in error messages ("policy", "trace", ...)."""

    def __init__(self, kind: str, *, sort: bool = True) -> None:
        self.kind = kind
        self.sort = sort
        self._items: dict[str, T] = {}

    def register(self, name: str, *, set_name: bool = False) -> Callable[[T], T]:
        """Decorator adding the object under `name`; `set_name` also stores it as `obj.name`."""

        def deco(obj: T) -> T:
            self.add(name, obj, set_name=set_name)
            return obj

        return deco

    def add(self, name: str, obj: T, *, set_name: bool = False) -> T:
        """Register `obj` under `name` (the decorator's plain form, for tables of entries)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if set_name:
            obj.name = name  # type: ignore[attr-defined]
        self._items[name] = obj
        return obj

    def names(self) -> list[str]:
        return sorted(self._items) if self.sort else list(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose from the registered: "
                f"{', '.join(self.names())}"
            )
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
