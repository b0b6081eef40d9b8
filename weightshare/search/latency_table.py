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
output channels follow the `widths` choices. Entries are microseconds, measured
with `weightshare.metrics.measure_latency` (warm-up, then the median of repeated
timings) on layers cut from extracted SubNets, minus the cost of calling an
empty module; the table adds back one `overhead_us`, the end-to-end cost of
running an empty network of the same shape, so a predicted SubNet latency is

    overhead_us + sum(entry of each of its layers)

The table stores the SuperNet (name, config, space) it was made for and refuses
any other. `check_latency_table` times extracted random SubNets end to end and
reports the table's error (MAPE, Kendall tau).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..metrics import measure_latency
from ..models import SuperNet
from ..space import SearchSpace, SubnetConfig
from .common import (
    SearchError,
    atomic_write_text,
    check_identity,
    kendall_tau,
    mape,
    read_json,
    supernet_identity,
)

__all__ = [
    "FORMAT",
    "LatencyTable",
    "LatencyCheck",
    "Layout",
    "op_keys",
    "covering_subnets",
    "build_latency_table",
    "check_latency_table",
    "load_latency_table",
]

FORMAT = "weightshare-latency-table"
VERSION = 1


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
    """Microseconds per op key, plus how and for which SuperNet they were measured."""

    supernet: dict[str, Any]
    device: str
    batch: int
    threads: int
    overhead_us: float
    entries: dict[str, float]
    shapes: dict[str, list[int]] = field(default_factory=dict)
    layout: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def _keys(self, space: SearchSpace, subnet: SubnetConfig) -> list[str]:
        return op_keys(space, Layout(**self.layout), subnet)

    def predict_us(self, space: SearchSpace, subnet: SubnetConfig) -> float:
        """Predicted end-to-end latency of `subnet` in microseconds."""
        total = self.overhead_us
        for key in self._keys(space, subnet):
            try:
                total += self.entries[key]
            except KeyError:
                raise SearchError(
                    f"latency table has no entry {key!r} (SubNet {subnet.to_json()}); it was made "
                    "for another space or is incomplete: rebuild it with `weightshare profile`"
                ) from None
        return total

    def predict_ms(self, space: SearchSpace, subnet: SubnetConfig) -> float:
        return self.predict_us(space, subnet) / 1e3

    def check(self, net: SuperNet, path: str | os.PathLike = "latency table") -> LatencyTable:
        """Raise SearchError unless this table was made for `net` (same name, config, space)."""
        check_identity(self.supernet, net, path, "latency table")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "supernet": self.supernet,
            "device": self.device, "batch": self.batch, "threads": self.threads,
            "unit": "us", "overhead_us": self.overhead_us, "layout": self.layout,
            "entries": self.entries, "shapes": self.shapes, "meta": self.meta,
        }

    def save(self, path: str | os.PathLike) -> Path:
        import json

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = "latency table") -> LatencyTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SearchError(f"{path} is not a weightshare latency table (no 'format': {FORMAT!r})")
        if int(data.get("version", 0)) > VERSION:
            raise SearchError(f"{path}: latency table version {data['version']} is newer than "
                              f"this weightshare reads ({VERSION})")
        try:
            entries = {str(k): float(v) for k, v in data["entries"].items()}
            return cls(
                supernet=data["supernet"], device=str(data["device"]), batch=int(data["batch"]),
                threads=int(data["threads"]), overhead_us=float(data["overhead_us"]),
                entries=entries, shapes=dict(data.get("shapes", {})),
                layout={k: int(v) for k, v in data["layout"].items()},
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SearchError(f"{path}: malformed latency table ({type(err).__name__}: {err})"
                              ) from None


def load_latency_table(path: str | os.PathLike, net: SuperNet | None = None) -> LatencyTable:
    """Read a table; with `net`, also check it was made for that SuperNet."""
    table = LatencyTable.from_dict(read_json(path, "latency table"), path)
    if net is not None:
        table.check(net, path)
    return table


# ------------------------------------------------------------------------------ measuring
def _timer(device: torch.device, warmup: int, runs: int,
           rounds: int) -> Callable[[nn.Module, torch.Tensor], float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def time_us(module: nn.Module, x: torch.Tensor) -> float:
        # The lowest of a few medians: other processes only ever add time, so on a shared
        # machine the least disturbed round is the closest to the op's own cost.
        return 1e3 * min(
            measure_latency(lambda: module(x), warmup=warmup, runs=runs, sync=sync).median_ms
            for _ in range(rounds))

    return time_us


class _EmptyNet(nn.Module):
    """A StaticNet with nothing in it: what running any network costs before its first op."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.head = nn.Sequential(), nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_latency_table(net: SuperNet, *, device: str | torch.device = "cpu", batch: int = 1,
                        warmup: int = 10, runs: int = 50, rounds: int = 3,
                        progress: bool = False) -> LatencyTable:
    """Time every op of `net`'s space on `device` at batch `batch` (see the module docstring)."""
    if batch < 1 or runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"need batch, runs, rounds >= 1 and warmup >= 0; got {batch}, {runs}, "
                         f"{rounds}, {warmup}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device here")
    layout = _layout(net)
    space = net.space
    time_us = _timer(device, warmup, runs, rounds)
    t0 = time.perf_counter()
    # The cost of calling a module at all: removed from every entry, added back once.
    probe = torch.zeros(batch, *net.input_shape(), device=device)
    call_us = time_us(nn.Identity().to(device), probe)
    overhead_us = time_us(_EmptyNet().to(device), probe)
    entries: dict[str, float] = {}
    shapes: dict[str, list[int]] = {}
    subnets = covering_subnets(space)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(subnets), desc="profile", unit="subnet", leave=False)
    for cfg in subnets:
        keys = op_keys(space, layout, cfg)
        todo = [i for i, k in enumerate(keys) if k not in entries]
        if todo:
            static = net.extract(cfg).to(device)
            layers = _layers(static)
            if len(layers) != len(keys):
                raise SearchError(
                    f"{type(net).__name__}'s extracted network has {len(layers)} ops but its "
                    f"layout {layout} predicts {len(keys)}: fix its fixed_prefix_layers / fixed_suffix_layers"
                )
            x = torch.zeros(batch, *net.input_shape(cfg), device=device)
            in_shapes = _input_shapes(layers, x)
            for i in todo:
                xi = torch.zeros(in_shapes[i], device=device)
                entries[keys[i]] = max(0.0, time_us(layers[i], xi) - call_us)
                shapes[keys[i]] = list(in_shapes[i][1:])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return LatencyTable(
        supernet=supernet_identity(net), device=str(device), batch=batch,
        threads=torch.get_num_threads(), overhead_us=overhead_us, entries=entries, shapes=shapes,
        layout={"prefix": layout.prefix, "suffix": layout.suffix},
        meta={"torch": torch.__version__, "warmup": warmup, "runs": runs, "rounds": rounds,
              "call_overhead_us": call_us, "build_s": time.perf_counter() - t0,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )


# -------------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class LatencyCheck:
    """Table predictions against measured end-to-end latency of extracted SubNets."""

    n_subnets: int
    mape: float  # percent
    kendall_tau: float
    overhead_us: float
    rows: list[dict[str, Any]]  # {"subnet", "predicted_ms", "measured_ms"}

    def to_dict(self) -> dict[str, Any]:
        return {"n_subnets": self.n_subnets, "mape": self.mape, "kendall_tau": self.kendall_tau,
                "overhead_us": self.overhead_us, "rows": self.rows}


def check_latency_table(table: LatencyTable, net: SuperNet, *, n: int = 20, seed: int = 0,
                        subnets: Iterable[SubnetConfig] | None = None,
                        device: str | torch.device | None = None, warmup: int = 10,
                        runs: int = 50, rounds: int = 3, progress: bool = False) -> LatencyCheck:
    """Time `n` random extracted SubNets (plus smallest and largest) end to end; score the table."""
    table.check(net)
    device = torch.device(device if device is not None else table.device)
    if subnets is None:
        rng = random.Random(seed)
        pool = [net.space.smallest(), net.space.largest()]
        pool += [net.space.sample(rng) for _ in range(max(0, n - 2))]
        subnets = list(dict.fromkeys(pool))[:max(n, 2)]
    subnets = list(subnets)
    time_us = _timer(device, warmup, runs, rounds)
    rows = []
    it: Iterable[SubnetConfig] = subnets
    if progress:
        from tqdm import tqdm

        it = tqdm(subnets, desc="check", unit="subnet", leave=False)
    for cfg in it:
        static = net.extract(cfg).to(device)
        x = torch.zeros(table.batch, *net.input_shape(cfg), device=device)
        rows.append({"subnet": cfg.to_dict(), "predicted_ms": table.predict_ms(net.space, cfg),
                     "measured_ms": time_us(static, x) / 1e3})
    pred = [r["predicted_ms"] for r in rows]
    meas = [r["measured_ms"] for r in rows]
    return LatencyCheck(len(rows), mape(pred, meas), kendall_tau(pred, meas), table.overhead_us,
                        rows)
