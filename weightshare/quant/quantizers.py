"""Fake quantizers with straight-through gradients: HWGQ / std-scaled uniform at 2 and 4 bits,
per-channel min/max range at 8 bits, as the reference.

All round in the forward pass and let the gradient through unchanged in the
backward pass (straight-through estimator), so a float network can be trained
at low precision. ``bits == 32`` means "no quantization" (float passthrough).

Activations (`quantize_act`), 2 and 4 bits: half-wave Gaussian quantizer (HWGQ,
Cai et al. 2017). The input is assumed to be a batch-normalised pre-activation
(about N(0, 1)); the quantizer is also the ReLU: negative values map to 0,
positive ones to the grid ``{0, step, ..., (2**bits - 1) * step}``. Values above
the top level are clipped and get no gradient; inside the range the gradient is 1.

Weights (`quantize_weight`), 2 and 4 bits: symmetric mid-rise uniform quantizer
with ``2**bits`` levels ``(k + 0.5) * step`` for k in [-2**(bits-1), 2**(bits-1) - 1],
``step = c(bits) * std(w)``; the gradient passes straight through everywhere.

8 bits, as the reference (QDARTS/model_search.py, `_quant_per_channel`, used by
`MixQuantActiv` and `SharedMixQuantConv2d` for bit widths >= 8): the range is
measured, per channel, on the tensor being quantized, not derived from a Gaussian:

* activations: per input channel over (batch, H, W) of the ReLU'd input,
  ``scale_c = max_c / 255``, levels ``{0, scale_c, ..., 255 * scale_c}``. Like the
  reference this is measured on each batch, in evaluation too (so an 8-bit layer's
  output depends on its batch; the ONNX export computes the same range in-graph).
  The reference takes ``max_c - min_c`` as the range (its unused zero point aside);
  after the ReLU min_c is 0 unless a channel is positive everywhere in the batch,
  so we take ``max_c`` and never clip the top.
* weights: symmetric, ``scale_c = 2 * max|w_c| / 255`` per **output** channel, on
  the same mid-rise grid as 2/4 bits (256 levels, the extremes at +-max|w_c|). The
  reference reduces over dims (0, 2, 3) of the weight, i.e. one range per *input*
  channel; we use output channels because an integer conv can apply a per-output
  scale after its accumulation but not a per-input one (it does not factor out of
  the sum over input channels).

Straight-through: the range is a constant for the gradient (as the reference's
autograd function), and nothing is clipped, so the gradient is the ReLU's
(activations) or passes unchanged (weights).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ACT_STEPS",
    "PER_CHANNEL_BITS",
    "SUPPORTED_BITS",
    "WEIGHT_STEP_FACTORS",
    "act_clip",
    "check_bits",
    "mixed_quantize_act",
    "quantize_act",
    "quantize_weight",
    "weight_codes",
    "weight_step",
]

# HWGQ steps for unit-variance pre-activations: the reference's values (the
# MSE-optimal uniform steps for a half-Gaussian, as in the HWGQ paper).
ACT_STEPS: dict[int, float] = {2: 0.538, 4: 0.185}

# Weight step = c * std(w). c is the MSE-optimal step of a 2**bits-level mid-rise
# uniform quantizer for a Gaussian (Max 1960): the reference's 0.996 (2 bits) and
# 0.336 (4 bits).
WEIGHT_STEP_FACTORS: dict[int, float] = {2: 0.996, 4: 0.336}

# Bit widths whose range is measured per channel (min/max) instead of a fixed step.
PER_CHANNEL_BITS = frozenset({8})

FLOAT_BITS = 32
SUPPORTED_BITS: tuple[int, ...] = (2, 4, 8, FLOAT_BITS)


def check_bits(bits: int, what: str = "bit width") -> int:
    """`bits` if it is supported, else ValueError naming the supported widths."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(
            f"unknown {what} {bits!r}; supported: {', '.join(map(str, SUPPORTED_BITS))} "
            f"({FLOAT_BITS} = float, not quantized)"
        )
    return bits


def act_clip(bits: int) -> float:
    """The top level of the (fixed-step) activation grid at `bits` (2 or 4)."""
    return ACT_STEPS[bits] * (2**bits - 1)


def act_channel_scale(y: Tensor, bits: int) -> Tensor:
    """Per-channel step of an 8-bit activation: max over (N, H, W) of the ReLU'd `y`
    divided by 2**bits - 1, shaped (1, C, 1, 1), no gradient (a tensor of fewer than 2
    dimensions is one channel)."""
    dims = (0, *range(2, y.dim())) if y.dim() >= 2 else tuple(range(y.dim()))
    m = y.detach().amax(dim=dims, keepdim=True)
    return (m / float(2**bits - 1)).clamp_min(1e-12)


