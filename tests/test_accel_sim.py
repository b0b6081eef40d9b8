"""Cache policies, schedulers and the simulator on hand-made footprints."""

from __future__ import annotations

import pytest

from weightshare.accel.cache import list_caches, make_cache
from weightshare.accel.cells import CellIndex
from weightshare.accel.device import Device, get_device, list_devices
from weightshare.accel.footprint import Footprint
from weightshare.accel.sim import (
    AccelModel,
    AccelSubnet,
    SimConfig,
    list_schedulers,
    make_scheduler,
    scale_arrivals,
    simulate,
)

# Two SubNets over one 8x8 tensor: "small" reads the first 4 rows, "big" all 8 rows, plus
# "big" alone reads a 16-element head. One byte per element at 8 bits.
FPS = {
    "small": Footprint({"w": [((0, 4), (0, 8))]}),
    "big": Footprint({"w": [((0, 8), (0, 8))], "head": [((0, 16),)]}),
}


def _model() -> AccelModel:
    index = CellIndex.build(FPS)
    return AccelModel((AccelSubnet("small", 70.0, 1000, index.sets["small"]),
                       AccelSubnet("big", 80.0, 2000, index.sets["big"])), index)


DEV = Device("toy", buffer_bytes=48, offchip_bytes_per_s=1000.0, offchip_pj_per_byte=10.0,
             onchip_pj_per_byte=1.0, macs_per_s=1e6, pj_per_mac=1.0)


def test_cells_partition_footprints_exactly():
    index = CellIndex.build(FPS)
    for name, fp in FPS.items():
        assert sum(index.elements[c] for c in index.sets[name]) == fp.numel()
    shared = set(index.sets["small"]) & set(index.sets["big"])
    assert sum(index.elements[c] for c in shared) == (FPS["small"] & FPS["big"]).numel()


def test_lru_evicts_least_recent_and_bypasses_oversized():
    cache = make_cache("lru", 10, [4, 4, 4, 20])
    cache.observe([0, 1])
    cache.observe([2])  # evicts 0
    assert cache.cached() == {1, 2}
    cache.observe([3])  # larger than the whole buffer: passes through
    assert cache.cached() == {1, 2}


def test_subgraph_stationary_keeps_the_most_shared_cells():
    cache = make_cache("subgraph-stationary", 8, [4, 4, 4], window=4, every=1)
    cache.observe([0, 1])
    cache.observe([0, 2])
    cache.observe([0, 2])
    assert cache.cached() == {0, 2}
    assert cache.used() <= 8


def test_none_caches_nothing():
    cache = make_cache("none", 100, [1, 2])
    cache.observe([0, 1])
    assert cache.cached() == frozenset()


def test_registries_and_errors():
    assert set(list_caches()) >= {"none", "lru", "subgraph-stationary"}
    assert set(list_schedulers()) >= {"cache-aware", "static"}
    assert set(list_devices()) >= {"fpga-small", "mcu"}
    with pytest.raises(ValueError, match="unknown cache"):
        make_cache("fifo", 1, [])
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("x")
    with pytest.raises(ValueError, match="unknown device"):
        get_device("tpu")
    assert get_device("mcu", buffer_kb=64).buffer_bytes == 64 * 1024


def test_device_latency_and_energy():
    assert DEV.latency_s(2000, 80) == pytest.approx(0.08)  # transfer-bound, overlapped
    assert DEV.energy_pj(2000, 80, 80) == pytest.approx(2000 + 800 + 80)


@pytest.mark.parametrize("cache", ["none", "lru", "subgraph-stationary"])
def test_simulate_accounts_bytes(cache):
    model = _model()
    arrivals = [i * 1.0 for i in range(20)]  # far apart: every query may take "big"
    res = simulate(model, DEV, arrivals, SimConfig(slo_ms=1000, cache=cache))
    assert res.served == {"big": 20}
    if cache == "none":
        assert res.offchip_bytes_per_query == 80
    else:  # 48 bytes of the 80 stay on chip after the first query
        assert res.offchip_bytes_per_query == pytest.approx((80 + 19 * 32) / 20)
    assert res.mean_acc == 80.0 and res.target_met == 1.0


def test_cache_aware_scheduler_uses_the_cache_to_serve_more_accurately():
    model = _model()
    arrivals = [i * 1.0 for i in range(10)]
    # A 50 ms target: "big" uncached takes 80 ms, 32 ms with 48 bytes on chip; "small" 32 ms.
    aware = simulate(model, DEV, arrivals, SimConfig(slo_ms=50, cache="subgraph-stationary",
                                                     scheduler="cache-aware"))
    static = simulate(model, DEV, arrivals, SimConfig(slo_ms=50, cache="subgraph-stationary",
                                                      scheduler="static"))
    assert static.served == {"small": 10}
    assert aware.mean_acc > static.mean_acc and aware.target_met == 1.0


def test_scale_arrivals_sets_the_mean_rate():
    out = scale_arrivals([0.0, 1.0, 2.0, 4.0], rate=2.0)
    assert len(out) / out[-1] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        scale_arrivals([], 1.0)
