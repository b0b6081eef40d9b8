"""SuperFedNAS: the pure rules (assignment, weight schedule, overlap-aware aggregation),
the recorded SubNet masks, local training's contract, and a real Flower simulation."""

from __future__ import annotations

import json
import random
import tomllib

import pytest
import torch

from weightshare.fed.algorithm import (
    LARGEST,
    RANDOM,
    SMALLEST,
    ClientUpdate,
    aggregate,
    client_weights,
    largest_weight,
    tracking_sandwich,
)
from weightshare.fed.config import FedConfig
from weightshare.fed.masks import put, shared_names, subnet_masks, take
from weightshare.models import create_supernet
from weightshare.space import SearchSpace

SMALL_ARGS = {"width_mult": 0.5, "stem_stride": 2}


# ------------------------------------------------------------------ aggregation
def _upd(masks, values, n=1, role=RANDOM):
    return ClientUpdate({k: torch.tensor(v, dtype=torch.bool) for k, v in masks.items()},
                        {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()},
                        n, role)


def test_aggregate_by_hand_vector_and_untouched():
    state = {"w": torch.tensor([10.0, 10.0, 10.0, 10.0])}
    a = _upd({"w": [1, 1, 0, 0]}, {"w": [1.0, 2.0]})
    b = _upd({"w": [1, 1, 1, 0]}, {"w": [3.0, 6.0, 9.0]})
    out = aggregate(state, [a, b], [1.0, 3.0])
    # element 0: (1*1 + 3*3)/4; element 1: (1*2 + 3*6)/4; element 2: only b; 3: untouched.
    assert out["w"].tolist() == pytest.approx([2.5, 5.0, 9.0, 10.0])
    assert state["w"].tolist() == [10.0] * 4  # input not modified


def test_aggregate_kernel_centre_and_bn_stats():
    # A 1x1x3x3 kernel: client a (kernel 3) sends all 9, client b (kernel 1) the centre only.
    k = torch.zeros(1, 1, 3, 3)
    centre = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    centre[0, 0, 1, 1] = True
    full = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    a = ClientUpdate({"k": full, "bn.running_var": torch.tensor([True, True])},
                     {"k": torch.arange(9.0), "bn.running_var": torch.tensor([2.0, 4.0])}, 30)
    b = ClientUpdate({"k": centre, "bn.running_var": torch.tensor([True, False])},
                     {"k": torch.tensor([100.0]), "bn.running_var": torch.tensor([8.0])}, 10)
    state = {"k": k, "bn.running_var": torch.ones(2)}
    out = aggregate(state, [a, b], client_weights([a, b], None))
    want = torch.arange(9.0).view(1, 1, 3, 3)
    want[0, 0, 1, 1] = (0.75 * 4.0 + 0.25 * 100.0)
    assert torch.allclose(out["k"], want)
    assert out["bn.running_var"].tolist() == pytest.approx([0.75 * 2 + 0.25 * 8, 4.0])


def test_client_weights_largest_share():
    big = _upd({"w": [1]}, {"w": [0.0]}, n=100, role=LARGEST)
    others = [_upd({"w": [1]}, {"w": [0.0]}, n=50) for _ in range(3)]
    w = client_weights([big, *others], 0.9)
    assert w[0] / sum(w) == pytest.approx(0.9)
    w = client_weights([big, *others], 0.25)  # 1/K with K = 4 and equal counts: all equal
    assert w == pytest.approx([1 / 3] * 4)
    assert client_weights(others, None) == pytest.approx([1 / 3] * 3)


def test_aggregate_rejects_wrong_mask_size():
    with pytest.raises(ValueError, match="mask of w"):
        aggregate({"w": torch.zeros(3)}, [_upd({"w": [1, 1]}, {"w": [1.0, 1.0]})], [1.0])


