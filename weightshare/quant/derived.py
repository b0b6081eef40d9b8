"""The discrete network a genotype describes, each QConv at its fixed bit widths.

Module paths mirror the search network minus the op name, so a genotype's
``bits`` keys name the derived network's QConvs directly (``stem.qconv``,
``cells.0.pre0.qconv``, ``cells.0.edges.1_0.0.qconv``, ..., ``classifier``).
`channels` may differ from the searched C (a wider retraining net keeps the
same layers and so the same bit assignment).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .genotype import Genotype, GenotypeError
from .ops import ConvBN, FactorizedReduce, QConv, make_op

__all__ = ["DerivedCell", "DerivedNetwork", "qconvs"]


def qconvs(model: nn.Module) -> dict[str, QConv]:
    """Every QConv of `model` by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QConv)}


class DerivedCell(nn.Module):
    def __init__(self, edges: tuple[tuple[str, int], ...], steps: int, C_pp: int, C_p: int,
                 C: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.pre0 = FactorizedReduce(C_pp, C) if reduction_prev else ConvBN(C_pp, C, 1)
        self.pre1 = ConvBN(C_p, C, 1)
        self.inputs = [[j for _, j in edges[2 * i:2 * i + 2]] for i in range(steps)]
        self.edges = nn.ModuleDict({
            f"{n // 2}_{j}": make_op(op, C, 2 if reduction and j < 2 else 1, affine=True)
            for n, (op, j) in enumerate(edges)
        })

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i, inputs in enumerate(self.inputs):
            states.append(sum(self.edges[f"{i}_{j}"](states[j]) for j in inputs))
        return torch.cat(states[2:], dim=1)


class DerivedNetwork(nn.Module):
    """Stem, cells of the genotype, global pooling and classifier, at the genotype's bits."""

    def __init__(self, genotype: Genotype, channels: int | None = None) -> None:
        super().__init__()
        self.genotype = genotype
        spec = genotype.spec if channels is None else replace(genotype.spec, C=int(channels))
        self.spec = spec
        self.stem = ConvBN(spec.in_channels, spec.stem_channels, 3, 1, 1, quantize_input=False)
        layout = spec.cell_channels()
        self.cells = nn.ModuleList(
            DerivedCell(genotype.reduce if reduction else genotype.normal, spec.steps, C_pp, C_p,
                        C, reduction, reduction_prev)
            for C_pp, C_p, C, reduction, reduction_prev in layout)
        self.classifier = QConv(spec.steps * layout[-1][2], spec.num_classes, 1, bias=True)
        self._apply_bits(genotype.bits)

    def _apply_bits(self, bits: dict[str, tuple[int, int]]) -> None:
        convs = qconvs(self)
        missing, extra = sorted(set(convs) - set(bits)), sorted(set(bits) - set(convs))
        if missing or extra:
            raise GenotypeError(
                "genotype bits do not match its architecture: "
                f"{len(missing)} layer(s) without bits {missing[:3]}, "
                f"{len(extra)} unknown layer(s) {extra[:3]}"
            )
        for name, (w, a) in bits.items():
            convs[name].set_bits((w,), (a,))

    def layer_bits(self) -> dict[str, tuple[int, int]]:
        return {n: (m.w_bits[0], m.a_bits[0]) for n, m in qconvs(self).items()}

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1)).flatten(1)
