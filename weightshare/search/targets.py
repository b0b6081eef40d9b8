"""Deployment targets: a name and caps on latency, MACs and parameters; YAML lists of them.

A targets file is a YAML list (or a mapping with a `targets:` list) of entries like

    - {name: phone, max_latency_ms: 5}
    - {name: mcu, max_macs: 20e6, max_params: 0.5e6}

Every target of one file is searched with the same predictor and latency table:
N targets cost N searches, not N trainings. A target no SubNet can meet (below
the smallest SubNet's cost) is refused before searching, naming that cost.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import SearchError

__all__ = ["Target", "load_targets", "check_feasible"]

_FIELDS = {"max_latency_ms": "latency_ms", "max_macs": "macs", "max_params": "params"}


@dataclass(frozen=True)
class Target:
    """One device or budget: at least one of the caps is set."""

    name: str
    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_params: float | None = None

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise SearchError("a target needs a non-empty name")
        caps = [getattr(self, f) for f in _FIELDS]
        if all(c is None for c in caps):
            raise SearchError(f"target {self.name!r} sets no limit; give at least one of "
                             f"{', '.join(_FIELDS)}")
        for f in _FIELDS:
            v = getattr(self, f)
            if v is not None:
                v = float(v)
                if not v > 0:
                    raise SearchError(f"target {self.name!r}: {f} must be > 0, got {v}")
                object.__setattr__(self, f, v)

    @property
    def constraints(self) -> dict[str, float]:
        """{cost key: limit} for the search (`latency_ms`, `macs`, `params`)."""
        return {key: getattr(self, f) for f, key in _FIELDS.items() if getattr(self, f) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{f: getattr(self, f) for f in _FIELDS
                                      if getattr(self, f) is not None}}

    @classmethod
    def from_dict(cls, data: Any, where: str = "target") -> Target:
        if not isinstance(data, Mapping):
            raise SearchError(f"{where}: a target is a mapping like "
                             "{name: phone, max_latency_ms: 5}, got " + repr(data))
        unknown = set(data) - {"name", *_FIELDS}
        if unknown:
            raise SearchError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: name, "
                             f"{', '.join(_FIELDS)}")
        if "name" not in data:
            raise SearchError(f"{where}: a target needs a name")
        try:
            return cls(str(data["name"]), *(None if data.get(f) is None else float(data[f])
                                            for f in _FIELDS))
        except (TypeError, ValueError) as err:
            raise SearchError(f"{where}: {err}") from None


def load_targets(path: str | os.PathLike) -> list[Target]:
    """Targets from a YAML file (names must be unique)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SearchError(f"{path} is not valid YAML: {err}") from None
    if isinstance(data, Mapping) and "targets" in data:
        data = data["targets"]
    if not isinstance(data, list) or not data:
        raise SearchError(f"{path}: expected a non-empty list of targets")
    targets = [Target.from_dict(d, f"{path}: target {i + 1}") for i, d in enumerate(data)]
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SearchError(f"{path}: target names must be unique; repeated: {dupes}")
    return targets


_UNITS = {"latency_ms": ("latency", " ms"), "macs": ("MACs", ""), "params": ("params", "")}


def check_feasible(target: Target, smallest_costs: Mapping[str, float]) -> None:
    """Raise SearchError if a cap is below the smallest SubNet's cost, naming that cost."""
    for key, limit in target.constraints.items():
        if key not in smallest_costs:
            raise SearchError(f"target {target.name!r} caps {key}, which needs a latency table "
                             "(--latency-table)")
        low = smallest_costs[key]
        if limit < low:
            what, unit = _UNITS[key]
            shown = f"{low:.3f}" if key == "latency_ms" else f"{low:,.0f}"
            raise SearchError(
                f"target {target.name!r} is infeasible: max {what} {limit:g}{unit} is below the "
                f"smallest SubNet's {what}, {shown}{unit} (the smallest achievable value)"
            )
