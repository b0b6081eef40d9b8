"""nablaQDARTS quantizers: values on the grid, number of levels, straight-through gradients.

2 and 4 bits use the reference's fixed HWGQ / std-scaled steps; 8 bits the reference's
per-channel min/max range (QDARTS/model_search.py, `_quant_per_channel`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightshare.quant.quantizers import (
    ACT_STEPS,
    PER_CHANNEL_BITS,
    SUPPORTED_BITS,
    WEIGHT_STEP_FACTORS,
    act_channel_scale,
    act_clip,
    check_bits,
    mixed_quantize_act,
    quantize_act,
    quantize_weight,
)

QBITS = [b for b in SUPPORTED_BITS if b != 32]
STEP_BITS = [b for b in QBITS if b not in PER_CHANNEL_BITS]  # fixed-step grids: 2, 4


def test_bit_sets():
    assert QBITS == [2, 4, 8] and STEP_BITS == [2, 4] and {8} == PER_CHANNEL_BITS


@pytest.mark.parametrize("bits", STEP_BITS)
def test_activations_lie_on_the_hwgq_grid(bits):
    x = torch.linspace(-3, 8, 20001)
    q = quantize_act(x, bits)
    step = ACT_STEPS[bits]
    idx = q / step
    assert torch.allclose(idx, idx.round(), atol=1e-4)
    assert q.min() == 0 and q.max() == pytest.approx(act_clip(bits))
    assert len(torch.unique(q)) == 2**bits
    assert (q[x < 0] == 0).all()  # the quantizer is also the ReLU
    inside = (x > 0) & (x < act_clip(bits))
    assert (q[inside] - x[inside]).abs().max() <= step / 2 + 1e-6


@pytest.mark.parametrize("bits", STEP_BITS)
def test_weights_lie_on_the_mid_rise_grid(bits):
    w = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(0))
    q = quantize_weight(w, bits)
    step = WEIGHT_STEP_FACTORS[bits] * w.std()
    k = q / step - 0.5
    assert torch.allclose(k, k.round(), atol=1e-3)
    assert k.round().min() >= -(2 ** (bits - 1)) and k.round().max() <= 2 ** (bits - 1) - 1
    levels = len(torch.unique(q))
    assert levels <= 2**bits
    assert levels == 2**bits
    assert (q.sign() == w.sign()).float().mean() > 0.99


def test_eight_bit_activations_use_each_channels_range():
    """Per input channel over (N, H, W): scale max_c / 255, the max on the top level."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g) * torch.tensor([0.1, 1.0, 10.0]).view(1, 3, 1, 1)
    q = quantize_act(x, 8)
    y = torch.relu(x)
    for c in range(3):
        scale = y[:, c].max() / 255
        idx = q[:, c] / scale
        assert torch.allclose(idx, idx.round(), atol=1e-3)
        assert idx.round().min() == 0 and idx.round().max() == 255
        assert q[:, c].max() == pytest.approx(float(y[:, c].max()), rel=1e-6)
        assert (q[:, c] - y[:, c]).abs().max() <= scale / 2 + 1e-6
    assert torch.equal(act_channel_scale(y, 8).flatten(), y.amax(dim=(0, 2, 3)) / 255)
    assert (q[x < 0] == 0).all()
    # a channel 100x larger does not coarsen the others' grid (it would per tensor)
    assert (q[:, 0] - y[:, 0]).abs().max() < 0.1 * (y.max() / 255)
    # straight-through: the ReLU's gradient, nothing clipped at the top
    xg = x.clone().requires_grad_()
    quantize_act(xg, 8).sum().backward()
    assert torch.equal(xg.grad, (x > 0).float())


def test_eight_bit_weights_use_each_output_channels_range():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g) * torch.tensor([0.01, 0.1, 1.0, 5.0]).view(4, 1, 1, 1)
    q = quantize_weight(w, 8)
    for c in range(4):
        absmax = w[c].abs().max()
        step = 2 * absmax / 255
        k = q[c] / step - 0.5
        assert torch.allclose(k, k.round(), atol=1e-3)
        assert k.round().min() >= -128 and k.round().max() <= 127
        assert q[c].abs().max() == pytest.approx(float(absmax), rel=1e-5)  # extremes kept
        assert (q[c] - w[c]).abs().max() <= step / 2 + 1e-6
    wg = w.clone().requires_grad_()
    (quantize_weight(wg, 8) * 3.0).sum().backward()
    assert torch.equal(wg.grad, torch.full_like(w, 3.0))


def test_float_is_passthrough():
    x = torch.randn(100)
    assert torch.equal(quantize_act(x, 32), torch.relu(x))
    assert quantize_weight(x, 32) is x


@pytest.mark.parametrize("bits", STEP_BITS)
def test_straight_through_gradients(bits):
    x = torch.tensor([-1.0, 0.1, 0.3, 0.77, act_clip(bits) + 1.0], requires_grad=True)
    quantize_act(x, bits).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # 1 inside the range, 0 when clipped
    w = torch.randn(50, requires_grad=True)
    (quantize_weight(w, bits) * torch.arange(50.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(50.0))  # weights: the gradient passes unchanged


@pytest.mark.parametrize("bits", [(2, 4, 8), (2, 4), (4, 32)])
def test_mixed_activation_matches_the_composed_mixture(bits):
    x1 = (torch.randn(4, 3, 5, 5) * 2).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    g1 = torch.tensor([0.3, -0.2, 0.5][:len(bits)], requires_grad=True)
    g2 = g1.detach().clone().requires_grad_()
    fused = mixed_quantize_act(x1, torch.softmax(g1, 0), bits)
    p = torch.softmax(g2, 0)
    ref = sum(pi * quantize_act(x2, b) for pi, b in zip(p, bits, strict=True))
    assert torch.allclose(fused, ref, atol=1e-6)
    w = torch.randn_like(fused)
    (fused * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(g1.grad, g2.grad, atol=1e-4)


def test_reference_steps_are_mse_optimal():
    """The reference's 2-bit weight factor is the MSE-optimal mid-rise step for a Gaussian."""
    def best(mse, lo, hi):
        grid = np.linspace(lo, hi, 81)
        return grid[int(np.argmin([mse(d) for d in grid]))]

    xs = np.linspace(-8, 8, 800_001)
    phis = np.exp(-xs**2 / 2)
    gauss2 = best(lambda d: ((xs - (np.clip(np.floor(xs / d), -2, 1) + 0.5) * d) ** 2
                             * phis).sum(), 0.9, 1.1)
    assert gauss2 == pytest.approx(WEIGHT_STEP_FACTORS[2], abs=3e-3)


@pytest.mark.parametrize("bad", [3, 0, 16, "4", 4.0, True])
def test_unknown_bit_width_is_rejected(bad):
    with pytest.raises(ValueError, match="supported: 2, 4, 8, 32"):
        check_bits(bad)
