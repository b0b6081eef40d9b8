"""The real server driven by the real load generator: the demo's serving step, the
server-vs-simulator check and the saturation throughput measurement (tiny checkpoint,
about a second of traffic each)."""

from __future__ import annotations

import json
import socket

import pytest
from test_serve_fixtures import tiny_checkpoint, tiny_config, tiny_stack

from weightshare.deployment import FRONTIER_FORMAT, load_frontier
from weightshare.experiments.comparisons import compare_with_simulator, measure_overhead
from weightshare.experiments.serving_demo import (
    DemoConfig,
    demo_serving,
    demo_settings,
    write_deploy_file,
)
from weightshare.serve.live import replay
from weightshare.serve.loadgen import HTTPPool, LoadConfig, run_load_process
from weightshare.serve.traces import make_trace


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve-live"))


@pytest.fixture(scope="module")
def stack(ckpt):
    s = tiny_stack(ckpt)
    yield s
    s.close()


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_serving_on_a_tiny_checkpoint(ckpt, tmp_path):
    messages: list[str] = []
    cfg = tiny_config(ckpt, profile=str(tmp_path / "p.json"))
    res = demo_serving(cfg, DemoConfig(seconds=1.0, rate=20, slo_ms=2000), log=messages.append)
    n = res["requests"]
    assert n > 5 and res["trace"].startswith("gamma:rate=20,cv2=8,duration=1")
    policies = [r["policy"] for r in res["rows"]]
    assert policies[0] == "slackfit" and policies[1].startswith("fixed:s")
    for r in res["rows"]:
        assert r["requests"] == n
        assert r["ok"] + r["late"] + r["dropped"] + r["rejected"] + r["errors"] == n
        assert r["errors"] == 0 and r["ok"] > 0  # a 2 s SLO on a tiny model is easy
    table = res["table"]
    assert "SLO met %" in table and "slackfit" in table and policies[1] in table
    assert "SlackFit meets" in table
    assert any("deployed 3 SubNets" in m for m in messages)
    assert (tmp_path / "p.json").is_file()  # the profile is saved for the next run


def test_demo_settings_derive_slo_and_rate_from_the_profile(stack):
    slo, rate = demo_settings(stack.profile, DemoConfig())
    big = stack.profile.most_accurate()
    assert slo == pytest.approx(5 * stack.profile.latency_ms(big, 1, "median") + 20, abs=0.1)
    assert 0 < rate <= DemoConfig().max_rate
    assert demo_settings(stack.profile, DemoConfig(slo_ms=50, rate=7)) == (50, 7)
    with pytest.raises(ValueError):
        DemoConfig(seconds=0)


def test_write_deploy_file_keeps_one_entry_per_subnet(stack, tmp_path):
    sub = stack.profile.subnets[0].subnet.to_dict()
    path = write_deploy_file([{"subnet": sub, "acc": 50.0, "macs": 1},
                              {"subnet": sub, "acc": 51.0, "macs": 1}], tmp_path / "d.json")
    # One entry per SubNet, the first accuracy kept; in the one frontier format (it was a
    # bare list before weightshare.deployment).
    assert json.loads(path.read_text())["format"] == FRONTIER_FORMAT
    assert [(p.subnet.to_dict(), p.measured_acc) for p in load_frontier(path)] == [(sub, 50.0)]


def test_replay_leaves_no_server_behind(stack):
    trace = make_trace("poisson:rate=30,duration=0.5,seed=2")
    res = replay(stack, "fixed:s0", trace, slo_ms=3000, client="thread")
    assert res.summary["requests"] == len(trace) and res.statuses.get(200) == len(trace)
    with pytest.raises(ValueError, match="client"):
        replay(stack, "slackfit", trace, slo_ms=100, client="nope")


def test_compare_with_simulator_reports_both_and_the_difference(stack):
    trace = make_trace("gamma:rate=20,cv2=4,duration=1,seed=0")
    rows = compare_with_simulator(stack, ["slackfit", "fixed:s0"], trace, slo_ms=2000)
    assert [r["policy"] for r in rows] == ["slackfit", "fixed:s0"]
    for r in rows:
        assert r["server"]["requests"] == r["sim"]["requests"] == len(trace)
        assert r["diff_points"] == pytest.approx(
            100 * (r["server"]["slo_attainment"] - r["sim"]["slo_attainment"]))
        # A 2 s deadline on a tiny model: both meet (nearly) every deadline.
        assert abs(r["diff_points"]) <= 10


def test_measure_overhead_saturates_the_server(stack):
    out = measure_overhead(stack, "s0", seconds=0.5, concurrency=8, runs=3)
    assert out["subnet"] == "s0" and out["server_throughput"] > 0
    assert out["raw_model_throughput"] > 0 and out["raw_batch"] == stack.profile.max_batch
    assert out["ratio"] == pytest.approx(out["server_throughput"] / out["raw_model_throughput"])
    assert set(out["http_statuses"]) == {200}


def test_load_generator_process_reports_connection_errors(stack):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _port_closed(port)
    trace = make_trace("poisson:rate=20,duration=0.3,seed=0")
    res = run_load_process(trace, LoadConfig(url=f"http://127.0.0.1:{port}", timeout_s=2))
    assert res.summary["errors"] == len(trace) and res.statuses == {0: len(trace)}
    with pytest.raises(ValueError, match="http://"):
        HTTPPool("https://example.org")
