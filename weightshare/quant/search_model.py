"""The PC-DARTS search network with mixed-precision convolutions.

Cells follow PC-DARTS: each of ``steps`` intermediate nodes sums a weighted
`MixedOp` over every earlier state; a `MixedOp` runs the 8 candidate ops on a
1/k slice of the channels (partial-channel sampling, the rest bypass it, max
pooled in reduction cells), then shuffles channels so another slice is
searched next cell. Op weights are softmax(alphas) per edge; edge weights
are a softmax of betas over each node's incoming edges (edge normalization).
All normal cells share alphas/betas, as do all reduction cells.

Bit widths, as the reference (gatech-sysml/NablaQDARTS, QDARTS/model_search.py):
one (weight, activation) gamma pair per cell, edge and conv operation, shared by
that op's convs (`MixedOp.gammas`), and one pair per cell for each of its two
preprocessing ops (`SearchCell.pre_gammas`); unlike alphas, gammas are not shared
between cells. Pooling ops are followed by a BatchNorm (affine=False) inside the
mixed op, as the reference's `MixedOp` (and DARTS') does, so their outputs are on
the scale of the conv ops' BN outputs.

Stem and classifier hold one fixed bit width (``fixed_bits``; 32 = float, the
reference's: its stem is an ``nn.Conv2d`` and its classifier an ``nn.Linear``,
neither searched nor counted), and the stem's input (the image) is never
re-quantized.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .genotype import Genotype, NetSpec
from .ops import (
    PRIMITIVES,
    BitGammas,
    ConvBN,
    FactorizedReduce,
    QConv,
    channel_shuffle,
    make_op,
    share_gammas,
)

__all__ = ["MixedOp", "SearchCell", "SearchNetwork", "edge_keys"]


def edge_keys(steps: int) -> list[tuple[int, int]]:
    """(node, input) per edge in DARTS order: node 0's inputs 0, 1; node 1's 0, 1, 2; ..."""
    return [(i, j) for i in range(steps) for j in range(2 + i)]


class MixedOp(nn.Module):
    """All candidate ops on a 1/k channel slice, weighted by softmax(alpha) of the edge.

    ``gammas[op]``: the one bit-width pair shared by the convs of each op that has any.
    """

    def __init__(self, C: int, stride: int, k: int, bits: tuple[Sequence[int], Sequence[int]]
                 ) -> None:
        super().__init__()
        if C % k:
            raise ValueError(f"channels {C} must be divisible by partial_k={k}")
        self.k = k
        self.stride = stride
        ops = {}
        for p in PRIMITIVES:
            op = make_op(p, C // k, stride, affine=False, bits=bits)
            if "pool" in p:
                op = nn.Sequential(op, nn.BatchNorm2d(C // k, affine=False))
            ops[p] = op
        self.ops = nn.ModuleDict(ops)
        gammas = {p: share_gammas(op) for p, op in ops.items()}
        self.gammas = nn.ModuleDict({p: g for p, g in gammas.items() if g is not None})

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        c = x.shape[1] // self.k
        part, rest = x[:, :c], x[:, c:]
        mixed = sum(w * op(part) for w, op in zip(weights, self.ops.values(), strict=True))
        if self.stride == 2:
            rest = F.max_pool2d(rest, 2, 2)
        return channel_shuffle(torch.cat([mixed, rest], dim=1), self.k)


class SearchCell(nn.Module):
    def __init__(self, steps: int, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool, k: int, bits: tuple[Sequence[int], Sequence[int]]) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.pre0 = (FactorizedReduce(C_pp, C, affine=False, bits=bits) if reduction_prev
                     else ConvBN(C_pp, C, 1, affine=False, bits=bits))
        self.pre1 = ConvBN(C_p, C, 1, affine=False, bits=bits)
        pre = {"pre0": share_gammas(self.pre0), "pre1": share_gammas(self.pre1)}
        self.pre_gammas = nn.ModuleDict({n: g for n, g in pre.items() if g is not None})
        self.edges = nn.ModuleDict({
            f"{i}_{j}": MixedOp(C, 2 if reduction and j < 2 else 1, k, bits)
            for i, j in edge_keys(steps)
        })

    def forward(self, s0: Tensor, s1: Tensor, alphas: Tensor, edge_w: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for i in range(self.steps):
            s = sum(edge_w[e + j] * self.edges[f"{i}_{j}"](h, alphas[e + j])
                    for j, h in enumerate(states))
            e += len(states)
            states.append(s)
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """PC-DARTS supernet; `forward(x)` mixes everything by the current alphas, betas, gammas."""

    def __init__(self, spec: NetSpec, bits: Sequence[int] = (2, 4), fixed_bits: int = 32,
                 partial_k: int = 4) -> None:
        super().__init__()
        self.spec = spec
        self.bit_choices = tuple(int(b) for b in bits)
        self.fixed_bits = int(fixed_bits)
        self.partial_k = partial_k
        choice = (self.bit_choices, self.bit_choices)
        fixed = ((self.fixed_bits,), (self.fixed_bits,))
        self.stem = ConvBN(spec.in_channels, spec.stem_channels, 3, 1, 1, bits=fixed,
                           quantize_input=False)
        layout = spec.cell_channels()
        self.cells = nn.ModuleList(
            SearchCell(spec.steps, C_pp, C_p, C, reduction, reduction_prev, partial_k, choice)
            for C_pp, C_p, C, reduction, reduction_prev in layout)
        self.classifier = QConv(spec.steps * layout[-1][2], spec.num_classes, 1, bias=True, w_bits=fixed[0],
                                a_bits=fixed[1])
        n_edges, n_ops = len(edge_keys(spec.steps)), len(PRIMITIVES)
        # small random init as DARTS: near-uniform mixtures with ties broken
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.betas_normal = nn.Parameter(1e-3 * torch.randn(n_edges))
        self.betas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges))

    # ----------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce]

    def gamma_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.rsplit(".", 1)[-1].startswith("gamma_")]

    def bit_gammas(self) -> dict[str, BitGammas]:
        """Every searched gamma pair by module path (one per op, edge and cell; one per
        preprocessing op and cell)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, BitGammas)
                and (m.gamma_wt is not None or m.gamma_act is not None)}

    def searched_convs(self) -> Iterator[tuple[str, QConv]]:
        """(search path, QConv) of every conv inside the cells (the searched ones)."""
        for c, cell in enumerate(self.cells):
            for name, mod in cell.named_modules():
                if isinstance(mod, QConv):
                    yield f"cells.{c}.{name}", mod

    def weight_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.arch_parameters() + self.gamma_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # ------------------------------------------------------------------- mixtures
    def op_weights(self, reduction: bool) -> Tensor:
        return F.softmax(self.alphas_reduce if reduction else self.alphas_normal, dim=-1)

    def edge_weights(self, reduction: bool) -> Tensor:
        """Per edge, softmax of betas over its node's incoming edges (PC-DARTS edge norm)."""
        betas = self.betas_reduce if reduction else self.betas_normal
        out, start = [], 0
        for i in range(self.spec.steps):
            n = 2 + i
            out.append(F.softmax(betas[start:start + n], dim=-1))
            start += n
        return torch.cat(out)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        w = {r: (self.op_weights(r), self.edge_weights(r)) for r in (False, True)}
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *w[cell.reduction])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1)).flatten(1)

    def weighted_convs(self) -> Iterator[tuple[str, QConv, Tensor | float, int]]:
        """(derived-network path, QConv, mixture weight, channel factor) for every QConv.

        The mixture weight is softmax(alpha)[edge, op] * edge weight for convs inside a
        candidate op, 1 elsewhere. A searched op sees 1/k of the channels; the derived op
        sees them all, so its MACs are k times (depthwise) or k^2 times (dense) larger:
        the factor turns the traced MACs into derived-network MACs.
        """
        k = self.partial_k
        yield "stem.qconv", self.stem.qconv, 1.0, 1
        weights = {r: (self.op_weights(r), self.edge_weights(r)) for r in (False, True)}
        for c, cell in enumerate(self.cells):
            for name, mod in cell.named_modules():
                if isinstance(mod, QConv) and name.startswith("pre"):
                    yield f"cells.{c}.{name}", mod, 1.0, 1
            alphas, edge_w = weights[cell.reduction]
            for e, (i, j) in enumerate(edge_keys(cell.steps)):
                mixed = cell.edges[f"{i}_{j}"]
                for o, (op_name, op) in enumerate(mixed.ops.items()):
                    for sub, mod in op.named_modules():
                        if not isinstance(mod, QConv):
                            continue
                        conv = mod.conv
                        depthwise = conv.groups > 1 and conv.groups == conv.in_channels
                        path = f"cells.{c}.edges.{i}_{j}.{op_name}.{sub}"
                        yield path, mod, alphas[e, o] * edge_w[e], (k if depthwise else k * k)
        yield "classifier", self.classifier, 1.0, 1

    # ----------------------------------------------------------------- derivation
    def derive(self, meta: dict | None = None) -> Genotype:
        """Argmax genotype: per node the 2 strongest incoming edges (alpha x beta, 'none'
        excluded) with their best op; per kept QConv its argmax weight/activation bits."""
        none = PRIMITIVES.index("none")
        cells = {}
        with torch.no_grad():
            for reduction in (False, True):
                w = self.op_weights(reduction) * self.edge_weights(reduction)[:, None]
                w[:, none] = -1.0
                chosen, e = [], 0
                for i in range(self.spec.steps):
                    n = 2 + i
                    best_op = w[e:e + n].argmax(dim=1)
                    strength = w[e:e + n].max(dim=1).values
                    top = sorted(strength.argsort(descending=True)[:2].tolist())
                    chosen += [(PRIMITIVES[int(best_op[j])], int(j)) for j in top]
                    e += n
                cells[reduction] = chosen
            bits = {}
            for path, mod, _, _ in self.weighted_convs():
                bits[path] = mod.chosen_bits()
        kept = _kept_prefixes(self.spec, cells[False], cells[True])
        bits = {_derived_path(p): b for p, b in bits.items() if _is_kept(p, kept)}
        return Genotype(self.spec, tuple(cells[False]), tuple(cells[True]), bits, dict(meta or {}))


def _kept_prefixes(spec: NetSpec, normal: list, reduce: list) -> set[str]:
    """Search paths ``cells.c.edges.i_j.op`` of the ops the genotype keeps."""
    kept = set()
    for c in range(spec.layers):
        cell = reduce if c in spec.reduction_layers else normal
        for n, (op, j) in enumerate(cell):
            kept.add(f"cells.{c}.edges.{n // 2}_{j}.{op}")
    return kept


def _is_kept(path: str, kept: set[str]) -> bool:
    parts = path.split(".")
    if len(parts) > 3 and parts[2] == "edges":
        return ".".join(parts[:5]) in kept
    return True


def _derived_path(path: str) -> str:
    # search: cells.c.edges.i_j.<op name>.<sub>  ->  derived: cells.c.edges.i_j.<sub>
    parts = path.split(".")
    if len(parts) > 3 and parts[2] == "edges":
        return ".".join(parts[:4] + parts[5:])
    return path
