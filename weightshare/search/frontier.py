"""The accuracy-vs-cost frontier: re-measured Pareto SubNets, and its plot.

The search ranks SubNets by predicted accuracy; `measure_frontier` then gives
every Pareto SubNet its own BN statistics (recalibrated on ``calib``) and its
true top-1 on the test split. The file format (`FrontierPoint`, the one reader
`load_frontier` and the one atomic writer `save_frontier`) belongs to
`weightshare.deployment`, since serving, accel and fed read it too; it is
re-exported here. `latency_ms` is the latency table's prediction (null without
a table).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..deployment import (
    FRONTIER_FORMAT,
    FRONTIER_VERSION,
    FrontierPoint,
    load_frontier,
    save_frontier,
)
from ..io import atomic_path
from .nsga import Candidate

if TYPE_CHECKING:
    import torch

    from ..data import Dataset
    from ..models import SuperNet

__all__ = ["FrontierPoint", "measure_frontier", "measured_pareto", "save_frontier",
           "load_frontier", "plot_frontier"]

FORMAT = FRONTIER_FORMAT  # kept for existing callers
VERSION = FRONTIER_VERSION


def _point(c: Candidate, measured: float | None) -> FrontierPoint:
    return FrontierPoint(c.subnet, c.acc, measured, int(c.costs["macs"]), int(c.costs["params"]),
                         c.costs.get("latency_ms"))


def measure_frontier(net: SuperNet, candidates: Sequence[Candidate], dataset: Dataset | None, *,
                     device: str | torch.device = "cpu", progress: bool = False
                     ) -> list[FrontierPoint]:
    """Recalibrate each SubNet's BN on calib (kept on `net`) and measure test top-1.

    With `dataset` None, nothing is measured (`measured_acc` stays None).
    """
    if dataset is None:
        return [_point(c, None) for c in candidates]
    from ..train.evaluate import accuracy, recalibrate

    it: Sequence[Candidate] = candidates
    if progress:
        from ..progress import progress as tqdm

        it = tqdm(candidates, desc="re-measure", unit="subnet", leave=False)
    out = []
    for c in it:
        recalibrate(net, c.subnet, dataset, device=device)
        out.append(_point(c, accuracy(net, c.subnet, dataset, device=device)))
    return out


def measured_pareto(points: Sequence[FrontierPoint], cost: str = "macs"
                    ) -> tuple[list[FrontierPoint], list[FrontierPoint]]:
    """(kept, dropped): the points no other point beats in *measured* accuracy at no more `cost`.

    The search's Pareto set is Pareto in *predicted* accuracy; a predictor that ranks
    SubNets less well than they differ leaves many of them dominated once measured, and
    a dominated SubNet is never worth deploying. Kept points are ordered by cost.
    """
    from .nsga import non_dominated

    if any(p.measured_acc is None or getattr(p, cost) is None for p in points):
        raise ValueError(f"measured_pareto needs measured_acc and {cost} on every point")
    idx = set(non_dominated([(-p.measured_acc, getattr(p, cost)) for p in points]))
    kept = sorted((p for i, p in enumerate(points) if i in idx), key=lambda p: getattr(p, cost))
    return kept, [p for i, p in enumerate(points) if i not in idx]


def plot_frontier(points: Sequence[FrontierPoint], path: str | os.PathLike, *,
                  title: str = "", baseline: Sequence[FrontierPoint] = ()) -> Path:
    """Accuracy vs latency (when known) and vs MACs; measured solid, predicted hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_spec = [("macs", "MACs (M)", 1e-6)]
    if points and all(p.latency_ms is not None for p in points):
        axes_spec.insert(0, ("latency_ms", "predicted latency (ms)", 1.0))
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(5.5 * len(axes_spec), 4), squeeze=False)
    for ax, (attr, label, scale) in zip(axes[0], axes_spec, strict=True):
        pts = sorted(points, key=lambda p: getattr(p, attr))
        xs = [getattr(p, attr) * scale for p in pts]
        ax.plot(xs, [p.predicted_acc for p in pts], "o--", mfc="none", label="predicted")
        if any(p.measured_acc is not None for p in pts):
            m = [(x, p.measured_acc) for x, p in zip(xs, pts, strict=True)
                 if p.measured_acc is not None]
            ax.plot(*zip(*m, strict=True), "s-", label="measured (test, after BN recal)")
        if baseline and all(getattr(p, attr) is not None for p in baseline):
            b = sorted(baseline, key=lambda p: getattr(p, attr))
            ax.plot([getattr(p, attr) * scale for p in b], [p.predicted_acc for p in b], "x:",
                    label="random search (predicted)")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
