"""Parse the "name:arg,key=value,..." strings that name policies and traces on the CLI."""

from __future__ import annotations

from typing import Any

from ..presets import parse_value as _yaml_value

__all__ = ["parse_value", "parse_spec"]


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
