"""weightshare.deployment (the frontier file, naming by MACs, the checkpoint's dataset),
weightshare.timing (one loop, its statistics, the machine) and the switch-mode registry."""

from __future__ import annotations

import json
import random

import pytest
from test_serve_fixtures import tiny_checkpoint

from weightshare.checkpoint import Checkpoint, load_checkpoint
from weightshare.deployment import (
    FRONTIER_FORMAT,
    DeployedSubnet,
    FrontierError,
    FrontierPoint,
    dataset_meta,
    dataset_recipe,
    load_deployment,
    load_frontier,
    name_by_macs,
    read_frontier,
    save_frontier,
)
from weightshare.errors import WeightshareError
from weightshare.serve.backends import make_switch_backend, switch_modes
from weightshare.timing import (
    fastest,
    machine_identity,
    measure_latency,
    median_ms,
    p99_ms,
    repeat,
    same_machine,
    summarize,
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("deployment"))


@pytest.fixture(scope="module")
def subnets(ckpt):
    space = load_checkpoint(ckpt).supernet.space
    rng = random.Random(0)
    return [space.smallest(), space.largest(), space.sample(rng)]


# ----------------------------------------------------------------------- frontier file
def test_frontier_round_trip_is_the_one_format(tmp_path, subnets):
    points = [FrontierPoint(c, 70.0 + i, 69.0 + i, 1000 * (i + 1), 10, 1.5)
              for i, c in enumerate(subnets)]
    path = save_frontier(tmp_path / "f.json", points, supernet={"name": "x"},
                         extra={"latency_table": None})
    doc = json.loads(path.read_text())
    assert doc["format"] == FRONTIER_FORMAT and doc["version"] == 1
    front = read_frontier(path)
    assert front.points == points and not front.legacy
    assert front.supernet == {"name": "x"} and front.extra == {"latency_table": None}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


@pytest.mark.parametrize("shape", ["bare-list-acc", "bare-list-measured", "profile-subnets",
                                   "frontier-key"])
def test_frontier_reader_accepts_the_older_shapes(tmp_path, subnets, shape):
    entries = [{"subnet": c.to_dict(), ("measured_acc" if shape == "bare-list-measured"
                                        else "acc"): 50.0 + i} for i, c in enumerate(subnets)]
    doc = {"bare-list-acc": entries, "bare-list-measured": entries,
           "profile-subnets": {"format": "weightshare-serve-profile", "subnets": entries},
           "frontier-key": {"frontier": entries}}[shape]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    front = read_frontier(path)
    assert front.legacy
    assert [(p.subnet, p.measured_acc) for p in front.points] == [
        (c, 50.0 + i) for i, c in enumerate(subnets)]
    assert all(p.predicted_acc is None and p.macs is None for p in front.points)


@pytest.mark.parametrize("text, match", [
    ("[]", "non-empty"),
    ('{"format": "weightshare-frontier", "frontier": []}', "non-empty"),
    ('[{"acc": 3}]', "no 'subnet'"),
    ('[{"subnet": {"depths": "x"}}]', "entry 0"),
    ('{"format": "weightshare-frontier", "version": 99, "frontier": [{}]}', "newer"),
    ("{not json", "corrupt JSON"),
])
def test_frontier_reader_errors_are_user_errors(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(FrontierError, match=match) as info:
        load_frontier(path)
    assert isinstance(info.value, WeightshareError) and isinstance(info.value, ValueError)


# -------------------------------------------------------------------- naming by MACs
def test_name_by_macs_sorts_stably_and_names_from_s0():
    items = [("b", 30), ("a", 10), ("c", 30), ("d", 20)]
    assert name_by_macs(items, key=lambda x: x[1]) == [
        ("s0", ("a", 10)), ("s1", ("d", 20)), ("s2", ("b", 30)), ("s3", ("c", 30))]
    assert name_by_macs([], key=lambda x: x) == []


def test_load_deployment_names_by_macs_and_needs_accuracies(tmp_path, ckpt, subnets):
    path = tmp_path / "f.json"
    path.write_text(json.dumps([{"subnet": c.to_dict(), "acc": 60.0 + i}
                                for i, c in enumerate(subnets)]))
    net, deployed = load_deployment(ckpt, path)
    assert all(isinstance(d, DeployedSubnet) for d in deployed)
    assert [d.name for d in deployed] == ["s0", "s1", "s2"]
    assert [d.macs for d in deployed] == sorted(net.cost(c).macs for c in subnets)
    assert deployed[0].subnet == net.space.smallest() and deployed[-1].subnet == net.space.largest()
    assert {d.subnet: d.acc for d in deployed} == {c: 60.0 + i for i, c in enumerate(subnets)}
    path.write_text(json.dumps([{"subnet": subnets[0].to_dict()}]))
    with pytest.raises(FrontierError, match="no accuracy"):
        load_deployment(ckpt, path)


# ------------------------------------------------------------- the checkpoint's dataset
def _ck(train_state=None, meta=None) -> Checkpoint:
    return Checkpoint(supernet=None, train_state=train_state or {}, meta=meta or {})  # type: ignore[arg-type]


def test_dataset_recipe_reads_every_place_a_checkpoint_records_it():
    meta = dataset_meta("cifar10", data_dir="/d", seed=3, calib_size=500, test_subset=0)
    assert dataset_recipe(_ck(meta={"dataset": meta})) == {
        "dataset": "cifar10", "data_dir": "/d", "seed": 3, "calib_size": 500,
        "dataset_args": {}}
    central = {"dataset": "synthetic", "seed": 2, "calib_size": 64, "test_subset": 10}
    assert dataset_recipe(_ck({"config": central})) == central
    fed = {"dataset": "fashion-mnist", "data_root": "/f", "seed": 5, "calib_size": 100,
           "test_subset": 0, "clients": 4}
    assert dataset_recipe(_ck({"fed": {"config": fed}})) == {
        "dataset": "fashion-mnist", "data_dir": "/f", "seed": 5, "calib_size": 100}
    assert dataset_recipe(_ck()) == {}


# ------------------------------------------------------------------------ timing
def test_repeat_runs_warmup_untimed_then_at_least_runs():
    calls = []
    out = repeat(lambda: calls.append(1) or len(calls), warmup=2, runs=3)
    assert out == [3, 4, 5] and len(calls) == 5
    assert len(repeat(lambda: 0, runs=1, min_seconds=0.05)) > 1


def test_statistics():
    times = [float(x) for x in range(1, 101)]
    assert median_ms(times) == 50.5 and fastest(times) == 1.0
    assert p99_ms(times) == 99.0 and p99_ms([4.0]) == 4.0
    lat = summarize(times)
    assert (lat.median_ms, lat.p99_ms, lat.runs) == (50.5, 99.0, 100)
    measured = measure_latency(lambda: sum(range(1000)), warmup=1, runs=5)
    assert measured.runs == 5 and 0 < measured.median_ms <= measured.p99_ms


def test_machine_identity_is_checked():
    here = machine_identity()
    assert same_machine(dict(here))
    assert not same_machine({**here, "cpu": "another CPU"})
    assert not same_machine(None)


# --------------------------------------------------------------- switch-mode registry
def test_fastswitch_plugs_in_as_a_switch_mode():
    assert {"full", "delta"} <= set(switch_modes())
    with pytest.raises(ValueError, match="unknown switch mode 'half'"):
        make_switch_backend("half", None, ".")  # type: ignore[arg-type]
