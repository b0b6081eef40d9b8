"""A partition of the deployed SubNets' footprints into disjoint cells, for fast simulation.

Every region boundary of every footprint cuts its tensor into a grid; the grid
boxes covered by some footprint are the cells. Each footprint is then exactly a
set of cell ids, so the simulator works with integer sets and byte counts
instead of box arithmetic. Cell ids follow the footprints' tensor order (layer
order), which is also the order weights stream in during a query.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .footprint import Box, Footprint

__all__ = ["CellIndex"]


@dataclass(frozen=True)
class CellIndex:
    """cells[i] = (tensor, box); sets[name] = the cell ids of that footprint, in stream order."""

    cells: tuple[tuple[str, Box], ...]
    elements: tuple[int, ...]
    sets: Mapping[str, tuple[int, ...]]

    @classmethod
    def build(cls, footprints: Mapping[str, Footprint]) -> CellIndex:
        order: list[str] = []
        cuts: dict[str, list[set[int]]] = {}
        for fp in footprints.values():
            for name, boxes in fp.items():
                if name not in cuts:
                    order.append(name)
                    cuts[name] = [set() for _ in boxes[0]]
                for box in boxes:
                    for d, (a, b) in enumerate(box):
                        cuts[name][d].update((a, b))
        cells: list[tuple[str, Box]] = []
        elements: list[int] = []
        per_tensor: dict[str, list[int]] = {}
        for name in order:
            edges = [sorted(c) for c in cuts[name]]
            spans = [list(zip(e, e[1:], strict=False)) for e in edges]
            for box in itertools.product(*spans):
                per_tensor.setdefault(name, []).append(len(cells))
                cells.append((name, tuple(box)))
                n = 1
                for a, b in box:
                    n *= b - a
                elements.append(n)
        sets: dict[str, tuple[int, ...]] = {}
        for key, fp in footprints.items():
            ids = []
            for name in order:
                for cid in per_tensor.get(name, ()):
                    cbox = cells[cid][1]
                    if any(_inside(cbox, b) for b in fp.get(name, ())):
                        ids.append(cid)
            sets[key] = tuple(ids)
        return cls(tuple(cells), tuple(elements), sets)

    def nbytes(self, ids: Sequence[int] | set[int] | frozenset[int], bits: int) -> int:
        return -(-sum(self.elements[i] for i in ids) * bits // 8)

    def cell_bytes(self, bits: int) -> list[float]:
        """Bytes per cell (fractional at sub-byte precisions, so sums stay exact)."""
        return [e * bits / 8 for e in self.elements]


def _inside(cell: Box, box: Box) -> bool:
    # Cells never straddle a footprint boundary, so overlap means containment.
    return all(a <= c0 and c1 <= b for (c0, c1), (a, b) in zip(cell, box, strict=True))
