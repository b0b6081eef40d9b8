"""nablaQDARTS networks, BitOps (checked by hand), genotypes and their errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from weightshare.quant.cost import bitops, conv_macs, expected_bitops, layer_bitops
from weightshare.quant.derived import DerivedNetwork, qconvs
from weightshare.quant.genotype import (
    Genotype,
    GenotypeError,
    NetSpec,
    load_genotype,
    save_genotype,
)
from weightshare.quant.ops import PRIMITIVES, QConv
from weightshare.quant.search_model import SearchNetwork

SPEC = NetSpec(in_channels=1, num_classes=10, image_size=16, C=8, layers=3, steps=2)
# every non-'none' op appears somewhere
NORMAL = (("sep_conv_3x3", 0), ("dil_conv_5x5", 1), ("skip_connect", 0), ("avg_pool_3x3", 2))
REDUCE = (("sep_conv_5x5", 0), ("skip_connect", 1), ("max_pool_3x3", 1), ("dil_conv_3x3", 2))


def _paths_from_error(g: Genotype) -> list[str]:
    class Probe(DerivedNetwork):
        def _apply_bits(self, bits):  # keep the module tree, skip the check
            self.paths = list(qconvs(self))

    return Probe(g).paths


def test_qconv_bitops_by_hand():
    conv = QConv(3, 4, 3, padding=1, w_bits=(4,), a_bits=(2,))
    model = nn.Sequential()
    model.add_module("c", conv)
    macs = conv_macs(model, (3, 8, 8))
    assert macs == {"c": 8 * 8 * 4 * 3 * 9}
    assert layer_bitops(model, (3, 8, 8))["c"]["bitops"] == 6912 * 4 * 2
    dw = nn.Sequential()
    dw.add_module("d", QConv(6, 6, 3, stride=2, padding=1, groups=6, w_bits=(8,), a_bits=(8,)))
    assert bitops(dw, (6, 8, 8)) == (4 * 4 * 6 * 9 * 64, 4 * 4 * 6 * 9)


def test_expected_bits_follow_the_gamma_softmax():
    conv = QConv(2, 2, 1, w_bits=(2, 4), a_bits=(2, 4, 8))
    with torch.no_grad():
        conv.gamma_wt.copy_(torch.tensor([0.0, math.log(3.0)]))  # probs 1/4, 3/4
        conv.gamma_act.copy_(torch.tensor([0.0, 0.0, math.log(2.0)]))  # 1/4, 1/4, 1/2
    wb, ab = conv.expected_bits()
    assert wb.item() == pytest.approx(0.25 * 2 + 0.75 * 4)
    assert ab.item() == pytest.approx(0.25 * 2 + 0.25 * 4 + 0.5 * 8)
    assert conv.chosen_bits() == (4, 8)


def test_search_network_shapes_and_parameter_groups():
    torch.manual_seed(0)
    net = SearchNetwork(SPEC, bits=(2, 4, 8))
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    n_w, n_g, n_a = (len(net.weight_parameters()), len(net.gamma_parameters()),
                     len(net.arch_parameters()))
    assert n_a == 4 and n_g > 0
    assert n_w + n_g + n_a == len(list(net.parameters()))
    assert all(p.numel() == 3 for p in net.gamma_parameters())
    assert net.alphas_normal.shape == (5, len(PRIMITIVES))  # 2 + 3 edges, 8 ops


def test_expected_bitops_equals_the_derived_network_in_the_one_hot_limit():
    """One node per cell: both its edges kept, each with edge weight 1/2 in the search net.

    With alphas and gammas saturated on one choice the expected cost must equal
    fixed layers + 1/2 x the derived network's edge layers: this checks the mixture
    weights and the partial-channel factor (k for depthwise, k^2 for dense convs).
    """
    spec = NetSpec(in_channels=1, num_classes=10, image_size=16, C=8, layers=3, steps=1)
    torch.manual_seed(0)
    net = SearchNetwork(spec, bits=(2, 4, 8), partial_k=4)
    with torch.no_grad():
        for a in (net.alphas_normal, net.alphas_reduce):
            a.zero_()
            a[:, PRIMITIVES.index("sep_conv_3x3")] = 60.0
        for b in (net.betas_normal, net.betas_reduce):
            b.zero_()
        for g in net.gamma_parameters():
            g.zero_()
            g[1] = 60.0  # 4 bits
    macs = conv_macs(net, (1, 16, 16))
    cost = expected_bitops(net, macs, cells_only=False).item() * 1e6
    cells_cost = expected_bitops(net, macs).item() * 1e6
    geno = net.derive()
    assert all(op == "sep_conv_3x3" for op, _ in geno.normal + geno.reduce)
    derived = DerivedNetwork(geno)
    rows = layer_bitops(derived, (1, 16, 16))
    edges = sum(r["bitops"] for n, r in rows.items() if ".edges." in n)
    fixed = sum(r["bitops"] for n, r in rows.items() if ".edges." not in n)
    assert {r["w_bits"] for n, r in rows.items() if ".edges." in n} == {4}
    assert cost == pytest.approx(fixed + 0.5 * edges, rel=1e-4)
    # the headline count leaves out the float stem and classifier (the reference's)
    cells_fixed = sum(r["bitops"] for n, r in rows.items()
                      if ".edges." not in n and n.startswith("cells."))
    assert cells_cost == pytest.approx(cells_fixed + 0.5 * edges, rel=1e-4)
    assert rows["stem.qconv"]["w_bits"] == rows["classifier"]["a_bits"] == 32


def test_uniform_genotype_bitops_scale_with_bits():
    paths = _paths_from_error(Genotype(SPEC, NORMAL, REDUCE, {}))
    g = Genotype(SPEC, NORMAL, REDUCE, {p: (4, 4) for p in paths})
    ops = {b: bitops(DerivedNetwork(g.uniform(b, fixed_bits=8)), (1, 16, 16))
           for b in (2, 4, 32)}
    macs = ops[32][1]
    assert ops[32][0] == macs * 32 * 32
    fixed = sum(r["macs"] for n, r in layer_bitops(DerivedNetwork(g.uniform(2)), (1, 16, 16))
                .items() if n.split(".")[0] in ("stem", "classifier"))
    for b in (2, 4):
        assert ops[b][0] == fixed * 64 + (macs - fixed) * b * b
        # default: stem and classifier float; the headline (cells only) leaves them out
        net = DerivedNetwork(g.uniform(b))
        assert bitops(net, (1, 16, 16)) == (fixed * 1024 + (macs - fixed) * b * b, macs)
        assert bitops(net, (1, 16, 16), cells_only=True) == ((macs - fixed) * b * b,
                                                             macs - fixed)


def test_genotype_round_trip(tmp_path):
    paths = _paths_from_error(Genotype(SPEC, NORMAL, REDUCE, {}))
    g = Genotype(SPEC, NORMAL, REDUCE, {p: (2 if i % 2 else 8, 4) for i, p in enumerate(paths)},
                 {"note": "x"})
    path = save_genotype(g, tmp_path / "g.json")
    back = load_genotype(path)
    assert back == g
    assert back.to_dict() == json.loads(path.read_text())
    net = DerivedNetwork(back)
    assert net.layer_bits() == back.bits
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_genotype_errors(tmp_path):
    paths = _paths_from_error(Genotype(SPEC, NORMAL, REDUCE, {}))
    good = Genotype(SPEC, NORMAL, REDUCE, {p: (4, 4) for p in paths}).to_dict()
    with pytest.raises(FileNotFoundError, match="no genotype"):
        load_genotype(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="corrupt JSON"):
        load_genotype(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(GenotypeError, match="not a genotype"):
        load_genotype(bad)
    for change, message in [
        (lambda d: d["bits"].update({paths[0]: [3, 4]}), "unknown weight bit width 3"),
        (lambda d: d["normal"].__setitem__(0, ["conv_7x7", 0]), "unknown operation"),
        (lambda d: d["normal"].__setitem__(3, ["sep_conv_3x3", 5]), "input 5"),
        (lambda d: d["spec"].update({"image_size": 30}), "multiple of 4"),
    ]:
        d = json.loads(json.dumps(good))
        change(d)
        bad.write_text(json.dumps(d))
        with pytest.raises(GenotypeError, match=message):
            load_genotype(bad)
    d = json.loads(json.dumps(good))
    d["bits"].pop(paths[0])
    with pytest.raises(GenotypeError, match="do not match its architecture"):
        DerivedNetwork(Genotype.from_dict(d))


# --------------------------------------------------- the reference's search (issue 19)
def _search_net(bits=(2, 4)) -> SearchNetwork:
    torch.manual_seed(0)
    return SearchNetwork(SPEC, bits=bits)


def test_defaults_are_the_references():
    from weightshare.quant.config import QuantConfig

    cfg = QuantConfig()
    assert (cfg.bits, cfg.fixed_bits, cfg.gamma_weight_decay) == ([2, 4], 32, 1e-3)
    net = _search_net()
    assert net.bit_choices == (2, 4)
    # stem and classifier float and not searched
    assert net.stem.qconv.w_bits == net.classifier.a_bits == (32,)
    assert net.stem.qconv.gamma_wt is None and net.classifier.gamma_act is None


def test_one_gamma_pair_per_op_edge_and_cell_shared_by_its_convs():
    net = _search_net()
    pairs = net.bit_gammas()
    n_edges = len(SPEC.reduction_layers) * 0 + 5  # 2 + 3 edges per cell
    reduction_edges_stride2 = 2 + 2  # node 0: inputs 0, 1; node 1: inputs 0, 1
    conv_ops = 4  # sep 3x3, sep 5x5, dil 3x3, dil 5x5
    # per cell: pre0 + pre1, each edge's conv ops, and skip_connect's FactorizedReduce on
    # a reduction cell's stride-2 edges
    expected = SPEC.layers * (2 + n_edges * conv_ops) + 2 * reduction_edges_stride2
    assert len(pairs) == expected
    assert "cells.1.edges.0_0.gammas.skip_connect" in pairs  # cell 1 is a reduction cell
    assert "cells.0.edges.0_0.gammas.skip_connect" not in pairs  # identity: no conv
    # the four convs of a sep_conv read the one pair of their op; distinct ops do not share
    sep = net.cells[0].edges["0_1"].ops["sep_conv_3x3"]
    convs = [m for m in sep.modules() if isinstance(m, QConv)]
    shared = net.cells[0].edges["0_1"].gammas["sep_conv_3x3"]
    assert len(convs) == 4 and all(c.bit_gammas is shared for c in convs)
    assert net.cells[0].edges["0_1"].gammas["sep_conv_5x5"] is not shared
    assert net.cells[2].edges["0_1"].gammas["sep_conv_3x3"] is not shared  # not across cells
    fr = [m for m in net.cells[2].pre0.modules() if isinstance(m, QConv)]  # after a reduction
    assert len(fr) == 2 and fr[0].bit_gammas is fr[1].bit_gammas is \
        net.cells[2].pre_gammas["pre0"]
    # each parameter once: stored under the op, not under every conv
    names = [n for n, _ in net.named_parameters() if "gamma_" in n]
    assert len(names) == 2 * expected == len(net.gamma_parameters())
    assert all(".gammas." in n or ".pre_gammas." in n for n in names)
    # init 1e-3 x randn: not all equal, small
    g = torch.cat([p.detach() for p in net.gamma_parameters()])
    assert 0 < g.abs().max() < 1e-2 and g.std() > 1e-4
    # derivation gives all convs of one op the same bits
    with torch.no_grad():
        shared.gamma_wt.copy_(torch.tensor([5.0, 0.0]))
        shared.gamma_act.copy_(torch.tensor([0.0, 5.0]))
    assert {c.chosen_bits() for c in convs} == {(2, 4)}


def test_complexity_loss_is_the_unweighted_gamma_sum():
    from weightshare.quant.cost import complexity_loss

    net = _search_net()
    macs = conv_macs(net, (1, 16, 16))
    convs = list(net.searched_convs())
    first = convs[0]
    assert first[0] == "cells.0.pre0.qconv"
    # partial channels: an edge op sees C/k = 2 of cell 0's 8 channels (16x16, stride 1)
    assert macs["cells.0.edges.0_0.ops.sep_conv_3x3.1.qconv"] == 2 * 2 * 16 * 16
    assert macs[first[0]] == 24 * 8 * 16 * 16  # stem's 3C=24 -> C=8, 1x1
    with torch.no_grad():
        by_hand = sum(macs[p] * float(c.expected_bits()[0]) * float(c.expected_bits()[1])
                      for p, c in convs) / macs[first[0]]
    cost = complexity_loss(net, macs)
    assert cost.item() == pytest.approx(by_hand, rel=1e-5)
    # gammas only: alphas and betas do not enter it, neither do the weights
    grads = torch.autograd.grad(cost, net.arch_parameters() + net.weight_parameters()[:5],
                                allow_unused=True)
    assert all(g is None for g in grads)
    with torch.no_grad():
        net.alphas_normal.normal_(0, 5)
        net.betas_reduce.normal_(0, 5)
    assert complexity_loss(net, macs).item() == pytest.approx(cost.item(), rel=1e-6)
    # every candidate conv counts in full: all at 2/2 bits it is 4 x the MAC ratio sum,
    # all at 4/4 bits 16 x, whatever the op weights
    total = sum(macs[p] for p, _ in convs) / macs[first[0]]
    for bit_idx, bb in ((0, 4), (1, 16)):
        with torch.no_grad():
            for g in net.gamma_parameters():
                g.zero_()
                g[bit_idx] = 50.0
        assert complexity_loss(net, macs).item() == pytest.approx(bb * total, rel=1e-4)


def test_pooling_ops_have_a_batchnorm_in_the_mixed_op():
    net = _search_net()
    ops = net.cells[0].edges["0_0"].ops
    for name, pool in (("max_pool_3x3", nn.MaxPool2d), ("avg_pool_3x3", nn.AvgPool2d)):
        op = ops[name]
        assert isinstance(op, nn.Sequential) and isinstance(op[0], pool)
        assert isinstance(op[1], nn.BatchNorm2d) and not op[1].affine
    x = torch.randn(4, 2, 16, 16) * 7 + 3
    out = ops["max_pool_3x3"](x)
    assert out.mean().abs() < 1e-4 and (out.var() - 1).abs() < 0.05
