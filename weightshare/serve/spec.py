"""Parse the "name:arg,key=value,..." strings that name policies and traces on the CLI,
and build the registered thing a spec names (`make_from_spec`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..presets import parse_value as _yaml_value
from ..registry import Registry

__all__ = ["make_from_spec", "parse_value", "parse_spec"]

T = TypeVar("T")


def parse_value(text: str) -> Any:
    """A spec value: YAML as every `--set` ("3" -> 3, "0.5" -> 0.5, "true"), plus two spellings
    a comma-separated spec needs: "50/200/50" -> [50, 200, 50] (commas split the spec) and
    "none" -> None; a path or other text stays a string."""
    if "/" in text:  # a list of numbers; a path (non-numeric parts) stays a string
        parts = [parse_value(t) for t in text.split("/")]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in parts):
            return parts
        return text
    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    value = _yaml_value(text)
    # only numbers: YAML 1.1's yes/no/on/off stay the words a user typed
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text


def parse_spec(spec: str, kind: str, positional: str | None = None) -> tuple[str, dict[str, Any]]:
    """Split "name:arg,key=value" into the name and keyword arguments.

    A bare `arg` (no "=") fills the `positional` keyword once, if the kind has one.
    """
    name, _, rest = spec.strip().partition(":")
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if eq:
            kwargs[key.strip()] = parse_value(val.strip())
        elif positional and positional not in kwargs:
            kwargs[positional] = part
        else:
            raise ValueError(f"{kind} spec {spec!r}: cannot read {part!r} (use key=value)")
    return name, kwargs


def make_from_spec(spec: str, registry: Registry[Callable[..., T]],
                   options: Mapping[str, Any]) -> T:
    """Build what `spec` names in `registry`: look the name up, read the spec's arguments
    (a bare one fills the keyword the factory names in its `positional` attribute, if it
    has one, as a policy class may), add `options` (they win), and call the factory.

    One place for `make_policy` and `make_trace`, so both say the same thing when an option
    does not fit: a ValueError naming the kind, the name and the options given (the
    factory's TypeError), never a bare TypeError.
    """
    name = spec.strip().partition(":")[0]
    factory = registry.get(name)
    _, kwargs = parse_spec(spec, registry.kind, getattr(factory, "positional", None))
    kwargs.update(options)
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"{registry.kind} {name!r}: bad options {sorted(kwargs)}: {err}"
                         ) from None
