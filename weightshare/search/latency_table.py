"""Per-operator latency lookup tables: measure once on the target, predict any SubNet by a sum.

A SubNet's extracted network is a chain of layers: a few fixed ones before the
elastic blocks (the stem...), one layer per active block, a few fixed ones after
(a final conv) and the head. Each layer's cost depends only on its own choices
and on where it sits, so a table with one entry per (layer position, choices,
input shape) covers all ~10^19 SubNets with a few hundred timings:

    block key   u{unit}.b{index}|e{expand}|k{kernel}[|w{in width}>{out width}]|r{resolution}
    fixed keys  pre{j}|r{res}, post{j}[|w{last width}]|r{res}, head[|w{last width}]|r{res}

The resolution stands for the input shape (strides fix a position's spatial
size), and the widths appear in ResNet-style spaces, where a block's input and
output channels follow the `widths` choices.

How entries are timed (format version 2). Version 1 timed every layer alone,
over and over on one zero tensor: its input and weights stayed hot in cache and
it never paid for reading the previous layer's output, so the summed table
underestimated real end-to-end latency by ~30 % on a small CPU net. Version 2
times each layer *in its context*: a few covering SubNets (which together hold
every key) are run whole, and each layer's share of the forward is timed with
the previous layer's real output as its input, so caches are as they are when
the SubNet runs for real. Rounds are interleaved across the covering SubNets and
the lowest median per entry is kept (other processes on a shared machine only
ever add time). `overhead_us` is the end-to-end cost of running an empty network
(the per-forward fixed cost), so the raw prediction is

    overhead_us + sum(entry of each of its layers)            (microseconds)

Calibration. What is still systematic (the timer's own cost, allocator effects)
is removed by an affine fit ``scale * raw + offset_us`` to the measured
end-to-end latency of a few SubNets spread over the latency range (`calibrate`,
stored under ``"calibration"`` with the SubNets used). `check_latency_table`
never scores the table on those SubNets, and reports the error with and without
the calibration.

The table stores the SuperNet (name, config, space) it was made for and refuses
any other, and the machine it was timed on (`weightshare.timing.machine_identity`;
loading it elsewhere warns). Timing uses `weightshare.timing`'s loop. Version 1 files still load (no calibration; `profile-check` says they
should be rebuilt).

This module is the table itself (keys, the file, predictions); timing, building,
calibrating and checking one is `weightshare.search.latency_build`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import SuperNet
from ..space import SearchSpace, SubnetConfig
from ..timing import same_machine
from .common import (
    SearchError,
    atomic_write_text,
    check_identity,
    read_json,
)

__all__ = [
    "FORMAT",
    "LatencyTable",
    "Layout",
    "op_keys",
    "covering_subnets",
    "load_latency_table",
]

FORMAT = "weightshare-latency-table"
VERSION = 2  # 2: entries timed in context, optional calibration


# ---------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layout:
    """How an extracted SuperNet's `features` are laid out around its elastic blocks.

    prefix: fixed layers before the first elastic block; suffix: fixed layers after
    the last one (the head, `StaticNet.head`, is always one more op).
    """

    prefix: int
    suffix: int


def _layout(net: SuperNet) -> Layout:
    return Layout(prefix=net.fixed_prefix_layers, suffix=net.fixed_suffix_layers)


def op_keys(space: SearchSpace, layout: Layout, subnet: SubnetConfig) -> list[str]:
    """The table keys of every layer of `subnet`'s extracted network, in order (head last)."""
    r = f"r{space.resolution_of(subnet)}"
    ops = [f"pre{j}|{r}" for j in range(layout.prefix)]
    w = subnet.widths
    for unit, i, expand, kernel in subnet.unit_blocks():
        key = f"u{unit}.b{i}|e{expand}|k{kernel}"
        if w:
            # Block 0 of a unit reads the previous unit's width (the stem's, fixed, for unit 0).
            w_in = w[unit] if i > 0 else (w[unit - 1] if unit > 0 else "-")
            key += f"|w{w_in}>{w[unit]}"
        ops.append(f"{key}|{r}")
    last = f"|w{w[-1]}" if w else ""
    ops += [f"post{j}{last}|{r}" for j in range(layout.suffix)]
    ops.append(f"head{last}|{r}")
    return ops


def covering_subnets(space: SearchSpace) -> list[SubnetConfig]:
    """A few max-depth SubNets that together contain every table key of the space.

    Uniform (expand, kernel) per SubNet covers every block position at each choice.
    For widths, unit u gets choice (a + u*b) mod n in SubNet (a, b): for every u the
    map (a, b) -> (choice of u-1, choice of u) is a bijection, so n^2 width patterns
    meet every (input width, output width) pair of every block.
    """
    d = space.max_depth
    n_units = space.num_units
    nw = len(space.width_choices)
    width_patterns: list[tuple[float, ...]] = (
        [tuple(space.width_choices[(a + u * b) % nw] for u in range(n_units))
         for b in range(nw) for a in range(nw)]
        if nw else [()]
    )
    out = []
    for res in space.resolution_choices or (None,):
        for e in space.expand_choices:
            for k in space.kernel_choices:
                for widths in width_patterns:
                    out.append(SubnetConfig((d,) * n_units, (e,) * (d * n_units),
                                            (k,) * (d * n_units), widths, res))
    return out


