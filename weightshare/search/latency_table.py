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
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import SuperNet
from ..space import SearchSpace, SubnetConfig
from ..timing import fastest, machine_identity, repeat, same_machine
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
    "calibrate_latency_table",
    "check_latency_table",
    "fit_affine",
    "measure_end_to_end",
    "spread_subnets",
    "time_in_context",
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


# ------------------------------------------------------------------------------ measuring
def _sync_fn(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


@torch.no_grad()
def time_in_context(layers: Sequence[nn.Module], x: torch.Tensor, *, warmup: int, runs: int,
                    sync: Callable[[], None] | None = None) -> tuple[list[float], float]:
    """(fastest microseconds of each layer, fastest whole chain) over `runs` forwards.

    Each layer gets the previous layer's real output, exactly as in the SubNet's
    own forward, so what is in cache when it starts is what is there for real.
    The minimum, not the median: on a shared machine other processes only ever
    add time, and with one other busy process the median of a 5 ms forward moved
    by 60 % between rounds while the minimum ranked SubNets consistently (table
    MAPE 5 % vs 22 % with medians, same SubNets, same minute). The loop and the
    statistic are `weightshare.timing`'s (`repeat`, `fastest`).
    """
    clock = time.perf_counter

    def chain() -> tuple[list[float], float]:
        h, per = x, []
        start = clock()
        for layer in layers:
            t0 = clock()
            h = layer(h)
            if sync is not None:
                sync()
            per.append(clock() - t0)
        return per, clock() - start

    rounds = repeat(chain, warmup=warmup, runs=runs)
    per = [1e6 * fastest([r[0][i] for r in rounds]) for i in range(len(layers))]
    return per, 1e6 * fastest([r[1] for r in rounds])


class _EmptyNet(nn.Module):
    """A StaticNet with nothing in it: what running any network costs before its first op."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.head = nn.Sequential(), nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from ..progress import progress as tqdm

    return tqdm(total=total, desc=desc, unit="net", leave=False)


def build_latency_table(net: SuperNet, *, device: str | torch.device = "cpu", batch: int = 1,
                        warmup: int = 10, runs: int = 50, rounds: int = 3, calibrate: int = 0,
                        seed: int = 0, progress: bool = False) -> LatencyTable:
    """Time every op of `net`'s space in context on `device` at batch `batch`, then calibrate.

    calibrate: how many extracted SubNets to time end to end for the affine
    calibration (0: none). See the module docstring.
    """
    if batch < 1 or runs < 1 or warmup < 0 or rounds < 1 or calibrate < 0:
        raise ValueError(f"need batch, runs, rounds >= 1 and warmup, calibrate >= 0; got {batch}, "
                         f"{runs}, {rounds}, {warmup}, {calibrate}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device here")
    layout = _layout(net)
    space = net.space
    sync = _sync_fn(device)
    t0 = time.perf_counter()
    probe = torch.zeros(batch, *net.input_shape(), device=device)
    empty = _EmptyNet().to(device)
    overhead_us = min(time_in_context([empty], probe, warmup=warmup, runs=runs, sync=sync)[1]
                      for _ in range(rounds))
    # Each key is timed in the first covering SubNet that holds it, so every entry has
    # the same number of samples (rounds) as an end-to-end check has.
    plan: list[tuple[SubnetConfig, list[int], list[str]]] = []
    seen: set[str] = set()
    for cfg in covering_subnets(space):
        keys = op_keys(space, layout, cfg)
        todo = [i for i, k in enumerate(keys) if k not in seen]
        seen.update(keys)
        if todo:
            plan.append((cfg, todo, keys))
    samples: dict[str, list[float]] = {}
    shapes: dict[str, list[int]] = {}
    bar = _bar(rounds * len(plan), "profile", progress)
    for _ in range(rounds):  # interleaved: a burst of load hits one round, not one SubNet
        for cfg, todo, keys in plan:
            layers = _layers(net.extract(cfg).to(device))
            if len(layers) != len(keys):
                raise SearchError(
                    f"{type(net).__name__}'s extracted network has {len(layers)} ops but its "
                    f"layout {layout} predicts {len(keys)}: fix its fixed_prefix_layers / "
                    "fixed_suffix_layers"
                )
            x = torch.zeros(batch, *net.input_shape(cfg), device=device)
            if not shapes.keys() >= {keys[i] for i in todo}:
                for i, shape in enumerate(_input_shapes(layers, x)):
                    shapes.setdefault(keys[i], list(shape[1:]))
            per, _ = time_in_context(layers, x, warmup=warmup, runs=runs, sync=sync)
            for i in todo:
                samples.setdefault(keys[i], []).append(per[i])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    entries = {k: min(v) for k, v in samples.items()}
    table = LatencyTable(
        supernet=supernet_identity(net), device=str(device), batch=batch,
        threads=torch.get_num_threads(), overhead_us=overhead_us, entries=entries,
        shapes={k: shapes[k] for k in entries},
        layout={"prefix": layout.prefix, "suffix": layout.suffix},
        meta={"torch": torch.__version__, "warmup": warmup, "runs": runs, "rounds": rounds,
              "machine": machine_identity(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )
    if calibrate:
        calibrate_latency_table(table, net, n=calibrate, seed=seed, device=device, warmup=warmup,
                                runs=runs, rounds=rounds, progress=progress)
    table.meta["build_s"] = time.perf_counter() - t0
    return table


def measure_end_to_end(net: SuperNet, subnets: Sequence[SubnetConfig], *, batch: int = 1,
                       device: str | torch.device = "cpu", warmup: int = 10, runs: int = 50,
                       rounds: int = 3, progress: bool = False,
                       desc: str = "time") -> list[list[float]]:
    """Per SubNet, its fastest end-to-end milliseconds in each round (rounds interleaved).

    The same statistic (fastest of `runs` calls) as the table's entries, see `time_in_context`.
    """
    device = torch.device(device)
    sync = _sync_fn(device)
    out: list[list[float]] = [[] for _ in subnets]
    bar = _bar(rounds * len(subnets), desc, progress)
    for _ in range(rounds):
        for i, cfg in enumerate(subnets):
            static = net.extract(cfg).to(device)
            x = torch.zeros(batch, *net.input_shape(cfg), device=device)
            out[i].append(time_in_context([static], x, warmup=warmup, runs=runs,
                                          sync=sync)[1] / 1e3)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out


def spread_subnets(space: SearchSpace, key: Callable[[SubnetConfig], float], n: int, *,
                   seed: int, pool: int = 400,
                   exclude: Iterable[SubnetConfig] = ()) -> list[SubnetConfig]:
    """`n` distinct random SubNets evenly spread over `key` (e.g. predicted latency)."""
    rng = random.Random(seed)
    banned = set(exclude)
    cands = sorted({c for c in (space.sample(rng) for _ in range(pool)) if c not in banned},
                   key=key)
    if len(cands) <= n:
        return cands
    return [cands[round(i * (len(cands) - 1) / (n - 1))] for i in range(n)] if n > 1 else [
        cands[len(cands) // 2]]


def fit_affine(raw: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(scale, offset) minimizing the squared *relative* error of scale * raw + offset.

    Relative, because MAPE is what the table is judged by and small SubNets must
    not be sacrificed to fit big ones. Falls back to a pure scale when the fit is
    degenerate (fewer than 3 points, a scale that is not positive, or an offset
    larger than half the smallest raw value: a few noisy timings must not make
    the table extrapolate wildly outside the range it was calibrated on).
    """
    import numpy as np

    r, m = np.asarray(raw, dtype=float), np.asarray(measured, dtype=float)
    ratio_scale = float(np.sum(r / m) / np.sum((r / m) ** 2))
    if len(r) >= 3 and np.ptp(r) > 0:
        a = np.stack([r / m, 1.0 / m], axis=1)
        (scale, offset), *_ = np.linalg.lstsq(a, np.ones_like(m), rcond=None)
        if scale > 0 and abs(offset) <= 0.5 * r.min():
            return float(scale), float(offset)
    return ratio_scale, 0.0


def _loo_mape(raw: Sequence[float], measured: Sequence[float]) -> float:
    """Leave-one-out MAPE of `fit_affine`: what calibrating would do on SubNets it never saw."""
    errs = []
    for i in range(len(raw)):
        rest = [j for j in range(len(raw)) if j != i]
        scale, offset = fit_affine([raw[j] for j in rest], [measured[j] for j in rest])
        errs.append(abs(scale * raw[i] + offset - measured[i]) / measured[i])
    return 100.0 * sum(errs) / len(errs)


def calibrate_latency_table(table: LatencyTable, net: SuperNet, *, n: int = 8, seed: int = 0,
                            device: str | torch.device | None = None, warmup: int = 10,
                            runs: int = 50, rounds: int = 3,
                            progress: bool = False) -> LatencyTable:
    """Time `n` SubNets end to end and store the affine raw -> measured fit in `table`."""
    if n < 1:
        raise ValueError(f"calibration needs at least 1 SubNet, got {n}")
    table.check(net)
    # Its own seed stream, so `check_latency_table`'s random SubNets are other ones.
    subs = spread_subnets(net.space, lambda c: table.raw_us(net.space, c), n,
                          seed=10_007 + seed)
    rounds_ms = measure_end_to_end(net, subs, batch=table.batch,
                                   device=device if device is not None else table.device,
                                   warmup=warmup, runs=runs, rounds=rounds, progress=progress,
                                   desc="calibrate")
    measured = [1e3 * min(r) for r in rounds_ms]
    raw = [table.raw_us(net.space, c) for c in subs]
    scale, offset = fit_affine(raw, measured)
    raw_mape = mape(raw, measured)
    loo = _loo_mape(raw, measured) if len(subs) >= 3 else float("nan")
    # Only kept when it helps SubNets it was not fitted on; else identity (still stored, so
    # `profile` can say why, and the SubNets stay out of `profile-check`).
    applied = loo == loo and loo < raw_mape
    table.calibration = {
        "scale": scale if applied else 1.0, "offset_us": offset if applied else 0.0,
        "applied": applied, "fitted_scale": scale, "fitted_offset_us": offset, "n": len(subs),
        "fit_mape": mape([scale * r + offset for r in raw], measured),
        "loo_mape": loo, "raw_mape": raw_mape,
        "subnets": [c.to_dict() for c in subs],
    }
    return table


# -------------------------------------------------------------------------------- checking
@dataclass(frozen=True)
class LatencyCheck:
    """Table predictions against measured end-to-end latency of extracted SubNets.

    mape: of the prediction the search uses (calibrated when the table is);
    mape_raw: of the uncalibrated sum; noise_pct: how much the same SubNet's
    rounds disagree (mean of (slowest - fastest round) / fastest), the floor no
    table can beat on this machine at this moment.
    """

    n_subnets: int
    mape: float  # percent
    kendall_tau: float
    overhead_us: float
    rows: list[dict[str, Any]]  # {"subnet", "predicted_ms", "raw_ms", "measured_ms", "rounds_ms"}
    mape_raw: float = float("nan")
    calibrated: bool = False
    method: str = "in-context"
    noise_pct: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"n_subnets": self.n_subnets, "mape": self.mape, "mape_raw": self.mape_raw,
                "calibrated": self.calibrated, "method": self.method,
                "kendall_tau": self.kendall_tau, "noise_pct": self.noise_pct,
                "overhead_us": self.overhead_us, "rows": self.rows}


