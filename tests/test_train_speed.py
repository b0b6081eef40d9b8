"""The training speed settings change the layout of the arithmetic, not what is computed.

channels_last against NCHW and a float64 reference: outputs to fp32 rounding,
gradients within a rounding tolerance explained in the test below.
bf16 autocast (an option on CPU, the default on CUDA) trains and resumes exactly.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from test_train import tiny_config

import weightshare as ws
from weightshare.train import TrainConfig, train
from weightshare.train.precision import resolve_precision, to_memory_format

SUBNETS = ("largest", "smallest", "random")


def _subnet(space, which):
    if which == "random":
        return space.sample(random.Random(3))
    return getattr(space, which)()


def _grads(net, x, y, subnet):
    net.zero_grad(set_to_none=True)
    out = net(x, subnet, dropout=0.0)
    F.cross_entropy(out, y).backward()
    return out.detach(), {k: p.grad.detach().clone() for k, p in net.named_parameters()
                          if p.grad is not None}


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    net = ws.create_supernet("ofa_mbv3_small", width_mult=0.5, kernel_choices=[3, 5],
                             feature_dim=128)
    return net.to(dtype).train()


def _rel_l2(got: dict, exact: dict) -> float:
    num = sum(float((got[k].double() - exact[k]).norm()) ** 2 for k in exact)
    den = sum(float(exact[k].norm()) ** 2 for k in exact)
    return (num / den) ** 0.5


@pytest.mark.parametrize("which", SUBNETS)
def test_channels_last_matches_nchw_within_fp32_rounding(which):
    """Both fp32 layouts against a float64 computation of the same step.

    Measured here: NCHW's gradient is ~1e-5 (relative L2 over all parameters) from
    float64, channels_last's ~5e-3. The difference is rounding, not a bug: oneDNN's
    NHWC batch-norm backward sums a channel's N*H*W terms in a different order, and
    those sums nearly cancel where a BN feeds the residual stream (the next BN
    removes the gradient's mean), so the relative error grows there. 1e-2 is still
    two orders of magnitude below a minibatch gradient's own noise and below bf16
    autocast's rounding; a bug (a wrong slice, a lost layer) gives errors of order 1.
    """
    nchw, cl, exact = _net(), _net(), _net(torch.float64)
    cl.load_state_dict(nchw.state_dict())
    exact.load_state_dict({k: v.double() if v.is_floating_point() else v
                           for k, v in nchw.state_dict().items()})
    prec = resolve_precision(torch.device("cpu"), "off", channels_last=True)
    to_memory_format(cl, prec)
    assert cl.stem.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    subnet = _subnet(nchw.space, which)
    out_a, g_a = _grads(nchw, x, y, subnet)
    out_b, g_b = _grads(cl, prec.input(x), y, subnet)
    out_e, g_e = _grads(exact, x.double(), y, subnet)
    assert g_a.keys() == g_b.keys() == g_e.keys() and len(g_a) > 20
    fwd_err = float((out_b.double() - out_e).norm() / out_e.norm())
    assert fwd_err < 1e-4  # measured ~2e-5 (NCHW ~3e-6): BN's batch variance, same cause
    assert _rel_l2(g_a, g_e) < 1e-4
    assert _rel_l2(g_b, g_e) < 1e-2
    # eval mode (running statistics, the serving path) agrees as closely as fp32 allows
    nchw.eval(), cl.eval()
    with torch.no_grad():
        torch.testing.assert_close(cl(prec.input(x), subnet), nchw(x, subnet), rtol=1e-4, atol=1e-4)


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision(cpu).dtype is None  # measured slower in bf16 on this CPU
    assert resolve_precision(cpu, "bf16").dtype is torch.bfloat16
    assert not resolve_precision(cpu, "bf16").needs_scaler
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        resolve_precision(cpu, "fp16")
    with pytest.raises(ValueError, match="choose from"):
        resolve_precision(cpu, "fp8")
    with pytest.raises(ValueError, match="amp="):
        TrainConfig(amp="half")
    assert TrainConfig.load("tiny", ["amp=off"]).amp == "off"  # YAML's `off` is false


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler needs CUDA")
def test_fp16_uses_a_gradient_scaler_on_cuda():
    prec = resolve_precision(torch.device("cuda"), "fp16")
    assert prec.needs_scaler and prec.scaler() is not None


def _final_weights(path):
    from weightshare.checkpoint import load_checkpoint

    return load_checkpoint(path).supernet.state_dict()


def test_bf16_training_resumes_exactly(tmp_path):
    common = dict(method="deps", amp="bf16", epochs=2, eval_spread=0, save_every_steps=3)
    ref = train(tiny_config(tmp_path / "ref", **common))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()
              if '"kind": "train"' in line]
    assert len(losses) == 16 and all(torch.isfinite(torch.tensor(losses)))
    # autocast really ran: the same run in fp32 ends at other (but nearby) weights
    fp32 = train(tiny_config(tmp_path / "fp32", **{**common, "amp": "off"})).supernet.state_dict()
    bf16 = ref.supernet.state_dict()
    diff = sum(float((bf16[k] - fp32[k]).abs().sum()) for k in fp32 if fp32[k].is_floating_point())
    size = sum(float(fp32[k].abs().sum()) for k in fp32 if fp32[k].is_floating_point())
    assert 0 < diff / size < 0.1
    cut = tiny_config(tmp_path / "cut", max_steps=11, **common)
    train(cut)
    train(tiny_config(tmp_path / "cut", **common), resume=True)
    a, b = _final_weights(tmp_path / "ref" / "checkpoint.pt"), _final_weights(tmp_path / "cut" / "checkpoint.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert ref.summary["acc"] == json.loads((tmp_path / "cut" / "results.json").read_text())["acc"]