def _layers(net: nn.Module) -> list[nn.Module]:
    """An extracted StaticNet as its chain of ops: each feature layer, then the head."""
    return [*net.features, net.head]


def _input_shapes(layers: Sequence[nn.Module], x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    with torch.no_grad():
        for layer in layers:
            shapes.append(tuple(x.shape))
            x = layer(x)
    return shapes


# ------------------------------------------------------------------------------------ table
@dataclass
class LatencyTable:
    """Microseconds per op key, plus how and for which SuperNet they were measured.

    calibration: None, or {"scale", "offset_us", "n", "subnets", "fit_mape"}: the
    affine map from the raw sum to measured end-to-end latency (module docstring).
    """

    supernet: dict[str, Any]
    device: str
    batch: int
    threads: int
    overhead_us: float
    entries: dict[str, float]
    shapes: dict[str, list[int]] = field(default_factory=dict)
    layout: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    method: str = "in-context"  # "isolated" for version-1 files
    calibration: dict[str, Any] | None = None
    version: int = VERSION

    def _keys(self, space: SearchSpace, subnet: SubnetConfig) -> list[str]:
        return op_keys(space, Layout(**self.layout), subnet)

    def raw_us(self, space: SearchSpace, subnet: SubnetConfig) -> float:
        """The uncalibrated sum: `overhead_us` plus the entry of every layer of `subnet`."""
        total = self.overhead_us
        for key in self._keys(space, subnet):
            try:
                total += self.entries[key]
            except KeyError:
                raise SearchError(
                    f"latency table has no entry {key!r} (SubNet {subnet.to_json()}); it was made "
                    "for another space or is incomplete: rebuild it with `weightshare latency-table build`"
                ) from None
        return total

    def predict_us(self, space: SearchSpace, subnet: SubnetConfig, *,
                   calibrated: bool = True) -> float:
        """Predicted end-to-end latency of `subnet` in microseconds (calibrated when it can be)."""
        raw = self.raw_us(space, subnet)
        if calibrated and self.calibration is not None:
            return self.calibration["scale"] * raw + self.calibration["offset_us"]
        return raw

    def predict_ms(self, space: SearchSpace, subnet: SubnetConfig, *,
                   calibrated: bool = True) -> float:
        return self.predict_us(space, subnet, calibrated=calibrated) / 1e3

    @property
    def calibration_subnets(self) -> set[SubnetConfig]:
        if not self.calibration:
            return set()
        return {SubnetConfig.from_dict(d) for d in self.calibration.get("subnets", [])}

    def measured_here(self) -> bool | None:
        """Whether this table was measured on this machine (`weightshare.timing`); None for
        a table from before machines were recorded."""
        recorded = self.meta.get("machine")
        return None if recorded is None else same_machine(recorded)

    def check(self, net: SuperNet, path: str | os.PathLike = "latency table") -> LatencyTable:
        """Raise SearchError unless this table was made for `net` (same name, config, space)."""
        check_identity(self.supernet, net, path, "latency table")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": self.version, "supernet": self.supernet,
            "device": self.device, "batch": self.batch, "threads": self.threads,
            "unit": "us", "method": self.method, "overhead_us": self.overhead_us,
            "calibration": self.calibration, "layout": self.layout,
            "entries": self.entries, "shapes": self.shapes, "meta": self.meta,
        }

    def save(self, path: str | os.PathLike) -> Path:
        import json

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = "latency table") -> LatencyTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SearchError(f"{path} is not a weightshare latency table (no 'format': {FORMAT!r})")
        version = int(data.get("version", 0))
        if version > VERSION:
            raise SearchError(f"{path}: latency table version {data['version']} is newer than "
                              f"this weightshare reads ({VERSION}); upgrade weightshare")
        if version < 1:
            raise SearchError(f"{path}: latency table has no valid 'version'")
        try:
            entries = {str(k): float(v) for k, v in data["entries"].items()}
            cal = data.get("calibration")
            if cal is not None:
                cal = {**cal, "scale": float(cal["scale"]), "offset_us": float(cal["offset_us"])}
            return cls(
                supernet=data["supernet"], device=str(data["device"]), batch=int(data["batch"]),
                threads=int(data["threads"]), overhead_us=float(data["overhead_us"]),
                entries=entries, shapes=dict(data.get("shapes", {})),
                layout={k: int(v) for k, v in data["layout"].items()},
                meta=dict(data.get("meta", {})),
                # Version 1 only ever timed layers in isolation and had no calibration.
                method=str(data.get("method", "isolated" if version == 1 else "in-context")),
                calibration=cal, version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SearchError(f"{path}: malformed latency table ({type(err).__name__}: {err})"
                              ) from None


def load_latency_table(path: str | os.PathLike, net: SuperNet | None = None) -> LatencyTable:
    """Read a table; with `net`, also check it was made for that SuperNet."""
    table = LatencyTable.from_dict(read_json(path, "latency table"), path)
    if net is not None:
        table.check(net, path)
    if table.measured_here() is False:
        # A warning, not an error: searching with another machine's table is legitimate
        # (a table measured on the target device), but predictions are that machine's.
        warnings.warn(f"{path}: latency table measured on another machine "
                      f"({table.meta['machine'].get('cpu')}); its latencies are that machine's",
                      stacklevel=2)
    return table