# ------------------------------------------------------------- schedule, assignment
def test_largest_weight_cosine_boundaries():
    r, k = 100, 8
    assert largest_weight(1, r, k) == pytest.approx(0.9)
    assert largest_weight(80, r, k) == pytest.approx(1 / k)
    assert largest_weight(100, r, k) == pytest.approx(1 / k)
    mid = largest_weight(40, r, k)
    assert 1 / k < mid < 0.9
    vals = [largest_weight(i, r, k) for i in range(1, 101)]
    assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:], strict=False))
    assert largest_weight(1, r, k, start=0.5, decay_fraction=0.5) == pytest.approx(0.5)
    assert largest_weight(50, r, k, start=0.5, decay_fraction=0.5) == pytest.approx(1 / k)


def test_tracking_sandwich_gives_largest_to_least_held():
    space = create_supernet("ofa_mbv3_small", **SMALL_ARGS).space
    held = {LARGEST: {1: 3, 2: 0, 3: 1}, SMALLEST: {1: 0, 2: 5, 3: 2}}
    out = tracking_sandwich([1, 2, 3, 4], space, held, random.Random(0))
    roles = {a.node: a.role for a in out}
    assert roles[2] == LARGEST or roles[4] == LARGEST  # both held it 0 times: first wins
    assert roles[2] == LARGEST
    assert roles[1] == SMALLEST  # 0 times among the rest
    assert sorted(roles.values()).count(RANDOM) == 2
    assert {a.subnet for a in out if a.role == LARGEST} == {space.largest()}
    assert {a.subnet for a in out if a.role == SMALLEST} == {space.smallest()}


def test_tracking_sandwich_balances_over_rounds():
    from weightshare.fed.strategy import SuperFedNAS

    net = create_supernet("ofa_mbv3_small", **SMALL_ARGS)
    strat = SuperFedNAS(FedConfig(supernet_args=SMALL_ARGS, clients=4, per_round=4), net)
    for _ in range(8):
        strat.assign([0, 1, 2, 3])
    assert sorted(strat.held[LARGEST].values()) == [2, 2, 2, 2]
    state = json.loads(json.dumps(strat.state_dict()))  # survives a JSON/weights_only round trip
    other = SuperFedNAS(FedConfig(supernet_args=SMALL_ARGS, clients=4, per_round=4), net)
    other.load_state_dict(state)
    assert other.held == strat.held
    assert other.rng.random() == strat.rng.random()


# ------------------------------------------------------------------------ masks
@pytest.mark.parametrize("name,kw", [("ofa_mbv3_small", SMALL_ARGS), ("ofa_resnet_small", {})])
def test_masks_nest_and_cover(name, kw):
    net = create_supernet(name, **kw)
    sp: SearchSpace = net.space
    big, small = subnet_masks(net, sp.largest()), subnet_masks(net, sp.smallest())
    assert set(small) <= set(big) | {n for n in shared_names(net) if "transforms" in n}
    for n, m in small.items():
        if n in big:
            assert not (m & ~big[n]).any(), n  # the smallest reads nothing the largest does not
    n_small = sum(int(m.sum()) for m in small.values())
    n_big = sum(int(m.sum()) for m in big.values())
    assert n_small < n_big
    # A state dict round trip through take/put restores exactly the masked elements.
    state = {k: v.clone() for k, v in net.state_dict().items()}
    sl = take(state, small)
    for v in state.values():
        v.zero_()
    put(state, small, sl)
    for n, m in small.items():
        assert torch.equal(state[n][m], net.state_dict()[n][m])


def test_masks_kernel_centre_for_small_kernel():
    net = create_supernet("ofa_mbv3_small", **SMALL_ARGS)
    sp = net.space
    m = subnet_masks(net, sp.smallest())  # kernel 3: reads the centre 5x5 via 7to5, then 5to3
    dw = next(v for k, v in m.items() if k.endswith("dw.weight") and v.shape[-1] == 7)
    assert dw[:, :, 1:6, 1:6].any() and not dw[:, :, 0, :].any() and not dw[:, :, :, 6].any()
    assert any(k.endswith("transforms.7to5") for k in m)