def _ste(x: Tensor, q: Tensor) -> Tensor:
    # Forward value q, gradient of x: the straight-through estimator. Written as
    # q + (x - x) rather than x + (q - x) so the value is exactly q (on the grid).
    return q.detach() + (x - x.detach())


def quantize_act(x: Tensor, bits: int) -> Tensor:
    """ReLU + HWGQ rounding to `bits` (32: plain ReLU): `_act_level`'s value with the
    straight-through gradient of its ReLU and clip."""
    y = _act_range(x, bits)
    if bits == FLOAT_BITS:
        return y
    # The levels are computed once, by `_act_grid` (as `_act_level`, which the mixed search
    # op uses), on the clipped input without autograd; the gradient is the clip's.
    return _ste(y, _act_grid(y.detach(), bits))


def weight_step(w: Tensor, bits: int) -> Tensor:
    """The quantization step of weight tensor `w` (no gradient): a 0-d tensor at 2 and 4
    bits; at 8 bits one per output channel, shaped (C_out, 1, ...) to broadcast."""
    if bits in PER_CHANNEL_BITS:
        absmax = w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
        return (2.0 * absmax / float(2**bits - 1)).clamp_min(1e-12)
    return (WEIGHT_STEP_FACTORS[bits] * w.detach().std()).clamp_min(1e-12)


def weight_codes(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Integer level index k in [-2**(bits-1), 2**(bits-1) - 1] per weight, and the step."""
    step = weight_step(w, bits)
    half = 2 ** (bits - 1)
    k = torch.floor(w.detach() / step).clamp(-half, half - 1)
    return k, step


def quantize_weight(w: Tensor, bits: int) -> Tensor:
    """Uniform mid-rise quantization of `w` with step c(bits) * std(w) (32: unchanged)."""
    if bits == FLOAT_BITS:
        return w
    k, step = weight_codes(w, bits)
    return _ste(w, (k + 0.5) * step)


def _act_range(x: Tensor, bits: int) -> Tensor:
    """The part of the activation quantizer with a gradient: the ReLU, and at the
    fixed-step widths (2, 4) the clip at the top level (above it: no gradient)."""
    if bits == FLOAT_BITS or bits in PER_CHANNEL_BITS:
        return torch.relu(x)
    return x.clamp(0.0, act_clip(bits))


def _act_grid(y: Tensor, bits: int) -> Tensor:
    """`y`, already in range (`_act_range`), rounded to the grid of `bits` (32: `y`)."""
    if bits == FLOAT_BITS:
        return y
    scale = act_channel_scale(y, bits) if bits in PER_CHANNEL_BITS else ACT_STEPS[bits]
    return torch.round(y / scale) * scale


def _act_level(x: Tensor, bits: int) -> Tensor:
    """The value of `quantize_act(x, bits)`, without its straight-through gradient: the one
    level computation, shared with `quantize_act` so the two cannot drift apart."""
    return _act_grid(_act_range(x, bits), bits)


class _MixedAct(torch.autograd.Function):
    """sum_i p_i * quantize_act(x, bits_i) with hand-written straight-through backward.

    The same value as the composed ops, but one pass instead of ~8 autograd nodes per
    bit width: the search runs this on every conv input, and on CPU the clamp
    backward alone was a fifth of a search step.
    """

    @staticmethod
    def forward(ctx, x: Tensor, probs: Tensor, bits: tuple[int, ...]) -> Tensor:  # type: ignore[override]
        ctx.bits = bits
        levels = [_act_level(x, b) for b in bits]
        # the levels are kept for d/dprobs: recomputing them costs more than the memory
        ctx.save_for_backward(x, probs, *levels)
        out = levels[0] * probs[0]
        for p, q in zip(probs[1:], levels[1:], strict=True):
            out.add_(q * p)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, probs, *levels = ctx.saved_tensors
        grad_x = grad_p = None
        if ctx.needs_input_grad[0]:
            # d/dx: p_i inside [0, clip_i], 0 outside (ReLU below, clipping above)
            slope = torch.zeros_like(x)
            for p, b in zip(probs, ctx.bits, strict=True):
                top = b == FLOAT_BITS or b in PER_CHANNEL_BITS  # nothing clipped above
                inside = x > 0 if top else (x > 0) & (x < act_clip(b))
                slope.add_(inside.to(x.dtype) * p)
            grad_x = grad * slope
        if ctx.needs_input_grad[1]:
            grad_p = torch.stack([torch.vdot(grad.reshape(-1), q.reshape(-1)) for q in levels])
        return grad_x, grad_p, None


def mixed_quantize_act(x: Tensor, probs: Tensor, bits: tuple[int, ...]) -> Tensor:
    """The mixture ``sum_i probs[i] * quantize_act(x, bits[i])`` (same values and gradients)."""
    return _MixedAct.apply(x, probs, tuple(bits))