def check_latency_table(table: LatencyTable, net: SuperNet, *, n: int = 20, seed: int = 0,
                        subnets: Iterable[SubnetConfig] | None = None,
                        device: str | torch.device | None = None, warmup: int = 10,
                        runs: int = 50, rounds: int = 3, progress: bool = False) -> LatencyCheck:
    """Time `n` SubNets end to end (smallest, largest, random) and score the table on them.

    SubNets the table was calibrated on are never among them, so the calibrated
    error is an honest out-of-sample one.
    """
    table.check(net)
    device = torch.device(device if device is not None else table.device)
    used = table.calibration_subnets
    if subnets is None:
        rng = random.Random(seed)
        pool = [net.space.smallest(), net.space.largest()]
        pool += [net.space.sample(rng) for _ in range(max(0, 4 * n))]
        subnets = [c for c in dict.fromkeys(pool) if c not in used][:max(n, 2)]
    else:
        subnets = [c for c in subnets if c not in used]
    subnets = list(subnets)
    if not subnets:
        raise SearchError("no SubNet left to check the table on (all were used to calibrate it)")
    rounds_ms = measure_end_to_end(net, subnets, batch=table.batch, device=device, warmup=warmup,
                                   runs=runs, rounds=rounds, progress=progress, desc="check")
    rows = []
    for cfg, rms in zip(subnets, rounds_ms, strict=True):
        rows.append({"subnet": cfg.to_dict(), "predicted_ms": table.predict_ms(net.space, cfg),
                     "raw_ms": table.predict_ms(net.space, cfg, calibrated=False),
                     "measured_ms": min(rms), "rounds_ms": rms})
    pred = [r["predicted_ms"] for r in rows]
    raw = [r["raw_ms"] for r in rows]
    meas = [r["measured_ms"] for r in rows]
    noise = 100.0 * sum((max(r) - min(r)) / min(r) for r in rounds_ms) / len(rounds_ms)
    return LatencyCheck(len(rows), mape(pred, meas), kendall_tau(pred, meas), table.overhead_us,
                        rows, mape_raw=mape(raw, meas), calibrated=table.calibration is not None,
                        method=table.method, noise_pct=noise if rounds > 1 else float("nan"))