def test_local_training_changes_only_the_masked_elements():
    from weightshare.data import load_dataset
    from weightshare.fed.client import local_train

    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3_small", **SMALL_ARGS)
    ds = load_dataset("synthetic", seed=0, calib_size=32)
    sub = net.space.sample(random.Random(3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = local_train(net, sub, ds.train.subset(range(96)), ds, epochs=1, batch_size=32,
                        lr=0.1, momentum=0.9, weight_decay=1e-3, clip=1.0, seed=0)
    assert stats["num-examples"] == 96 and stats["client_macs"] == 3.0 * net.cost(sub).macs * 96
    masks = subnet_masks(net, sub)
    changed_inside = 0
    for n, after in net.state_dict().items():
        if not after.is_floating_point():
            continue
        diff = after != before[n]
        m = masks.get(n, torch.zeros_like(diff))
        assert not (diff & ~m).any(), f"{n} changed outside the SubNet's mask"
        changed_inside += int((diff & m).sum())
    assert changed_inside > 0


# ------------------------------------------------------------------------ config
def test_config_run_config_round_trip_and_errors():
    cfg = FedConfig(supernet_args=SMALL_ARGS, alpha=0.5, rounds=3, augment=False)
    rc = cfg.to_run_config()
    assert all(isinstance(v, str | int | float | bool) for v in rc.values())
    assert FedConfig.from_run_config(rc) == cfg
    with pytest.raises(ValueError, match="per_round"):
        FedConfig(clients=2, per_round=3)
    with pytest.raises(ValueError, match="mode"):
        FedConfig(mode="fedprox")


def test_fed_app_writes_a_flower_app(tmp_path):
    from weightshare.fed.app import write_flower_app

    path = write_flower_app(tmp_path / "app", FedConfig(rounds=2, alpha=1.0), tmp_path / "run")
    data = tomllib.loads(path.read_text())
    comp = data["tool"]["flwr"]["app"]["components"]
    assert comp == {"serverapp": "weightshare.fed.app:server_app",
                    "clientapp": "weightshare.fed.app:client_app"}
    assert FedConfig.from_run_config(data["tool"]["flwr"]["app"]["config"]).rounds == 2


# -------------------------------------------------------------- Flower simulation
def test_simulation_trains_resumes_and_checkpoints(tmp_path):
    from weightshare.checkpoint import load_checkpoint
    from weightshare.fed.simulate import simulate

    cfg = FedConfig(supernet_args=SMALL_ARGS, dataset="synthetic", calib_size=64, clients=3,
                    per_round=2, rounds=1, alpha=1.0, batch_size=32, eval_every=1)
    out = tmp_path / "run"
    h1 = simulate(cfg, out, parallel=1)
    assert [r["round"] for r in h1["rounds"]] == [1]
    assert h1["rounds"][0]["clients"] == 2 and h1["rounds"][0]["failures"] == 0
    first = load_checkpoint(out / "checkpoint.pt").supernet.state_dict()
    h2 = simulate(cfg.replace(rounds=2), out, parallel=1)  # resumes after round 1
    assert [r["round"] for r in h2["rounds"]] == [1, 2]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck.train_state["fed"]["round"] == 2
    assert any(not torch.equal(first[k], v) for k, v in ck.supernet.state_dict().items())
    last = h2["rounds"][-1]
    assert {"acc_largest", "acc_smallest"} <= set(last)
    sizes = json.loads((out / "clients.json").read_text())["clients"]
    assert sum(c["examples"] for c in sizes) == 512 - 64


def test_fed_cli_runs_a_simulation(tmp_path):
    from typer.testing import CliRunner

    from weightshare.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "fed", "--dataset", "synthetic", "--calib-size", "64", "--clients", "2", "--per-round",
        "2", "--rounds", "1", "--alpha", "100", "--batch-size", "32", "--set", "width_mult=0.5",
        "--set", "stem_stride=2", "--parallel", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 rounds" in res.output and "client data (Dirichlet alpha 100)" in res.output
    assert (out / "checkpoint.pt").exists()
    bad = CliRunner().invoke(app, ["fed", "--clients", "2", "--per-round", "3"])
    assert bad.exit_code == 2 and "per_round" in bad.output
