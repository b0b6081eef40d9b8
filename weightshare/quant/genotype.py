"""The discrete result of a search: cell structure plus one bit width pair per quantized layer.

A `Genotype` is plain data (no torch): the network's shape (`NetSpec`), two
incoming ``(op, input)`` edges per intermediate node of the normal and of the
reduction cell, and ``bits``, mapping every `QConv` of the derived network
(by its module path, e.g. ``cells.2.edges.1_0.0.qconv``) to
``[weight_bits, activation_bits]``. It is saved as JSON::

    {"format": "weightshare-quant-genotype", "version": 1,
     "spec": {...}, "normal": [["sep_conv_3x3", 0], ...], "reduce": [...],
     "bits": {"stem.qconv": [8, 8], ...}, "meta": {...}}

Input indices follow DARTS: 0 and 1 are the cell's two inputs, 2 + i is
intermediate node i. Loading checks everything and says what is wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import WeightshareError
from ..io import atomic_write_text, read_json
from ..presets import check_options
from .ops import PRIMITIVES
from .quantizers import FLOAT_BITS, check_bits

__all__ = ["FORMAT", "Genotype", "GenotypeError", "NetSpec", "load_genotype", "save_genotype"]

FORMAT = "weightshare-quant-genotype"
VERSION = 1


class GenotypeError(WeightshareError, ValueError):
    """A genotype file is corrupt, foreign or inconsistent (a user error for the CLI)."""


@dataclass(frozen=True)
class NetSpec:
    """The shape of a DARTS-style network: stem, `layers` cells of `steps` nodes, classifier."""

    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 28
    C: int = 16                 # channels of the first cell; doubled at each reduction cell
    layers: int = 5             # cells; reduction cells at layers//3 and 2*layers//3
    steps: int = 4              # intermediate nodes per cell (all concatenated at the output)
    stem_multiplier: int = 3

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "C", "layers", "steps", "stem_multiplier"):
            if int(getattr(self, name)) < 1:
                raise GenotypeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 3:
            # fewer cells would make layers//3 == 0 a reduction and so no normal cell first
            raise GenotypeError(f"layers must be >= 3 (two reduction cells), got {self.layers}")
        if self.image_size < 4 or self.image_size % 4:
            raise GenotypeError(f"image_size must be a multiple of 4 (two reductions), got "
                             f"{self.image_size}")

    @property
    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    @property
    def stem_channels(self) -> int:
        return self.stem_multiplier * self.C

    def cell_channels(self) -> list[tuple[int, int, int, bool, bool]]:
        """Per cell (C_prev_prev, C_prev, C, reduction, reduction_prev), as DARTS lays them
        out: channels double at each reduction cell, a cell outputs `steps` x C. The
        search and the derived network are built from this one layout; the classifier
        reads ``steps * C`` of the last cell."""
        out = []
        c_pp = c_p = self.stem_channels
        c, reduction_prev = self.C, False
        for i in range(self.layers):
            reduction = i in self.reduction_layers
            if reduction:
                c *= 2
            out.append((c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, self.steps * c
        return out

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetSpec:
        check_options(cls, data, "network", GenotypeError)
        return cls(**{k: int(v) for k, v in data.items()})


Edge = tuple[str, int]


def _check_cell(edges: Any, steps: int, which: str) -> tuple[Edge, ...]:
    if not isinstance(edges, list | tuple) or len(edges) != 2 * steps:
        raise GenotypeError(f"{which} cell must list 2 edges per node ({2 * steps}), got "
                            f"{edges!r:.200}")
    out = []
    for n, edge in enumerate(edges):
        node = n // 2
        if not (isinstance(edge, list | tuple) and len(edge) == 2):
            raise GenotypeError(f"{which} edge {n} must be [op, input], got {edge!r}")
        op, inp = edge
        if op not in PRIMITIVES or op == "none":
            raise GenotypeError(f"{which} edge {n}: unknown operation {op!r}; choose from "
                                f"{', '.join(p for p in PRIMITIVES if p != 'none')}")
        if isinstance(inp, bool) or not isinstance(inp, int) or not 0 <= inp < 2 + node:
            raise GenotypeError(f"{which} edge {n} (node {node}): input {inp!r} must be an int "
                                f"in [0, {2 + node})")
        out.append((str(op), int(inp)))
    for node in range(steps):
        a, b = out[2 * node][1], out[2 * node + 1][1]
        if a == b:
            raise GenotypeError(f"{which} node {node} takes input {a} twice")
    return tuple(out)


@dataclass(frozen=True)
class Genotype:
    spec: NetSpec
    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]
    bits: dict[str, tuple[int, int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _check_cell(self.normal, self.spec.steps, "normal"))
        object.__setattr__(self, "reduce", _check_cell(self.reduce, self.spec.steps, "reduce"))
        bits = {}
        for name, pair in self.bits.items():
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise GenotypeError(f"bits[{name!r}] must be [weight_bits, act_bits], got {pair!r}")
            try:
                bits[str(name)] = (check_bits(pair[0], "weight bit width"),
                                   check_bits(pair[1], "activation bit width"))
            except ValueError as err:
                raise GenotypeError(f"bits[{name!r}]: {err}") from None
        object.__setattr__(self, "bits", bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "spec": self.spec.to_dict(),
            "normal": [list(e) for e in self.normal],
            "reduce": [list(e) for e in self.reduce],
            "bits": {k: list(v) for k, v in sorted(self.bits.items())},
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GenotypeError(f"not a genotype (no 'format': {FORMAT!r} entry); make one with "
                                "`weightshare quant search`")
        if int(data.get("version", 0)) > VERSION:
            raise GenotypeError(f"genotype version {data['version']} is newer than this "
                                f"weightshare understands ({VERSION})")
        for key in ("spec", "normal", "reduce", "bits"):
            if key not in data:
                raise GenotypeError(f"genotype has no {key!r} entry")
        try:
            spec = NetSpec.from_dict(data["spec"])
        except (TypeError, ValueError) as err:
            raise GenotypeError(f"bad 'spec': {err}") from None
        if not isinstance(data["bits"], dict):
            raise GenotypeError("'bits' must map layer names to [weight_bits, act_bits]")
        return cls(spec, tuple(data["normal"]), tuple(data["reduce"]), dict(data["bits"]),
                   dict(data.get("meta") or {}))

    def with_bits(self, bits: dict[str, tuple[int, int]]) -> Genotype:
        return replace(self, bits=dict(bits))

    def uniform(self, bits: int, fixed_bits: int = FLOAT_BITS) -> Genotype:
        """The same architecture with every cell layer at `bits`/`bits`; stem and classifier
        at `fixed_bits` (float by default, as the searched networks keep them), or 32
        everywhere for float."""
        check_bits(bits)
        edge = fixed_bits if bits != FLOAT_BITS else FLOAT_BITS
        new = {k: ((edge, edge) if k.split(".")[0] in ("stem", "classifier") else (bits, bits))
               for k in self.bits}
        return replace(self, bits=new, meta={**self.meta, "uniform_bits": bits})

    def summary(self) -> str:
        from collections import Counter

        counts = Counter(f"{w}/{a}" for w, a in self.bits.values())
        normal = ", ".join(f"{op}<-{i}" for op, i in self.normal)
        reduce = ", ".join(f"{op}<-{i}" for op, i in self.reduce)
        mix = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        return f"normal [{normal}]\nreduce [{reduce}]\nbits (weights/acts: layers) {mix}"


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> Path:
    """Write `genotype` as JSON, atomically."""
    return atomic_write_text(path, json.dumps(genotype.to_dict(), indent=1) + "\n")


def load_genotype(path: str | os.PathLike) -> Genotype:
    """Read a genotype JSON; a missing file is FileNotFoundError, anything wrong GenotypeError."""
    data = read_json(path, "genotype", GenotypeError)
    try:
        return Genotype.from_dict(data)
    except GenotypeError as err:
        raise GenotypeError(f"{path}: {err}") from None
