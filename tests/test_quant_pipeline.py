"""nablaQDARTS end to end on tiny synthetic data: search -> genotype -> retrain -> ONNX, resume."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch

from weightshare.checkpoint import CheckpointError
from weightshare.export import ExportError
from weightshare.quant.config import QuantConfig, list_presets
from weightshare.quant.derived import DerivedNetwork
from weightshare.quant.export import export_quant_onnx
from weightshare.quant.genotype import Genotype, NetSpec, load_genotype
from weightshare.quant.retrain import load_retrained, retrain
from weightshare.quant.search import search
from weightshare.quant.state import load_state

# 192 synthetic 16x16 images: 64 for the architecture, 128 for the weights; 4 steps/epoch
FAST = ["dataset=synthetic", "dataset_args={n_train: 192, n_test: 64, image_size: 8}",
        "train_subset=null", "arch_size=64", "test_subset=null", "retrain_subset=null",
        "batch_size=32", "retrain_batch_size=32", "epochs=2", "warmup_epochs=1",
        "retrain_epochs=1", "progress=false", "lambda=0.05"]


def fast_config(*extra: str) -> QuantConfig:
    return QuantConfig.load("tiny", [*FAST, *extra])


def test_presets_load_and_full_is_the_reference():
    assert {"tiny", "small", "full"} <= set(list_presets())
    full = QuantConfig.load("full")
    assert (full.epochs, full.warmup_epochs, full.lr, full.gamma_lr, full.arch_lr) == \
        (50, 15, 0.1, 0.01, 6e-4)
    assert (full.partial_k, full.bits, full.bitops_lambda) == (4, [2, 4], 1e-4)
    assert (full.fixed_bits, full.gamma_weight_decay) == (32, 1e-3)
    with pytest.raises(ValueError, match="unknown searched bit width 3"):
        QuantConfig.load("tiny", ["bits=[2,3]"])
    with pytest.raises(ValueError, match="unknown quant option"):
        QuantConfig.load("tiny", ["colour=red"])
    with pytest.raises(ValueError, match="no quant preset"):
        QuantConfig.load("huge")


def test_search_retrain_export_end_to_end(tmp_path):
    cfg = fast_config()
    res = search(cfg, tmp_path / "s")
    assert res.summary["finished"] and res.summary["steps"] == 8
    g = load_genotype(tmp_path / "s" / "genotype.json")
    assert g == res.genotype
    assert {b for pair in g.bits.values() if pair != (32, 32) for b in pair} <= {2, 4}
    assert g.bits["stem.qconv"] == (32, 32) and g.bits["classifier"] == (32, 32)
    # the architecture is optimised only after the warm-up epoch
    assert [h["arch_on"] for h in res.summary["history"]] == [False, True]
    r = retrain(cfg, g, tmp_path / "r")
    s = r.summary
    assert s["finished"] and 0 <= s["test_acc"] <= 100 and s["bitops"] > 0
    model, _ = load_retrained(tmp_path / "r" / "retrain.pt")
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), r.model.eval()(x))
    report = export_quant_onnx(model, tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-3
    ops = Counter(n.op_type for n in onnx.load(str(report.path)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]


def _all_ops_genotype(image_size: int = 16) -> Genotype:
    spec = NetSpec(in_channels=1, num_classes=10, image_size=image_size, C=8, layers=3, steps=2)
    normal = (("sep_conv_3x3", 0), ("dil_conv_5x5", 1), ("skip_connect", 0), ("avg_pool_3x3", 2))
    reduce = (("sep_conv_5x5", 0), ("skip_connect", 1), ("max_pool_3x3", 1), ("dil_conv_3x3", 2))

    class Probe(DerivedNetwork):
        def _apply_bits(self, bits):
            self.paths = list(self.named_modules())

    from weightshare.quant.ops import QConv

    paths = [n for n, m in Probe(Genotype(spec, normal, reduce, {})).paths if isinstance(m, QConv)]
    bits = [2, 4, 8, 32]
    return Genotype(spec, normal, reduce,
                    {p: (bits[i % 4], bits[(i + 1) % 4]) for i, p in enumerate(paths)})


def test_onnx_matches_pytorch_for_every_op_and_bit_width(tmp_path):
    torch.manual_seed(0)
    model = DerivedNetwork(_all_ops_genotype())
    with torch.no_grad():  # non-trivial BN statistics and affines, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    report = export_quant_onnx(model.eval(), tmp_path / "all.onnx")
    assert report.max_abs_diff <= 1e-3
    graph = onnx.load(str(report.path)).graph
    dtypes = {i.data_type for i in graph.initializer}
    assert {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT8} <= dtypes


def test_export_refuses_a_search_mixture(tmp_path):
    g = _all_ops_genotype()
    model = DerivedNetwork(g)
    model.stem.qconv.set_bits((2, 4), (8,))
    with pytest.raises(ExportError, match="one bit width per layer"):
        export_quant_onnx(model, tmp_path / "x.onnx")


def test_search_resumes_exactly_after_a_kill(tmp_path):
    full = search(fast_config(), tmp_path / "a")
    # "killed" after 5 of 8 steps: the checkpoint of step 4 (end of epoch 0) plus one more
    part = search(fast_config("max_steps=5", "save_every_steps=1"), tmp_path / "b")
    assert not part.summary["finished"] and load_state(tmp_path / "b" / "search.pt",
                                                        "search")["step"] == 5
    with pytest.raises(FileExistsError, match="--resume"):
        search(fast_config(), tmp_path / "b")
    resumed = search(fast_config(), tmp_path / "b", resume=True)
    assert resumed.summary["finished"]
    for p, q in zip(full.network.parameters(), resumed.network.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)
    assert resumed.genotype.to_dict()["normal"] == full.genotype.to_dict()["normal"]
    with pytest.raises(ValueError, match="other settings"):
        search(fast_config("partial_k=2"), tmp_path / "b", resume=True)


def test_retrain_resume_and_corrupt_checkpoint(tmp_path):
    g = _all_ops_genotype(image_size=8).uniform(4)
    cfg = fast_config("retrain_epochs=2")
    full = retrain(cfg, g, tmp_path / "a")
    retrain(fast_config("retrain_epochs=2", "max_steps=3"), g, tmp_path / "b")
    resumed = retrain(cfg, g, tmp_path / "b", resume=True)
    assert resumed.summary["test_acc"] == pytest.approx(full.summary["test_acc"])
    ckpt = tmp_path / "b" / "retrain.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_retrained(ckpt)



def test_run_checkpoint_round_trip_and_a_misfit_names_the_network(tmp_path):
    from weightshare.quant.train_utils import restore_run, save_run
    from weightshare.train.run import Run

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    run = Run(tmp_path, "retrain.pt")
    run.restore(7, [{"epoch": 0, "step": 7}], 1.5)
    save_run(run, "retrain", 7, {"model": net, "optimizer": opt}, channels=4)
    state = load_state(tmp_path / "retrain.pt", "retrain")
    assert (state["channels"], state["step"], state["wall_s"]) == (4, 7, 1.5)

    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, momentum=0.9)
    resumed = Run(tmp_path, "retrain.pt", resume=True)
    restore_run(resumed, state, {"model": net2, "optimizer": opt2}, "this network")
    assert (resumed.step, resumed.history, resumed.wall_s) == (7, [{"epoch": 0, "step": 7}], 1.5)
    assert torch.equal(net2.weight, net.weight)
    assert torch.equal(opt2.state[net2.weight]["momentum_buffer"],
                       opt.state[net.weight]["momentum_buffer"])
    with pytest.raises(CheckpointError, match="retrain.pt does not fit this network"):
        restore_run(resumed, state, {"model": torch.nn.Linear(4, 2)}, "this network")

def test_the_architecture_step_is_cross_entropy_only(tmp_path, monkeypatch):
    """lambda moves bit widths, never operations (the reference's architect: CE only).

    The complexity loss may enter a backward pass only in the weight/gamma step (where
    the gammas take gradients); the architecture step (weights and gammas frozen) must
    never compute it, and the monitor (expected BitOps) only without autograd.
    """
    import weightshare.quant.search as search_mod

    calls = {"weight_step": 0}
    real_cost, real_monitor = search_mod.complexity_loss, search_mod.expected_bitops

    def cost(net, macs):
        if torch.is_grad_enabled():
            assert all(p.requires_grad for p in net.gamma_parameters()), \
                "complexity loss computed in the architecture step"
            calls["weight_step"] += 1
        return real_cost(net, macs)

    def monitor(net, macs, **kw):
        assert not torch.is_grad_enabled(), "expected BitOps must not enter a loss"
        return real_monitor(net, macs, **kw)

    monkeypatch.setattr(search_mod, "complexity_loss", cost)
    monkeypatch.setattr(search_mod, "expected_bitops", monitor)
    c = search(fast_config("lambda=1000", "warmup_epochs=0"), tmp_path / "c")
    assert calls["weight_step"] == c.summary["steps"] == 8
    assert all(h["arch_on"] for h in c.summary["history"])
    # and there lambda drives the gammas (only them) to 2 bits
    pairs = c.network.bit_gammas().values()
    assert all(torch.softmax(g.gamma_wt, 0)[0] > 0.9 and torch.softmax(g.gamma_act, 0)[0] > 0.9
               for g in pairs)
    trace = c.summary["trace"]
    assert trace[0]["step"] == 0 and trace[-1]["step"] == 8
    assert trace[-1]["complexity"] < 0.5 * trace[0]["complexity"]
    assert trace[-1]["expected_mbitops"] < trace[0]["expected_mbitops"]
    assert set(trace[-1]["gammas"]) == set(c.network.bit_gammas())
