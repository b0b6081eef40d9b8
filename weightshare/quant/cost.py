"""BitOps: MACs x weight bits x activation bits; the search's complexity loss; exact counts.

MACs are traced, not derived by hand: one batch-1 forward pass with hooks on
every `QConv` records its output size, so any op layout is counted right.
Pools, additions and BatchNorm are not counted (they are not multiplications
of quantized operands), as is usual for BitOps.

Three quantities, kept apart:

* `complexity_loss` -- what the search minimises (times lambda) in the weight/gamma
  step, as the reference (QDARTS/model_search.py, `Network.complexity_loss` and
  `MixActivConv2d.complexity_loss`): the **unweighted** sum over every candidate conv
  of the search network of its traced (partial-channel) MACs x E[a bits] x E[w bits],
  divided by the MACs of the first searched conv. It depends on the gammas only: no
  softmax(alpha), no edge weight, so it cannot push the architecture towards pools and
  skips (the architecture step is cross-entropy only, see search.py). One difference:
  the reference's ``size_product`` is ``C_in x C_out x k^2 x H x W / stride^2`` also for
  depthwise convs (groups are not divided out, so a depthwise conv counts C times its
  MACs); we count true MACs, the same ones the reported BitOps use.
* `expected_bitops` -- a monitor, never in a loss: the BitOps the derived network would
  have under the current mixtures (softmax(alpha) x edge weight x derived MACs x E[bits]).
* `bitops` / `bitops_split` -- exact counts of a derived network. The headline count is
  the searched cells only (the reference's: its stem and classifier are float and not
  counted, `NetworkCIFAR.fetch_arch_info` sums its quantized convs only); the total adds
  the stem and classifier at their bits (32 x 32 when float).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops import QConv

__all__ = ["BITOPS_UNIT", "bitops", "bitops_split", "complexity_loss", "conv_macs",
           "expected_bitops", "is_cell_layer", "layer_bitops"]

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


def is_cell_layer(path: str) -> bool:
    """True for a conv inside the cells (searched), False for the stem and the classifier."""
    return path.split(".", 1)[0] == "cells"


def complexity_loss(model: nn.Module, macs: dict[str, int]) -> Tensor:
    """The reference's complexity loss of a `SearchNetwork` (dimensionless, see module doc).

    ``sum_i MACs_i x E[w bits]_i x E[a bits]_i / MACs_first`` over every conv in the cells
    (all candidate ops of all edges, unweighted), where MACs are those traced on the
    search network itself (partial channels: an op sees 1/k of them) and ``MACs_first``
    is the first searched conv's (cell 0's first preprocessing conv). Convs sharing one
    gamma pair are summed before the product, which gives the same value faster.
    """
    groups: dict[int, list] = {}
    first = None
    for path, conv in model.searched_convs():
        m = macs[path]
        if first is None:
            first = m
        key = id(conv.bit_gammas)
        if key in groups:
            groups[key][1] += m
        else:
            groups[key] = [conv, m]
    if first is None:
        raise ValueError("complexity_loss: the network has no searched conv")
    total = torch.zeros((), device=next(model.parameters()).device)
    for conv, m in groups.values():
        wb, ab = conv.expected_bits()
        total = total + (m / first) * wb * ab
    return total


def expected_bitops(model: nn.Module, macs: dict[str, int], *, cells_only: bool = True
                    ) -> Tensor:
    """Expected BitOps per image of the network a `SearchNetwork` would derive, in
    `BITOPS_UNIT`s (a monitor: the search does not minimise it).

    Sum over its QConvs of mixture weight x derived-network MACs x E[w bits] x E[a bits],
    where the mixture weight is softmax(alpha) x edge weight (1 outside cells' edges) and
    the expectations are under the gamma softmaxes. `macs` comes from `conv_macs` on the
    same search network (module paths of the search net). `cells_only`: count the searched
    cells only (the headline count); False adds the stem and classifier at their bits.
    """
    search_paths = {id(m): n for n, m in model.named_modules() if isinstance(m, QConv)}
    total = torch.zeros((), device=next(model.parameters()).device)
    for path, conv, weight, factor in model.weighted_convs():
        if cells_only and not is_cell_layer(path):
            continue
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


def bitops(model: nn.Module, input_shape: tuple[int, int, int], *, cells_only: bool = False
           ) -> tuple[int, int]:
    """(BitOps, MACs) per image of a network whose QConvs each have one bit width pair:
    every layer, or with `cells_only` the cells only (the reference's count)."""
    rows = [r for n, r in layer_bitops(model, input_shape).items()
            if not cells_only or is_cell_layer(n)]
    return sum(r["bitops"] for r in rows), sum(r["macs"] for r in rows)


def bitops_split(layers: dict[str, dict]) -> dict[str, int]:
    """From `layer_bitops` rows: BitOps and MACs of the cells (the headline, as the
    reference counts), of the stem + classifier, and of everything."""
    cells = [r for n, r in layers.items() if is_cell_layer(n)]
    rest = [r for n, r in layers.items() if not is_cell_layer(n)]
    return {"cells_bitops": sum(r["bitops"] for r in cells),
            "cells_macs": sum(r["macs"] for r in cells),
            "stem_classifier_bitops": sum(r["bitops"] for r in rest),
            "total_bitops": sum(r["bitops"] for r in layers.values()),
            "total_macs": sum(r["macs"] for r in layers.values())}
