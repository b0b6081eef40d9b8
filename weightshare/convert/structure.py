"""The converted SuperNet's structure as plain data (JSON-safe), so a checkpoint rebuilds it.

A converted network is a chain of *segments* (single-input, single-output runs of
ops cut where only one value is live), grouped into *slots* (the elastic parts:
a residual block, or the layers an elastic width runs through), which the search
space sees as blocks of units. Channel *groups* are the widths that must stay
equal (a conv's output and every BN, activation and depthwise conv on it); an
elastic group shrinks by its slot's ratio, a fixed one (the residual stream, the
input, the logits) never does. Nothing here is a pickled class: checkpoints hold
this as dicts, lists, strings and numbers, and load with weights_only=True.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..space import SearchSpace
from .trace import ConvertError

__all__ = ["Structure", "STRUCTURE_VERSION"]

STRUCTURE_VERSION = 1


@dataclass
class Structure:
    in_channels: int
    resolution: int
    num_classes: int
    ops: list[dict[str, Any]]            # {kind, inputs, name, attrs, shape, group}
    groups: list[dict[str, Any]]         # {size, elastic}
    segments: list[list[int]]            # op indices, in order
    head_start: int                      # first segment of the classifier head
    slots: list[dict[str, Any]]          # {segments, groups, skippable}
    units: list[list[int]]               # slot index of each block of each unit
    width_slots: list[list[int]]         # per unit: slots scaled by the unit's width choice
    ratios: list[float]                  # width / expand choices (fractions of the original)
    depth_choices: list[int]
    kernel_choices: list[int]
    notes: list[str] = field(default_factory=list)  # what the converter decided, for people
    version: int = STRUCTURE_VERSION

    def space(self) -> SearchSpace:
        return SearchSpace(
            num_units=len(self.units),
            depth_choices=tuple(self.depth_choices),
            expand_choices=tuple(self.ratios),
            kernel_choices=tuple(self.kernel_choices),
            width_choices=tuple(self.ratios) if any(self.width_slots) else (),
            default_resolution=self.resolution,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Structure:
        if not isinstance(data, dict):
            raise ConvertError("a converted SuperNet's structure is a dict (from a checkpoint)")
        if int(data.get("version", 0)) > STRUCTURE_VERSION:
            raise ConvertError(f"converted structure version {data.get('version')} is newer than "
                               f"this weightshare understands ({STRUCTURE_VERSION})")
        names = set(cls.__dataclass_fields__)
        missing = names - set(data) - {"notes", "version"}
        if missing or set(data) - names:
            raise ConvertError(f"converted structure is malformed: missing {sorted(missing)}, "
                               f"unknown {sorted(set(data) - names)}")
        return cls(**data)
