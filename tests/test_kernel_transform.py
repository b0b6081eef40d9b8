"""Elastic kernels without OFA's transforms (the DepS authors' DepS and BigNAS), and file identity.

`kernel_transform=False` makes a smaller kernel the plain centre of the largest one;
files written before the option existed must still match SuperNets built with its
default (transforms on), and must not match one built without them.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from weightshare.accel.footprint import extracted_difference, subnet_footprint
from weightshare.checkpoint import load_checkpoint
from weightshare.models import create_supernet
from weightshare.search import SearchError, load_predictor
from weightshare.search.common import check_identity, supernet_identity

TINY = dict(width_mult=0.25, kernel_choices=(3, 5, 7), feature_dim=32,
            unit_widths=(16, 16, 24, 24, 32))
REFERENCE = Path(__file__).resolve().parent.parent / "checkpoints" / "reference" / "checkpoint.pt"


@pytest.fixture(scope="module")
def plain_net():
    torch.manual_seed(0)
    return create_supernet("ofa_mbv3_small", kernel_transform=False, **TINY).eval()


def test_smaller_kernels_are_the_centre_of_the_largest(plain_net):
    assert not any(".transforms." in n for n, _ in plain_net.named_parameters())
    dw = plain_net.units[0][0].dw
    w = dw.weight[:8]
    torch.testing.assert_close(dw.kernel_weight(8, 3), w[:, :, 2:5, 2:5])
    torch.testing.assert_close(dw.kernel_weight(8, 5), w[:, :, 1:6, 1:6])
    with pytest.raises(ValueError, match="kernel 4"):
        dw.kernel_weight(8, 4)
    # the same SuperNet with transforms: the chain 7 -> 5 -> 3 holds one matrix per step
    with_t = create_supernet("ofa_mbv3_small", **TINY)
    assert {n.rsplit(".", 1)[-1] for n, _ in with_t.named_parameters() if ".transforms." in n} \
        == {"7to5", "5to3"}


def test_forward_extract_and_footprint_agree_without_transforms(plain_net):
    rng = random.Random(0)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for cfg in [plain_net.space.smallest(), plain_net.space.largest()] + [
            plain_net.space.sample(rng) for _ in range(4)]:
        with torch.no_grad():
            torch.testing.assert_close(plain_net.extract(cfg)(x), plain_net(x, cfg),
                                       atol=1e-5, rtol=1e-4)
        fp = subnet_footprint(plain_net, cfg)
        params = sum(p.numel() for p in plain_net.extract(cfg).parameters())
        assert fp.numel("params") - extracted_difference(plain_net, cfg) == params
    fp = subnet_footprint(plain_net, plain_net.space.smallest())
    assert fp["units.0.0.dw.weight"][0][2:] == ((2, 5), (2, 5))  # 3x3 centre of the 7x7


def test_identity_fills_defaults_but_tells_the_option_apart(plain_net):
    torch.manual_seed(0)
    default_net = create_supernet("ofa_mbv3_small", **TINY)
    old = supernet_identity(default_net)
    old["config"].pop("kernel_transform")  # a file written before the option existed
    check_identity(old, default_net, "old.json", "latency table")
    with pytest.raises(SearchError, match="made for SuperNet"):
        check_identity(old, plain_net, "old.json", "latency table")


@pytest.mark.skipif(not REFERENCE.exists(), reason="no reference checkpoint in this checkout")
def test_reference_checkpoint_and_its_predictor_still_load():
    net = load_checkpoint(REFERENCE).supernet
    assert net.config["kernel_transform"] is True
    load_predictor(REFERENCE, net)  # its identity was written without the option


def test_train_cost_gives_each_method_its_authors_kernels():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from train_cost import authors_kernels

    elastic = {"width_mult": 0.5, "kernel_choices": [3, 5]}
    assert authors_kernels("deps", "ofa_mbv3_small", elastic)["kernel_transform"] is False
    assert authors_kernels("bignas", "ofa_mbv3_small", elastic)["kernel_transform"] is False
    assert authors_kernels("ofa", "ofa_mbv3_small", elastic)["kernel_transform"] is True
    # a fixed kernel (the cost30k preset) keeps its arguments, so its runs still resume
    fixed = {"width_mult": 0.5, "kernel_choices": [5]}
    assert authors_kernels("deps", "ofa_mbv3_small", fixed) == fixed
    assert authors_kernels("deps", "ofa_mbv3_small", {**elastic, "kernel_transform": True}
                           )["kernel_transform"] is True  # the caller's choice wins
