"""The SUSHI-style simulator: queries on a modeled accelerator with an on-chip weight cache.

Queries arrive on a trace (the serving traces of `weightshare.serve.traces`),
each with a latency target (arrival + `slo_ms`). The device serves one query at
a time. Per query, a scheduler picks the deployed SubNet; the cache policy says
which of its weight cells are already on chip; the rest comes from off-chip.
The modeled service time is the device's max(compute, transfer) (or the sum,
without overlap); energy is compute + off-chip bytes + on-chip reads.

Schedulers (registry, in the spirit of SushiSched):

- ``cache-aware``: the most accurate SubNet whose modeled latency *given the
  current cache contents* fits the time left to the query's deadline;
- ``static``: the same rule with latencies estimated for an empty buffer
  (a scheduler that does not know the cache);
- ``max-acc``: always the most accurate SubNet.

If no SubNet fits, the fastest one (under the scheduler's own estimate) runs.
"""

from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..deployment import DeployedSubnet
from ..models import SuperNet
from ..registry import Registry
from .cache import make_cache
from .cells import CellIndex
from .device import Device
from .footprint import subnet_footprint

__all__ = [
    "AccelSubnet",
    "AccelModel",
    "Scheduler",
    "register_scheduler",
    "make_scheduler",
    "list_schedulers",
    "SimConfig",
    "SimResult",
    "simulate",
    "scale_arrivals",
]


@dataclass(frozen=True)
class AccelSubnet:
    """A deployed SubNet as the simulator sees it: accuracy (%), MACs, weight cells read.

    Not another deployed-SubNet type: the simulator's index over a `DeployedSubnet`
    (`AccelModel.from_supernet` builds one per deployed SubNet), with the cells added.
    """

    name: str
    acc: float
    macs: int
    cells: tuple[int, ...]


@dataclass(frozen=True)
class AccelModel:
    """The deployed SubNets of one SuperNet over a common cell partition."""

    subnets: tuple[AccelSubnet, ...]
    index: CellIndex

    @classmethod
    def from_supernet(cls, net: SuperNet, deployed: Sequence[DeployedSubnet]) -> AccelModel:
        """The simulator's view of `deployed` (`weightshare.deployment.DeployedSubnet`s):
        each one's name, accuracy and MACs, plus the weight cells it reads on `net`."""
        fps = {d.name: subnet_footprint(net, d.subnet) for d in deployed}
        index = CellIndex.build(fps)
        subs = tuple(AccelSubnet(d.name, float(d.acc), d.macs, index.sets[d.name])
                     for d in deployed)
        return cls(subs, index)

    def get(self, name: str) -> AccelSubnet:
        for s in self.subnets:
            if s.name == name:
                return s
        raise ValueError(f"no deployed SubNet {name!r}; deployed: {[s.name for s in self.subnets]}")

    def most_accurate(self) -> AccelSubnet:
        return max(self.subnets, key=lambda s: (s.acc, -s.macs))

    def weight_bytes(self, sub: AccelSubnet, bits: int) -> float:
        return sum(self.index.elements[c] for c in sub.cells) * bits / 8

    def uncached_latency_s(self, sub: AccelSubnet, device: Device) -> float:
        return device.latency_s(sub.macs, int(self.weight_bytes(sub, device.bits)))


# ---------------------------------------------------------------- schedulers
class Scheduler(ABC):
    name = ""
    cache_aware = True

    @abstractmethod
    def pick(self, options: Sequence[AccelSubnet], budget_s: float,
             estimate: Callable[[AccelSubnet], float]) -> AccelSubnet: ...


_SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler", sort=False)


def register_scheduler(name: str) -> Callable[[type[Scheduler]], type[Scheduler]]:
    return _SCHEDULERS.register(name, set_name=True)


def list_schedulers() -> list[str]:
    return _SCHEDULERS.names()


def make_scheduler(name: str) -> Scheduler:
    return _SCHEDULERS.get(name)()


@register_scheduler("cache-aware")
class CacheAwareScheduler(Scheduler):
    def pick(self, options: Sequence[AccelSubnet], budget_s: float,
             estimate: Callable[[AccelSubnet], float]) -> AccelSubnet:
        est = {s.name: estimate(s) for s in options}
        fits = [s for s in options if est[s.name] <= budget_s]
        if fits:
            return max(fits, key=lambda s: (s.acc, -est[s.name]))
        return min(options, key=lambda s: (est[s.name], -s.acc))


