"""SubNetAct runtime, separate-model store, profiles, the serving stack and the worker thread,
on a tiny SuperNet checkpoint and the synthetic dataset."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from test_serve_fixtures import tiny_checkpoint, tiny_config, tiny_stack

from weightshare.checkpoint import load_checkpoint
from weightshare.serve.policies import make_policy
from weightshare.serve.profile import Profile
from weightshare.serve.runtime import (
    ExtractedModelStore,
    SeparateModelsRuntime,
    choose_deployment,
    load_frontier,
)
from weightshare.serve.stack import build_stack
from weightshare.serve.worker import Completion, InferenceWorker


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve-rt"))


@pytest.fixture(scope="module")
def stack(ckpt):
    s = tiny_stack(ckpt)
    yield s
    s.close()


def test_deployment_spreads_in_macs(ckpt):
    net = load_checkpoint(ckpt).supernet
    subs = choose_deployment(net, 4)
    macs = [net.cost(c).macs for c in subs]
    assert macs == sorted(macs) and len(set(subs)) == 4
    assert subs[0] == net.space.smallest() and subs[-1] == net.space.largest()


def test_stack_profile_is_saved_and_reused(ckpt, stack):
    p = stack.profile
    assert p.names == ["s0", "s1", "s2"] and p.batch_sizes == (1, 2, 4)
    assert all(0.0 <= s.acc <= 100.0 for s in p.subnets)
    assert set(p.load_ms) == set(p.names) and p.switch_us is not None
    assert p.meta["threads"] == 1 and p.meta["checkpoint"]["sha256"]
    assert stack.profile_path.is_file() and not stack.profile_reused
    again = build_stack(tiny_config(ckpt))
    assert again.profile_reused and again.profile.to_dict() == p.to_dict()
    other = build_stack(tiny_config(ckpt, max_batch=2, profile=str(ckpt) + ".b2.json"))
    assert not other.profile_reused and other.profile.batch_sizes == (1, 2)


def test_run_matches_the_extracted_model(stack):
    rt = stack.runtime
    x = torch.randn(3, *rt.input_shape())
    for name in rt.names:
        ref = rt.net.extract(rt.subnet(name))(x)
        torch.testing.assert_close(rt.run(x, name), ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no deployed SubNet"):
        rt.run(x, "s9")


def test_two_threads_run_different_subnets_at_once(stack):
    rt = stack.runtime
    x = torch.randn(2, *rt.input_shape())
    expected = {n: rt.run(x, n) for n in ("s0", "s2")}
    errors: list[str] = []
    barrier = threading.Barrier(2)

    def hammer(name: str) -> None:
        barrier.wait()
        for _ in range(15):
            if not torch.allclose(rt.run(x, name), expected[name], atol=1e-6):
                errors.append(name)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_memory_report_favours_one_supernet(stack):
    mem = stack.runtime.memory()
    assert mem["separate_total_bytes"] == sum(mem["separate_bytes"].values())
    assert mem["subnetact_bytes"] == mem["supernet_bytes"] + mem["subnet_norm_bytes"]
    assert mem["rss_bytes"] is None or mem["rss_bytes"] > mem["subnetact_bytes"]
    largest = max(mem["separate_bytes"].values())
    assert mem["supernet_bytes"] >= largest  # every SubNet is a slice of the SuperNet


def test_switch_cost_measurement(stack):
    r = stack.runtime.measure_switch_us(rounds=10)
    assert r["from"] != r["to"]
    for key in ("switch_us", "run_after_switch_us", "run_same_us", "slicing_overhead_us"):
        assert isinstance(r[key], float)
    assert r["run_same_us"] > 0


def test_separate_store_loads_from_disk_with_lru(stack, tmp_path):
    rt = stack.runtime
    store = ExtractedModelStore.from_runtime(rt, tmp_path)
    x = torch.randn(2, *rt.input_shape())
    sep = SeparateModelsRuntime(store, max_held=1, input_shape=rt.input_shape())
    for name in ("s0", "s1", "s0"):
        torch.testing.assert_close(sep.run(x, name), rt.run(x, name), atol=1e-5, rtol=1e-4)
    assert sep.loads == 3 and list(sep.held) == ["s0"] and sep.load_s > 0
    assert sep.prepare("s0") == 0.0  # already held
    assert store.measure_load_ms("s2", runs=2) > 0


def test_frontier_file(tmp_path, ckpt):
    net = load_checkpoint(ckpt).supernet
    subs = choose_deployment(net, 2)
    path = tmp_path / "frontier.json"
    path.write_text(json.dumps([{"subnet": c.to_dict(), "measured_acc": 50.0 + i}
                                for i, c in enumerate(subs)]))
    assert [a for _, a in load_frontier(path)] == [50.0, 51.0]
    stack = build_stack(tiny_config(ckpt, deploy=str(path), profile=str(tmp_path / "p.json")))
    assert [s.acc for s in stack.profile.subnets] == [50.0, 51.0]
    path.write_text('[{"acc": 3}]')
    with pytest.raises(ValueError, match="no 'subnet'"):
        load_frontier(path)


def test_worker_serves_and_drops(stack):
    worker = InferenceWorker(stack.runtime, make_policy("slackfit"), stack.profile,
                             queue_capacity=16).start()
    done: list[Completion] = []
    event = threading.Event()

    def collect(c: Completion) -> None:
        done.append(c)
        if len(done) == 5:
            event.set()

    x = torch.randn(1, *stack.runtime.input_shape())
    for _ in range(4):
        worker.submit(x, 5.0, collect)
    worker.submit(x, 1e-6, collect)  # cannot be met by any SubNet
    assert event.wait(10)
    worker.stop()
    assert not worker.alive
    statuses = sorted(c.status for c in done)
    assert statuses == ["dropped", "ok", "ok", "ok", "ok"]
    ok = [c for c in done if c.status == "ok"]
    assert all(c.output is not None and c.output.shape == (1, 10) for c in ok)
    assert all(c.subnet == stack.profile.most_accurate() for c in ok)  # 5 s of slack


def test_profile_load_errors(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a valid serving profile|not a serving profile"):
        Profile.load(bad)
    with pytest.raises(FileNotFoundError):
        Profile.load(tmp_path / "missing.json")
