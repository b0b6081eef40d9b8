"""A name -> object registry with a decorator, shared by every pluggable kind.

Policies, traces, cache policies and schedulers are looked up by name (DESIGN:
registries, not if-chains); this is the one implementation of "register once,
list, look up with a clear error".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects by name. `kind` names them in error messages ("policy", "trace", ...)."""

    def __init__(self, kind: str, *, sort: bool = True) -> None:
        self.kind = kind
        self.sort = sort
        self._items: dict[str, T] = {}

    def register(self, name: str, *, set_name: bool = False) -> Callable[[T], T]:
        """Decorator adding the object under `name`; `set_name` also stores it as `obj.name`."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if set_name:
                obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._items) if self.sort else list(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items
