"""BitOps: MACs x weight bits x activation bits, expected (search) or exact (derived network).

MACs are traced, not derived by hand: one batch-1 forward pass with hooks on
every `QConv` records its output size, so any op layout is counted right.
Pools, additions and BatchNorm are not counted (they are not multiplications
of quantized operands), as is usual for BitOps.

The loss term is expressed in MBitOps (1e6 BitOps) per image of the derived
network (`BITOPS_UNIT`), so `lambda * cost` is "loss per MBitOp"; see
`expected_bitops`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops import QConv

__all__ = ["BITOPS_UNIT", "bitops", "conv_macs", "expected_bitops", "layer_bitops"]

BITOPS_UNIT = 1e6  # the loss sees BitOps / 1e6 (MBitOps per image)


def conv_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """MACs per image of every QConv of `model` (by module path), from one traced forward."""
    macs: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, QConv):
            def hook(m: QConv, _inp: object, out: Tensor, name: str = name) -> None:
                c = m.conv
                per_out = (c.in_channels // c.groups) * c.kernel_size[0] * c.kernel_size[1]
                macs[name] = int(out[0].numel()) * per_out
            hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        dev = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=dev))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return macs


def expected_bitops(model: nn.Module, macs: dict[str, int]) -> Tensor:
    """Differentiable expected BitOps of a `SearchNetwork`, in `BITOPS_UNIT`s.

    Sum over its QConvs of mixture weight x derived-network MACs x E[w bits] x E[a bits],
    where the mixture weight is softmax(alpha) x edge weight (1 outside cells' edges) and
    the expectations are under the gamma softmaxes. `macs` comes from `conv_macs` on the
    same search network (module paths of the search net).
    """
    search_paths = {id(m): n for n, m in model.named_modules() if isinstance(m, QConv)}
    total = torch.zeros((), device=next(model.parameters()).device)
    for _path, conv, weight, factor in model.weighted_convs():
        wb, ab = conv.expected_bits()
        total = total + weight * (macs[search_paths[id(conv)]] * factor / BITOPS_UNIT) * wb * ab
    return total


def layer_bitops(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, dict]:
    """Per QConv of a network with fixed bits: MACs, bits and BitOps."""
    out = {}
    modules = dict(model.named_modules())
    for name, m in conv_macs(model, input_shape).items():
        conv = modules[name]
        w, a = conv.w_bits[0], conv.a_bits[0]
        out[name] = {"macs": m, "w_bits": w, "a_bits": a, "bitops": m * w * a}
    return out


def bitops(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(BitOps, MACs) per image of a network whose QConvs each have one bit width pair."""
    rows = layer_bitops(model, input_shape).values()
    return sum(r["bitops"] for r in rows), sum(r["macs"] for r in rows)
