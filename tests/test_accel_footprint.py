"""Footprints are exact: they count what the extracted models hold, and their set algebra holds."""

from __future__ import annotations

import pytest
import torch

from weightshare.accel.footprint import (
    Footprint,
    extracted_difference,
    subnet_footprint,
)
from weightshare.models import create_supernet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_supernet("ofa_mbv3_small", width_mult=0.25, kernel_choices=(3, 5),
                           feature_dim=32, unit_widths=(16, 16, 24, 24, 32)).eval()


def _extracted_counts(model: torch.nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers()
                if n.endswith(("running_mean", "running_var")))
    return params, stats


def _subnets(net):
    return [net.space.smallest(), net.space.largest()] + [
        net.space.sample(__import__("random").Random(i)) for i in range(6)]


def test_params_and_stats_match_extracted_model(net):
    for cfg in _subnets(net):
        fp = subnet_footprint(net, cfg)
        params, stats = _extracted_counts(net.extract(cfg))
        assert fp.numel("params") - extracted_difference(net, cfg) == params
        assert fp.numel("stats") == stats
        assert net.cost(cfg).params == params


def test_own_bn_stats_are_named_per_subnet(net):
    cfg = net.space.smallest()
    shared = subnet_footprint(net, cfg)
    net.set_subnet_stats(cfg, {k: (torch.zeros(1), torch.ones(1)) for k in ()})
    try:
        own = subnet_footprint(net, cfg)
    finally:
        net.subnet_norms.clear()
    assert own.numel("stats") == shared.numel("stats")
    assert all(n.startswith("subnet_norms.") for n in own if n.endswith((".mean", ".var")))
    assert (own & shared).numel("stats") == 0


def test_set_algebra(net):
    small = subnet_footprint(net, net.space.smallest())
    large = subnet_footprint(net, net.space.largest())
    assert small & small == small
    assert (small - small).numel() == 0
    assert (large - small).numel() == large.numel() - (large & small).numel()
    # A smaller SubNet reads a subset except the transforms, which only it needs.
    assert (small - large).numel() == (small - large).numel("transforms") > 0
    assert (large | small).numel() == large.numel() + (small - large).numel()
    assert large.nbytes(8) == large.numel()
    assert large.nbytes(32) == 4 * large.numel()


def test_kernel_region_is_the_next_size_centre(net):
    cfg = net.space.smallest()
    fp = subnet_footprint(net, cfg)
    box = fp["units.0.0.dw.weight"][0]
    assert box[2:] == ((1, 4), (1, 4))  # 3x3 centre of the 5x5 kernel
    assert "units.0.0.dw.transforms.5to3" in fp


def test_box_difference_is_disjoint_and_exact():
    a = Footprint({"t": [((0, 4), (0, 4))]})
    b = Footprint({"t": [((1, 3), (1, 3))]})
    d = a - b
    assert d.numel() == 12
    assert (d & b).numel() == 0
    assert (d | b) == a


def test_resnet_footprint_matches():
    net = create_supernet("ofa_resnet_small") if "ofa_resnet_small" in __import__(
        "weightshare.models", fromlist=["list_supernets"]).list_supernets() else None
    if net is None:
        pytest.skip("no small ResNet registered")
    cfg = net.space.smallest()
    fp = subnet_footprint(net, cfg)
    params, stats = _extracted_counts(net.extract(cfg))
    assert fp.numel("params") == params and fp.numel("stats") == stats