@register_scheduler("static")
class StaticScheduler(CacheAwareScheduler):
    cache_aware = False


@register_scheduler("max-acc")
class MaxAccScheduler(Scheduler):
    cache_aware = False

    def pick(self, options: Sequence[AccelSubnet], budget_s: float,
             estimate: Callable[[AccelSubnet], float]) -> AccelSubnet:
        return max(options, key=lambda s: (s.acc, -s.macs))


# ---------------------------------------------------------------- simulation
@dataclass(frozen=True)
class SimConfig:
    """slo_ms: each query's latency target; cache options go to the cache policy."""

    slo_ms: float
    cache: str = "none"
    scheduler: str = "cache-aware"
    cache_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ValueError(f"slo_ms must be positive, got {self.slo_ms}")


@dataclass(frozen=True)
class SimResult:
    queries: int
    offchip_bytes_per_query: float
    hit_rate: float
    latency_ms: float
    response_p99_ms: float
    energy_mj: float
    offchip_energy_mj: float
    mean_acc: float
    target_met: float
    served: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scale_arrivals(arrivals: Sequence[float], rate: float) -> list[float]:
    """Stretch a trace in time so its mean rate is `rate` per second (its shape is kept)."""
    if not arrivals:
        raise ValueError("the trace has no arrivals")
    span = max(arrivals[-1], 1e-12)
    mean = len(arrivals) / span
    return [t * mean / rate for t in arrivals]


def simulate(model: AccelModel, device: Device, arrivals: Sequence[float], cfg: SimConfig
             ) -> SimResult:
    """Replay `arrivals` (seconds) on `device`; one query per arrival, served in order."""
    if not arrivals:
        raise ValueError("the trace has no arrivals")
    sizes = model.index.cell_bytes(device.bits)
    cache = make_cache(cfg.cache, device.buffer_bytes, sizes, **dict(cfg.cache_options))
    sched = make_scheduler(cfg.scheduler)
    slo = cfg.slo_ms / 1e3
    empty: frozenset[int] = frozenset()
    free = 0.0
    offchip: list[float] = []
    needed_bytes = 0.0
    lat: list[float] = []
    resp: list[float] = []
    energy: list[float] = []
    off_energy: list[float] = []
    accs: list[float] = []
    met = 0
    served: dict[str, int] = {}
    for t in arrivals:
        start = max(t, free)
        held = cache.cached()

        def miss_bytes(sub: AccelSubnet, on_chip: frozenset[int]) -> float:
            return sum(sizes[c] for c in sub.cells if c not in on_chip)

        def estimate(sub: AccelSubnet, on_chip: frozenset[int] = held if sched.cache_aware
                     else empty) -> float:
            return device.latency_s(sub.macs, miss_bytes(sub, on_chip))

        sub = sched.pick(model.subnets, t + slo - start, estimate)
        miss = miss_bytes(sub, held)
        need = model.weight_bytes(sub, device.bits)
        service = device.latency_s(sub.macs, miss)
        free = start + service
        cache.observe(sub.cells)
        offchip.append(miss)
        needed_bytes += need
        lat.append(service)
        resp.append(free - t)
        energy.append(device.energy_pj(sub.macs, miss, need))
        off_energy.append(miss * device.offchip_pj_per_byte)
        accs.append(sub.acc)
        met += free <= t + slo + 1e-12
        served[sub.name] = served.get(sub.name, 0) + 1
    n = len(arrivals)
    resp_sorted = sorted(resp)
    return SimResult(
        queries=n,
        offchip_bytes_per_query=sum(offchip) / n,
        hit_rate=1.0 - sum(offchip) / needed_bytes if needed_bytes else 0.0,
        latency_ms=1e3 * statistics.fmean(lat),
        response_p99_ms=1e3 * resp_sorted[min(n - 1, int(0.99 * n))],
        energy_mj=statistics.fmean(energy) * 1e-9,
        offchip_energy_mj=statistics.fmean(off_energy) * 1e-9,
        mean_acc=statistics.fmean(accs),
        target_met=met / n,
        served=dict(sorted(served.items())),
    )
