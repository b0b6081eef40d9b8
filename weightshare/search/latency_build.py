"""Building, calibrating and checking per-operator latency tables on this machine.

`build_latency_table` times every op of a SuperNet's space in context
(`time_in_context`, on `weightshare.timing`'s loop) and optionally calibrates it;
`calibrate_latency_table` fits the affine map from the raw sum to end-to-end
latency; `check_latency_table` scores a table on SubNets it was not calibrated on.
How and why entries are timed as they are is the docstring of
`weightshare.search.latency_table`, the table these functions produce.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models import SuperNet
from ..space import SearchSpace, SubnetConfig
from ..timing import fastest, machine_identity, repeat
from .common import SearchError, kendall_tau, mape, supernet_identity
from .latency_table import (
    LatencyTable,
    _input_shapes,
    _layers,
    _layout,
    covering_subnets,
    op_keys,
)

__all__ = [
    "LatencyCheck",
    "build_latency_table",
    "calibrate_latency_table",
    "check_latency_table",
    "fit_affine",
    "measure_end_to_end",
    "spread_subnets",
    "time_in_context",
]


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
