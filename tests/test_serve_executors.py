"""Executors under the serving runtime (torch plans, onnxruntime sessions, auto), the memory
budget, the on-disk session cache, Pareto-frontier deployment, write-back of recalibration
results, and readiness during startup; on the tiny SuperNet the other serving tests use."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import torch
from helpers import randomize
from test_serve_fixtures import TINY, tiny_checkpoint, tiny_config, tiny_stack
from typer.testing import CliRunner

import weightshare as ws
from weightshare.checkpoint import load_checkpoint
from weightshare.cli import app
from weightshare.nn import NormContext, StatsRecorder
from weightshare.serve.executors import ExecutorConfig, list_executors, make_executor
from weightshare.serve.policies import make_policy
from weightshare.serve.profile import DeployedSubnet, pareto_filter
from weightshare.serve.runtime import module_bytes
from weightshare.serve.server import ServerConfig, ServerThread, WorkerSlot, create_app
from weightshare.serve.stack import build_stack, default_stats_path
from weightshare.serve.worker import InferenceWorker
from weightshare.space import SubnetConfig


@pytest.fixture(scope="module")
def net():
    """A tiny SuperNet with random BN affines and kernel transforms."""
    torch.manual_seed(0)
    return randomize(ws.create_supernet("ofa_mbv3_small", **TINY))


@pytest.fixture(scope="module")
def subnets(net):
    """Three SubNets, each with its own random BN statistics (SubnetNorm), so slicing,
    folding or statistics bugs show against the extracted model."""
    g = torch.Generator().manual_seed(1)
    chosen = {"s0": net.space.smallest(), "s1": net.space.sample(random.Random(0)),
              "s2": net.space.largest()}
    for cfg in chosen.values():
        rec = StatsRecorder()  # which layers this SubNet uses, and how many channels each
        with torch.no_grad():
            net(torch.randn(2, *net.input_shape(cfg)), cfg, norm=NormContext(recorder=rec))
        net.set_subnet_stats(cfg, {k: (torch.randn(m.shape[0], generator=g) * 0.1,
                                       torch.rand(m.shape[0], generator=g) + 0.5)
                                   for k, (m, _) in rec.result().items()})
    return chosen


def _reference(net, cfg, x):
    with torch.no_grad():
        return net.extract(cfg)(x)


def test_registry_names_and_unknown_executor(net, subnets):
    assert {"torch", "onnxruntime", "auto"} <= set(list_executors())
    with pytest.raises(ValueError, match="unknown executor 'tensorrt'.*torch"):
        make_executor("tensorrt", net, subnets)
    with pytest.raises(ValueError, match="unknown executor"):
        tiny_config("x.pt", executor="nope")


def test_torch_plan_equals_extracted_model(net, subnets):
    ex = make_executor("torch", net, subnets)
    for name, cfg in subnets.items():
        x = torch.randn(3, *net.input_shape(cfg))
        torch.testing.assert_close(ex.run(x, name), _reference(net, cfg, x), atol=1e-5,
                                   rtol=1e-4)
    mem = ex.memory()
    # Only folded copies are held; slices the SuperNet already has contiguously are views.
    assert 0 < mem["extra_bytes"] < module_bytes(net)
    with pytest.raises(ValueError, match="no deployed SubNet 'nine'"):
        ex.run(torch.randn(1, *net.input_shape()), "nine")


def test_torch_plan_follows_weight_changes(subnets):
    torch.manual_seed(3)
    n = randomize(ws.create_supernet("ofa_mbv3_small", **TINY), seed=3)
    cfg = subnets["s1"]
    ex = make_executor("torch", n, {"s1": cfg})
    x = torch.randn(2, *n.input_shape(cfg))
    before = ex.run(x, "s1")
    with torch.no_grad():  # an in-place update (an optimiser step, load_state_dict)
        block = n.units[0][0]
        block.dw.weight.mul_(1.5)
        block.dw_bn.weight.add_(0.3)
        n.feature_mix.weight.mul_(0.5)
    after = ex.run(x, "s1")
    assert ex.rebuilds == 1 and not torch.allclose(before, after)
    torch.testing.assert_close(after, _reference(n, cfg, x), atol=1e-5, rtol=1e-4)
    n.set_subnet_stats(cfg, {})  # new statistics object for the SubNet: rebuilt as well
    torch.testing.assert_close(ex.run(x, "s1"), _reference(n, cfg, x), atol=1e-5, rtol=1e-4)
    assert ex.rebuilds == 2


def test_onnxruntime_equals_extracted_model_and_cache_hits_on_restart(net, subnets, tmp_path):
    conf = ExecutorConfig(cache_dir=str(tmp_path), checkpoint_sha256="abc", threads=1,
                          background=False)
    ex = make_executor("onnxruntime", net, subnets, conf).start()
    assert set(ex.sessions) == set(subnets)
    assert not any(s.cache_hit for s in ex.sessions.values())
    for name, cfg in subnets.items():
        assert ex.path(name) == "onnxruntime"
        x = torch.randn(5, *net.input_shape(cfg))
        torch.testing.assert_close(ex.run(x, name), _reference(net, cfg, x), atol=1e-4,
                                   rtol=1e-4)
    mem = ex.memory()
    assert mem["session_bytes"] == sum(s["file_bytes"] for s in mem["sessions"].values()) > 0
    assert len(list(tmp_path.glob("*.ort.onnx"))) == len(subnets)

    again = make_executor("onnxruntime", net, subnets, conf).start()  # a restart
    assert all(s.cache_hit for s in again.sessions.values())
    x = torch.randn(2, *net.input_shape(subnets["s2"]))
    torch.testing.assert_close(again.run(x, "s2"), _reference(net, subnets["s2"], x),
                               atol=1e-4, rtol=1e-4)
    # Other weights (another checkpoint hash) never hit this cache.
    other = make_executor("onnxruntime", net, {"s0": subnets["s0"]},
                          ExecutorConfig(cache_dir=str(tmp_path), checkpoint_sha256="other",
                                         threads=1, background=False)).start()
    assert not other.sessions["s0"].cache_hit

    # A corrupt cache file is rebuilt with a warning, never served or fatal.
    for f in tmp_path.glob("*.ort.onnx"):
        f.write_bytes(b"not an onnx graph")
    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        fixed = make_executor("onnxruntime", net, {"s0": subnets["s0"]}, conf).start()
    assert not fixed.sessions["s0"].cache_hit
    x = torch.randn(1, *net.input_shape(subnets["s0"]))
    torch.testing.assert_close(fixed.run(x, "s0"), _reference(net, subnets["s0"], x),
                               atol=1e-4, rtol=1e-4)


def test_memory_budget_leaves_the_rest_on_torch(net, subnets, tmp_path):
    first = make_executor("onnxruntime", net, {"s0": subnets["s0"]}, ExecutorConfig(
        cache_dir=str(tmp_path), threads=1, background=False)).start()
    budget_mb = (first.sessions["s0"].file_bytes + 1024) / 2**20  # room for s0's only
    ex = make_executor("onnxruntime", net, subnets, ExecutorConfig(
        ort_memory_budget_mb=budget_mb, cache_dir=str(tmp_path), threads=1,
        background=False)).start()
    assert list(ex.sessions) == ["s0"]
    assert ex.path("s0") == "onnxruntime" and ex.path("s2") == "torch"
    mem = ex.memory()
    assert mem["session_bytes"] <= mem["budget_bytes"]
    assert "memory budget" in mem["on_torch"]["s2"]
    for name, cfg in subnets.items():  # every SubNet is still served, s1/s2 by torch
        x = torch.randn(2, *net.input_shape(cfg))
        torch.testing.assert_close(ex.run(x, name), _reference(net, cfg, x), atol=1e-4,
                                   rtol=1e-4)
    none = make_executor("onnxruntime", net, subnets, ExecutorConfig(
        ort_memory_budget_mb=0, threads=1, background=False)).start()
    assert not none.sessions and all(none.path(n) == "torch" for n in subnets)


def test_background_build_never_blocks_a_request(net, subnets):
    ex = make_executor("onnxruntime", net, {"s2": subnets["s2"]},
                       ExecutorConfig(threads=1, background=True))
    ex.start()
    x = torch.randn(1, *net.input_shape(subnets["s2"]))
    # While the session is exported and optimised, the torch plan answers at once.
    assert ex.path("s2") == "torch"
    torch.testing.assert_close(ex.run(x, "s2"), _reference(net, subnets["s2"], x), atol=1e-5,
                               rtol=1e-4)
    assert ex.wait(120) and ex.path("s2") == "onnxruntime"


def _d(name, acc, macs):
    return DeployedSubnet(name, SubnetConfig((2,), (3,) * 2, (3,) * 2), macs, 0, acc)


def test_pareto_filter_drops_dominated_with_reasons():
    subs = [_d("a", 80.0, 1), _d("b", 78.0, 2), _d("c", 85.0, 3), _d("d", 85.0, 4)]
    lat = {"a": 1.0, "b": 1.5, "c": 2.0, "d": 2.5}
    kept, dropped = pareto_filter(subs, lat)
    assert [s.name for s in kept] == ["a", "c"]
    why = {d["name"]: d for d in dropped}
    assert why["b"]["dominated_by"] == "a" and "78.00 %" in why["b"]["reason"]
    assert why["d"]["dominated_by"] == "c"  # same accuracy, slower
    kept, dropped = pareto_filter(subs[:1], {"a": 1.0})
    assert len(kept) == 1 and not dropped


def test_stack_deploys_only_the_frontier(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    net = load_checkpoint(ckpt).supernet
    small, large = net.space.smallest(), net.space.largest()
    frontier = tmp_path / "frontier.json"
    # The largest SubNet is slower; claim it is also less accurate: it must not be deployed.
    frontier.write_text(json.dumps({"format": "weightshare-frontier", "frontier": [
        {"subnet": small.to_dict(), "measured_acc": 60.0},
        {"subnet": large.to_dict(), "measured_acc": 40.0}]}))
    logs: list[str] = []
    stack = build_stack(tiny_config(ckpt, deploy=str(frontier), keep_dominated=False,
                                    profile=str(tmp_path / "p.json")), log=logs.append)
    assert [s.subnet for s in stack.profile.subnets] == [small]
    (drop,) = stack.profile.meta["frontier"]["dropped"]
    assert drop["subnet"] == large.to_dict() and drop["dominated_by"] == "s0"
    assert "at least as accurate (60.00 % vs 40.00 %)" in drop["reason"]
    assert any("not deploying candidate" in m for m in logs)
    assert stack.runtime.names == ["s0"]
    again = build_stack(tiny_config(ckpt, deploy=str(frontier), keep_dominated=False,
                                    profile=str(tmp_path / "p.json")))
    assert again.profile_reused and again.profile.names == ["s0"]


def test_auto_executor_filters_the_frontier_on_the_paths_that_serve(tmp_path):
    """With onnxruntime coming, torch timings do not pre-filter the candidates: every one
    is profiled on its session, and what is kept is non-dominated on the served paths."""
    ckpt = tiny_checkpoint(tmp_path)
    stack = build_stack(tiny_config(ckpt, executor="auto", ort_background=False,
                                    num_subnets=3, keep_dominated=False,
                                    profile=str(tmp_path / "p.json")))
    meta = stack.profile.meta
    assert meta["frontier"]["dropped"] == [] and meta["frontier"]["measured_with"] != "torch"
    assert set(meta["executors"]["onnxruntime"]["median_ms"]) == {"s0", "s1", "s2"}
    served = {n: stack.profile.median_ms[n][0] for n in stack.profile.names}
    acc = {s.name: s.acc for s in stack.profile.subnets}
    for a in served:
        assert not any(acc[b] >= acc[a] and served[b] <= served[a] and b != a and
                       (acc[b], -served[b]) != (acc[a], -served[a]) for b in served), a
    dropped = {d["name"] for d in meta["frontier"].get("dropped_after_executor", [])}
    assert dropped | set(served) == {"s0", "s1", "s2"}


def test_stack_with_auto_executor_routes_and_restarts_from_cache(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    conf = tiny_config(ckpt, executor="auto", ort_background=False, num_subnets=2)
    stack = build_stack(conf)
    ex = stack.executor
    assert set(ex.sessions) == {"s0", "s1"}
    meta = stack.profile.meta
    paths = meta["executor"]["paths"]
    for name in ("s0", "s1"):
        rows = meta["executors"][paths[name]]["median_ms"][name]
        assert stack.profile.median_ms[name] == rows  # plans with the path that serves it
        x = torch.randn(2, *stack.runtime.input_shape())
        ref = stack.runtime.net.extract(stack.runtime.subnet(name))(x)
        torch.testing.assert_close(stack.runtime.run(x, name), ref, atol=1e-4, rtol=1e-4)
    assert set(meta["executors"]["onnxruntime"]["median_ms"]) == {"s0", "s1"}
    totals = meta["executor"]["set_batch1_ms"]
    assert meta["executor"]["fastest_for_set"] == min(totals, key=totals.get)
    again = build_stack(conf)  # a restart: sessions from disk, rows from the saved profile
    assert again.profile_reused
    assert all(s.cache_hit for s in again.executor.sessions.values())
    assert again.profile.meta["executor"]["paths"] == paths
    mem = again.runtime.memory()
    assert mem["executor"]["session_bytes"] > 0
    assert mem["executor_total_bytes"] > mem["subnetact_bytes"]


def test_recalibration_is_written_back_and_reused(tmp_path, monkeypatch, capsys):
    ckpt = tiny_checkpoint(tmp_path)
    build_stack(tiny_config(ckpt, num_subnets=2, show_progress=True))
    err = capsys.readouterr().err
    assert "BN recalibration + test accuracy" in err and "profiling" in err
    assert default_stats_path(ckpt).is_file()

    import weightshare.train.evaluate as evaluate

    def never(*_a, **_k):
        raise AssertionError("recalibrated or evaluated again")

    monkeypatch.setattr(evaluate, "recalibrate", never)
    monkeypatch.setattr(evaluate, "accuracy", never)
    second = build_stack(tiny_config(ckpt, num_subnets=2, reprofile=True))
    assert second.profile.names == ["s0", "s1"]
    default_stats_path(ckpt).write_bytes(b"garbage")  # corrupt: ignored with a warning
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="unusable"):
        build_stack(tiny_config(ckpt, num_subnets=2, reprofile=True))


def test_ready_is_false_until_the_stack_is_attached(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    slot = WorkerSlot(stage="profiling")
    app_ = create_app(slot, (1, 28, 28), 10, ServerConfig(max_request_batch=2))
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "data": [0.0] * 784}]}
    with ServerThread(app_) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/models/weightshare/ready").status_code == 503
        r = c.post("/v2/models/weightshare/infer", json=body)
        assert r.status_code == 503 and "profiling" in r.json()["error"]
        stack = tiny_stack(ckpt, num_subnets=2, max_batch=2)
        slot.attach(InferenceWorker(stack.runtime, make_policy("slackfit"), stack.profile))
        assert c.get("/v2/health/ready").status_code == 200
        r = c.post("/v2/models/weightshare/infer", json=body)
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]
    failed = WorkerSlot()
    failed.fail("no dataset")
    with ServerThread(create_app(failed, (1, 28, 28), 10)) as server:
        assert httpx.get(server.url + "/v2/health/live").status_code == 503


def test_cli_rejects_an_unknown_executor(tmp_path):
    r = CliRunner().invoke(app, ["serve", "-c", str(tmp_path / "x.pt"), "--executor", "nope"])
    assert r.exit_code == 2 and "unknown executor" in r.stderr
    assert "--ort-memory-budget-mb" in CliRunner().invoke(app, ["serve", "--help"]).stdout


def test_torch_executor_matches_every_registered_supernet(supernet):
    """Planned (MobileNetV3) or plain elastic (others): equal to the extracted model."""
    subs = {"small": supernet.space.smallest(), "large": supernet.space.largest()}
    ex = make_executor("torch", supernet, subs)
    for name, cfg in subs.items():
        x = torch.randn(2, *supernet.input_shape(cfg))
        torch.testing.assert_close(ex.run(x, name), _reference(supernet, cfg, x), atol=1e-4,
                                   rtol=1e-4)
