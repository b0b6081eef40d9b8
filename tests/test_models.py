"""Every registered SuperNet: extraction is exact, costs are exact, reordering is safe."""

from __future__ import annotations

import copy
import random
import threading

import pytest
import torch
from helpers import build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightshare as ws
from weightshare.metrics import count_macs_params
from weightshare.nn import StatsRecorder
from weightshare.nn.layers import NormContext

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
FAST = settings(max_examples=8, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _close(net: ws.SuperNet, cfg: ws.SubnetConfig, atol: float = 1e-5) -> None:
    x = torch.randn(3, *net.input_shape(cfg), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x, cfg)
        got = net.extract(cfg)(x)
    assert got.shape == (3, net.num_classes)
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)


def test_registry_lists_the_required_supernets():
    assert {"ofa_mbv3", "ofa_mbv3_small", "ofa_resnet_small"} <= set(ws.list_supernets())


def test_unknown_supernet_and_argument_errors():
    with pytest.raises(ValueError, match="registered: .*ofa_mbv3_small"):
        ws.create_supernet("nope")
    with pytest.raises(ValueError, match="unknown argument.*allowed"):
        ws.create_supernet("ofa_mbv3_small", colour="red")


def test_small_default_is_cpu_sized():
    net = ws.create_supernet("ofa_mbv3_small")
    assert net.cost(net.space.largest()).macs < 100e6
    assert net.space.default_resolution == 28 and net.in_channels == 1


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_extract_matches_supernet_corners(supernet, which):
    _close(supernet, getattr(supernet.space, which)())


@FAST
@given(seed=SEEDS)
def test_extract_matches_supernet_random(supernet, seed):
    _close(supernet, supernet.space.sample(random.Random(seed)))


def test_extract_uses_subnet_norm_statistics(supernet):
    cfg = supernet.space.sample(random.Random(3))
    net = copy.deepcopy(supernet)
    x = torch.randn(8, *net.input_shape(cfg))
    rec = StatsRecorder()
    with torch.no_grad():
        before = net(x, cfg)
        net(x, cfg, norm=NormContext(recorder=rec))
    net.set_subnet_stats(cfg, rec.result())
    with torch.no_grad():
        after = net(x, cfg)
    assert not torch.allclose(before, after)  # the SubNet's own statistics are in use
    _close(net, cfg)
    other = net.space.largest()
    with torch.no_grad():  # other SubNets still run on the shared statistics
        torch.testing.assert_close(net(x, other), supernet(x, other))


@FAST
@given(seed=SEEDS)
def test_analytic_cost_equals_counted(supernet, seed):
    cfg = supernet.space.sample(random.Random(seed))
    macs, params = count_macs_params(supernet.extract(cfg), supernet.input_shape(cfg))
    cost = supernet.cost(cfg)
    assert (cost.macs, cost.params) == (macs, params)


def test_cost_is_monotone_and_fast(supernet):
    sp = supernet.space
    assert supernet.cost(sp.smallest()).macs < supernet.cost(sp.largest()).macs
    rng = random.Random(0)
    cfgs = [sp.sample(rng) for _ in range(2000)]
    import time

    t0 = time.perf_counter()
    for c in cfgs:
        supernet.cost(c)
    # generous bound: 100k calls must fit a search; 2k calls well under a second
    assert time.perf_counter() - t0 < 1.0


def test_reorder_keeps_full_width_subnets_and_sorts(supernet):
    net = copy.deepcopy(supernet)
    sp = net.space
    rng = random.Random(5)
    wide = [sp.largest()]
    for _ in range(3):  # random depth/kernel, every block at the largest expand (and width)
        c = sp.sample(rng)
        wide.append(ws.SubnetConfig(c.depths, (sp.expand_choices[-1],) * len(c.expands),
                                    c.kernels, (sp.width_choices[-1],) * len(c.widths) if c.widths else (),
                                    c.resolution))
    x = torch.randn(2, *net.input_shape())
    with torch.no_grad():
        before = [net(x, c) for c in wide]
    narrow = sp.smallest()
    with torch.no_grad():
        narrow_before = net(x, narrow)
    net.reorder_channels()
    with torch.no_grad():
        for c, b in zip(wide, before, strict=True):
            torch.testing.assert_close(net(x, c), b, atol=1e-5, rtol=1e-4)
        narrow_after = net(x, narrow)
    assert not torch.allclose(narrow_before, narrow_after)  # narrow SubNets now use other channels
    for block in net.modules():
        if isinstance(block, ws.nn.ElasticMBConv) and block.has_expand:
            imp = block.project.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])
        if isinstance(block, ws.nn.ElasticBottleneck):
            imp = block.conv3.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])



def assert_reorder_moves_optimizer_state(net: ws.SuperNet) -> None:
    """Each weight's momentum starts as a copy of it; reordering must keep the two together
    (and move at least one weight, or nothing was tested)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        opt.state[p]["momentum_buffer"] = p.detach().clone()
    net.reorder_channels(opt)
    for p in net.parameters():
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], p.detach(), rtol=0, atol=0)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def test_reorder_moves_the_optimizer_state_with_the_weights(supernet):
    assert_reorder_moves_optimizer_state(copy.deepcopy(supernet))

def test_bad_input_shape_is_a_clear_error(supernet):
    cfg = supernet.space.smallest()
    bad = torch.randn(2, supernet.in_channels + 1, 16, 16)
    with pytest.raises(ValueError, match="expects input of shape"):
        supernet(bad, cfg)


def test_unknown_subnet_is_rejected(supernet):
    sp = supernet.space
    cfg = sp.largest()
    bad = ws.SubnetConfig(tuple(d + 5 for d in cfg.depths[:1]) + cfg.depths[1:],
                          cfg.expands + (cfg.expands[0],) * 5, cfg.kernels + (cfg.kernels[0],) * 5,
                          cfg.widths, cfg.resolution)
    with pytest.raises(ValueError, match="depths\\[0\\]"):
        supernet(torch.randn(1, *supernet.input_shape()), bad)
    with pytest.raises(ValueError):
        supernet.extract(bad)


def test_forward_keeps_no_state_and_is_thread_safe():
    net = build("ofa_mbv3_small")
    sp = net.space
    cfgs = [sp.largest(), sp.smallest()]
    x = torch.randn(4, *net.input_shape())
    with torch.no_grad():
        want = [net(x, c) for c in cfgs]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                with torch.no_grad():
                    torch.testing.assert_close(net(x, cfgs[i]), want[i])
        except BaseException as err:  # noqa: BLE001 - reported to the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i % 2,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # eval forward mutated nothing


def test_training_forward_updates_only_sliced_shared_stats():
    net = build("ofa_mbv3_small").train()
    sp = net.space
    before = net.units[0][0].expand_bn.running_mean.clone()
    net(torch.randn(4, *net.input_shape()), sp.smallest())
    after = net.units[0][0].expand_bn.running_mean
    used = net.units[0][0].hidden_channels(sp.expand_choices[0])
    assert not torch.equal(before[:used], after[:used])
    assert torch.equal(before[used:], after[used:])


def test_dropout_argument_only_in_training():
    net = build("ofa_mbv3_small")
    x = torch.randn(4, *net.input_shape())
    cfg = net.space.largest()
    with torch.no_grad():
        torch.testing.assert_close(net(x, cfg, dropout=0.5), net(x, cfg))
        net.train()
        torch.manual_seed(0)
        a = net(x, cfg, dropout=0.5)
        torch.manual_seed(1)
        b = net(x, cfg, dropout=0.5)
        net.eval()
    assert not torch.allclose(a, b)
