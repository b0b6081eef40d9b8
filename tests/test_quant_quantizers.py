"""nablaQDARTS quantizers: values on the grid, number of levels, straight-through gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightshare.quant.quantizers import (
    ACT_STEPS,
    SUPPORTED_BITS,
    WEIGHT_STEP_FACTORS,
    act_clip,
    check_bits,
    mixed_quantize_act,
    quantize_act,
    quantize_weight,
)

QBITS = [b for b in SUPPORTED_BITS if b != 32]


@pytest.mark.parametrize("bits", QBITS)
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


@pytest.mark.parametrize("bits", QBITS)
def test_weights_lie_on_the_mid_rise_grid(bits):
    w = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(0))
    q = quantize_weight(w, bits)
    step = WEIGHT_STEP_FACTORS[bits] * w.std()
    k = q / step - 0.5
    assert torch.allclose(k, k.round(), atol=1e-3)
    assert k.round().min() >= -(2 ** (bits - 1)) and k.round().max() <= 2 ** (bits - 1) - 1
    levels = len(torch.unique(q))
    assert levels <= 2**bits
    assert levels == 2**bits or bits == 8  # 8 bits: 256 levels need more than 18k weights' tails
    assert (q.sign() == w.sign()).float().mean() > 0.99


def test_float_is_passthrough():
    x = torch.randn(100)
    assert torch.equal(quantize_act(x, 32), torch.relu(x))
    assert quantize_weight(x, 32) is x


@pytest.mark.parametrize("bits", QBITS)
def test_straight_through_gradients(bits):
    x = torch.tensor([-1.0, 0.1, 0.3, 0.77, act_clip(bits) + 1.0], requires_grad=True)
    quantize_act(x, bits).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # 1 inside the range, 0 when clipped
    w = torch.randn(50, requires_grad=True)
    (quantize_weight(w, bits) * torch.arange(50.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(50.0))  # weights: the gradient passes unchanged


def test_mixed_activation_matches_the_composed_mixture():
    x1 = (torch.randn(4, 3, 5, 5) * 2).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    g1 = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    g2 = g1.detach().clone().requires_grad_()
    bits = (2, 4, 8)
    fused = mixed_quantize_act(x1, torch.softmax(g1, 0), bits)
    p = torch.softmax(g2, 0)
    ref = sum(pi * quantize_act(x2, b) for pi, b in zip(p, bits, strict=True))
    assert torch.allclose(fused, ref, atol=1e-6)
    w = torch.randn_like(fused)
    (fused * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(g1.grad, g2.grad, atol=1e-4)


def test_eight_bit_steps_are_mse_optimal():
    """The 8-bit values we derived are the MSE-optimal uniform steps, as for 2/4 bits."""
    def best(mse, lo, hi):
        grid = np.linspace(lo, hi, 81)
        return grid[int(np.argmin([mse(d) for d in grid]))]

    x = np.linspace(0, 8, 400_001)
    phi = np.exp(-x**2 / 2)
    half = best(lambda d: ((x - np.minimum(np.round(x / d), 255) * d) ** 2 * phi).sum(),
                0.012, 0.022)
    xs = np.linspace(-8, 8, 800_001)
    phis = np.exp(-xs**2 / 2)
    gauss = best(lambda d: ((xs - (np.clip(np.floor(xs / d), -128, 127) + 0.5) * d) ** 2
                            * phis).sum(), 0.025, 0.036)
    assert half == pytest.approx(ACT_STEPS[8], abs=5e-4)
    assert gauss == pytest.approx(WEIGHT_STEP_FACTORS[8], abs=5e-4)
    # the reference's weight factors come out of the same criterion
    gauss2 = best(lambda d: ((xs - (np.clip(np.floor(xs / d), -2, 1) + 0.5) * d) ** 2
                             * phis).sum(), 0.9, 1.1)
    assert gauss2 == pytest.approx(WEIGHT_STEP_FACTORS[2], abs=3e-3)


@pytest.mark.parametrize("bad", [3, 0, 16, "4", 4.0, True])
def test_unknown_bit_width_is_rejected(bad):
    with pytest.raises(ValueError, match="supported: 2, 4, 8, 32"):
        check_bits(bad)
