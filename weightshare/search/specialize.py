"""Glue shared by the `search` / `frontier` commands and the benchmark.

Which data a checkpoint was trained on, where accuracy comes from (the fitted
predictor, or measurement on the held-out half of calib), and one search per
target with the infeasibility check first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .nsga import AccuracyFn, Candidate, Evaluator, SearchResult, nsga2_search, require_feasible
from .predictor import holdout_split, load_predictor
from .targets import Target, check_feasible

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..data import Dataset
    from ..models import SuperNet
    from ..space import SubnetConfig

__all__ = ["TargetResult", "dataset_for", "accuracy_fn", "specialize_targets"]


def dataset_for(ck: Checkpoint, name: str | None = None,
                root: str | os.PathLike | None = None) -> Dataset:
    """The dataset a checkpoint was trained on (its saved training config), unless named.

    The same seed and calib size give the same calib / test images as training.
    """
    from ..data import load_dataset

    cfg = dict(ck.train_state.get("config") or {})
    if name is not None and name != cfg.get("dataset", name):
        cfg = {}  # another dataset: its training options do not apply
    return load_dataset(
        name or cfg.get("dataset", "fashion-mnist"),
        root if root is not None else cfg.get("data_dir"),
        calib_size=cfg.get("calib_size"), seed=int(cfg.get("seed", 0)),
        test_subset=cfg.get("test_subset"), **dict(cfg.get("dataset_args") or {}),
    )


def measured_accuracy(net: SuperNet, dataset: Dataset, *,
                      device: str | torch.device = "cpu") -> AccuracyFn:
    """Accuracy measured like the predictor's labels: BN on half of calib, top-1 on the other."""
    from ..train.evaluate import accuracy, recalibrate

    bn_data, eval_set = holdout_split(dataset)

    def fn(subnets: Sequence[SubnetConfig]) -> list[float]:
        out = []
        for cfg in subnets:
            had = net.subnet_norms.get(cfg)
            recalibrate(net, cfg, bn_data, device=device)
            out.append(accuracy(net, cfg, dataset, eval_set, device=device))
            if had is None:
                net.subnet_norms.pop(cfg, None)
            else:
                net.subnet_norms[cfg] = had
        return out

    return fn


def accuracy_fn(net: SuperNet, checkpoint: str | os.PathLike, *, measured: bool = False,
                dataset: Dataset | None = None,
                device: str | torch.device = "cpu") -> tuple[AccuracyFn, str]:
    """(accuracy function, a word saying its source) for searching `net`."""
    if measured:
        if dataset is None:
            raise ValueError("measured accuracy needs a dataset")
        return measured_accuracy(net, dataset, device=device), "measured"
    pred = load_predictor(checkpoint, net)
    return pred.predict, f"predicted ({pred.kind})"


@dataclass
class TargetResult:
    target: Target
    result: SearchResult
    best: Candidate
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.target.name, "constraint": self.target.constraints,
                "subnet": self.best.subnet.to_dict(), "predicted_acc": self.best.acc,
                **self.best.costs, "evaluations": self.result.evaluations,
                "search_s": self.seconds}


def specialize_targets(net: SuperNet, evaluator: Evaluator, targets: Sequence[Target], *,
                       objective: str | None = None, pop_size: int = 100, generations: int = 50,
                       seed: int = 0, progress: bool = False) -> list[TargetResult]:
    """One constrained NSGA-II per target (all sharing `evaluator`); its most accurate SubNet.

    Every target is checked against the smallest SubNet's costs first, so an
    impossible one fails before any search runs.
    """
    import time

    smallest = evaluator.costs(net.space.smallest())
    for t in targets:
        check_feasible(t, smallest)
    out = []
    for t in targets:
        t0 = time.perf_counter()
        # Minimizing the capped cost spreads the population along the cap it must meet.
        obj = objective or next(iter(t.constraints))
        res = nsga2_search(net.space, evaluator, objective=obj, constraints=t.constraints,
                           pop_size=pop_size, generations=generations, seed=seed,
                           progress=progress)
        require_feasible(res, f"the search for target {t.name!r}")
        out.append(TargetResult(t, res, res.best(), time.perf_counter() - t0))
    return out
