"""FastSwitch in the real server: switch counters on /metrics and the benchmark's live
step (normal vs --switch-mode delta) on a tiny random checkpoint."""

from __future__ import annotations

import urllib.request

import pytest
import torch
from test_serve_fixtures import tiny_checkpoint, tiny_config, tiny_stack

from weightshare.experiments.fastswitch_live import format_live_table, live_switching, parse_metrics
from weightshare.serve.live import started_server
from weightshare.serve.loadgen import LoadConfig, run_load_sync
from weightshare.serve.metrics import ServeMetrics
from weightshare.serve.traces import make_trace


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("accel_live"))


def test_switch_counters_in_the_exposition():
    m = ServeMetrics()
    m.record_switch(1000, 0.25)
    m.record_switch(24, 0.5)
    m.switches.inc()
    got = parse_metrics(m.exposition().decode())
    assert got["weightshare_switch_bytes_total"] == 1024
    assert got["weightshare_switch_seconds_total"] == pytest.approx(0.75)
    assert got["weightshare_subnet_switches_total"] == 1


def test_delta_server_reports_switch_bytes_and_time(ckpt):
    stack = tiny_stack(ckpt, switch_mode="delta")
    try:
        backend = stack.backend
        backend.prepare("s2")  # resident before traffic: not a switch the server counts
        before = backend.bytes_read
        trace = make_trace("poisson:rate=20,duration=0.3,seed=1")
        with started_server(stack, "fixed:s0", slo_ms=5000, backend=backend) as server:
            res = run_load_sync(trace, LoadConfig(url=server.url, slo_ms=5000,
                                                  input_shape=stack.runtime.input_shape(),
                                                  max_requests=None, max_seconds=None))
            with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
                got = parse_metrics(r.read().decode())
        assert res.statuses.get(200) == len(trace) > 0
        assert res.summary["subnets"] == {"s0": len(trace)}
        assert got["weightshare_subnet_switches_total"] == 1  # s2 -> s0, then s0 stays
        read = backend.bytes_read - before
        assert read > 0 and got["weightshare_switch_bytes_total"] == read
        assert got["weightshare_switch_seconds_total"] > 0
        assert 0 < backend.resident_bytes() <= backend.peak_resident_bytes
        x = torch.randn(2, *stack.runtime.input_shape())
        assert torch.allclose(backend.run(x, "s0"), stack.runtime.run(x, "s0"), atol=1e-5)
    finally:
        stack.close()


def test_live_switching_normal_vs_delta(ckpt, tmp_path):
    base = tiny_config(ckpt, profile=str(tmp_path / "p.json"))
    messages: list[str] = []
    res = live_switching(base, seconds=1.0, rate=20, slo_ms=2000, isolate=False,
                         log=messages.append)
    assert (tmp_path / "p.json").is_file()  # measured once, reused by both modes
    assert [r["mode"] for r in res["rows"]] == ["normal", "delta"]
    normal, delta = res["rows"]
    for r in res["rows"]:
        assert r["requests"] == res["requests"] > 5
        assert r["ok"] + r["late"] + r["dropped"] + r["rejected"] + r["errors"] == r["requests"]
        assert r["errors"] == 0 and 0 < r["slo_attainment"] <= 1
        assert r["switches"] >= 0 and r["p99_ms"] > 0 and r["peak_rss_bytes"] is None
    assert normal["switch_bytes"] == normal["delta_loads"] == 0
    assert delta["switches"] == delta["delta_loads"]  # both start on the same SubNet
    assert (delta["switch_bytes"] > 0) == (delta["delta_loads"] > 0)
    # One SubNet's footprint vs the whole SuperNet.
    assert 0 < delta["weights_held_bytes"] < normal["weights_held_bytes"]
    headers, rows = format_live_table(res)
    assert len(rows) == 2 and len(rows[0]) == len(headers)
    assert any("live FastSwitch" in m for m in messages)
