"""Glue shared by the `search` / `frontier` commands and the benchmark.

Where accuracy comes from (the fitted predictor, or measurement on the held-out
half of calib), and one search per target with the infeasibility check first.
Which data a checkpoint was trained on is `weightshare.deployment.dataset_for`
(re-exported here).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..deployment import dataset_for
from .common import SearchError
from .nsga import AccuracyFn, Candidate, Evaluator, SearchResult, nsga2_search, require_feasible
from .predictor import holdout_split, load_predictor
from .targets import Target, check_feasible

if TYPE_CHECKING:
    from ..data import Dataset
    from ..models import SuperNet
    from ..space import SubnetConfig

__all__ = ["TargetResult", "Verification", "dataset_for", "accuracy_fn", "specialize_targets",
           "verify_pick", "PicksOverCap", "measured_test_accuracy", "latency_fn"]


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


class PicksOverCap(SearchError):
    """Every pick `verify_pick` measured was over the latency cap (they are in `rejected`)."""

    def __init__(self, message: str, rejected: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.rejected = rejected

    @property
    def headroom(self) -> float:
        """predicted / measured of the pick the table underestimated most (< 1): the factor a
        cap must shrink by for the table's picks to meet it (0.9 without predictions)."""
        ratios = [r["predicted_ms"] / r["measured_ms"] for r in self.rejected
                  if r.get("predicted_ms") and r["measured_ms"] > 0]
        return min(ratios, default=0.9)


@dataclass
class Verification:
    """What the chosen SubNet measured, and the picks that were measured over the cap first.

    The search ranks by a predicted accuracy and a latency *table*; it picks exactly the
    SubNets whose latency the table underestimates and whose accuracy the predictor
    overestimates most. So a pick is re-measured before anyone sees it.
    """

    measured_ms: float | None = None
    measured_acc: float | None = None
    acc_images: int = 0
    rejected: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"measured_latency_ms": self.measured_ms, "measured_acc": self.measured_acc,
                "measured_acc_images": self.acc_images, "rejected": self.rejected or []}


@dataclass
class TargetResult:
    target: Target
    result: SearchResult
    best: Candidate
    seconds: float
    verified: Verification | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.target.name, "constraint": self.target.constraints,
               "subnet": self.best.subnet.to_dict(), "predicted_acc": self.best.acc,
               **self.best.costs, "evaluations": self.result.evaluations,
               "search_s": self.seconds}
        if self.verified is not None:
            out.update(self.verified.to_dict())
        return out


MeasureMs = Callable[["SubnetConfig"], float]
MeasureAcc = Callable[["SubnetConfig"], tuple[float, int]]


def verify_pick(result: SearchResult, target: Target, *, measure_ms: MeasureMs | None = None,
                measure_acc: MeasureAcc | None = None,
                max_tries: int = 10) -> tuple[Candidate, Verification]:
    """The most accurate feasible SubNet that also meets the latency cap when *measured*.

    Walks the search's feasible Pareto set from its most accurate member down (each step
    is a cheaper SubNet), measuring latency until one is within the cap; then measures
    that one's accuracy. Raises SearchError when `max_tries` measured picks all miss.
    """
    cap = target.max_latency_ms
    ranked = sorted(result.pareto, key=lambda c: (-c.acc, c.costs.get(result.objective, 0.0)))
    if not ranked:
        raise SearchError(f"target {target.name!r}: the search found no feasible SubNet")
    rejected: list[dict[str, Any]] = []
    chosen, ms = ranked[0], None
    if cap is not None and measure_ms is not None:
        for cand in ranked[:max_tries]:
            ms = measure_ms(cand.subnet)
            if ms <= cap:
                chosen = cand
                break
            rejected.append({"subnet": cand.subnet.to_dict(), "predicted_ms":
                             cand.costs.get("latency_ms"), "measured_ms": ms})
        else:
            fastest = min(r["measured_ms"] for r in rejected)
            raise PicksOverCap(
                f"target {target.name!r}: the {len(rejected)} most accurate SubNets within the "
                f"table's {cap:g} ms all measured over it (fastest {fastest:.3f} ms); rebuild the "
                "latency table on this machine (`weightshare latency-table build`) or raise the cap",
                rejected)
    acc, images = (measure_acc(chosen.subnet) if measure_acc is not None else (None, 0))
    return chosen, Verification(ms, acc, images, rejected)


def latency_fn(net: SuperNet, table: Any, *, rounds: int = 3, runs: int = 30,
               worst_round: bool = True) -> MeasureMs:
    """End-to-end milliseconds of a SubNet on this machine, timed as the table's check times
    it: the fastest of `runs` calls in each of `rounds` rounds.

    With `worst_round` (the default, for verifying picks) the *slowest* round's figure is
    returned, so a pick passes only if it met the cap in every round: the headroom is the
    timing noise this machine shows right now. A pick verified on its best round alone met
    its cap by luck as often as not once the other core was busy (a second timing of the
    same pick read 29 % higher). `worst_round=False` gives the table's own statistic.
    """
    from .latency_build import measure_end_to_end

    def fn(subnet: SubnetConfig) -> float:
        per_round = measure_end_to_end(net, [subnet], batch=table.batch, device=table.device,
                                       rounds=rounds, runs=runs)[0]
        return max(per_round) if worst_round else min(per_round)

    return fn


def measured_test_accuracy(net: SuperNet, dataset: Dataset, *,
                           device: str | torch.device = "cpu") -> MeasureAcc:
    """Test top-1 after BN recalibration on calib: the number `weightshare evaluate` reports."""
    from ..train.evaluate import recalibrated_accuracy

    def fn(subnet: SubnetConfig) -> tuple[float, int]:
        acc = recalibrated_accuracy(net, subnet, dataset, device=device, reuse=True)
        return acc, len(dataset.test)

    return fn


def specialize_targets(net: SuperNet, evaluator: Evaluator, targets: Sequence[Target], *,
                       objective: str | None = None, pop_size: int = 100, generations: int = 50,
                       seed: int = 0, progress: bool = False,
                       measure_ms: MeasureMs | None = None,
                       measure_acc: MeasureAcc | None = None,
                       retries: int = 3) -> list[TargetResult]:
    """One constrained NSGA-II per target (all sharing `evaluator`); its most accurate SubNet.

    Every target is checked against the smallest SubNet's costs first, so an
    impossible one fails before any search runs. With `measure_ms` / `measure_acc`
    each pick is verified (`verify_pick`): it meets its latency cap when measured,
    and its accuracy is measured, not predicted. When every pick of a search measures over
    its cap, the search is rerun (up to `retries` times) under a cap tightened by the
    table's measured error on those picks.
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
        search_t, rejected, over = t, [], None
        for attempt in range(retries + 1):
            res = nsga2_search(net.space, evaluator, objective=obj,
                               constraints=search_t.constraints, pop_size=pop_size,
                               generations=generations, seed=seed, progress=progress)
            if over is not None and not res.pareto:
                raise over  # nothing under the tightened cap: the measured misses say why
            require_feasible(res, f"the search for target {t.name!r}")
            best, verified = res.best(), None
            if measure_ms is None and measure_acc is None:
                break
            try:
                best, verified = verify_pick(res, t, measure_ms=measure_ms,
                                             measure_acc=measure_acc)
                verified.rejected = rejected + (verified.rejected or [])
                break
            except PicksOverCap as err:
                # The table underestimates this region of the space: search again under a
                # cap tightened by the worst error the clock just measured, so the picks
                # leave that much headroom (the measured cap itself stays `t`'s).
                rejected += err.rejected
                over = PicksOverCap(str(err), rejected)
                floor = smallest["latency_ms"]  # the table's smallest SubNet: always feasible
                if attempt == retries or search_t.max_latency_ms <= floor:
                    raise over from None
                tighter = max(floor, search_t.max_latency_ms * err.headroom * 0.98)
                search_t = dataclasses.replace(search_t, max_latency_ms=tighter)
        out.append(TargetResult(t, res, best, time.perf_counter() - t0, verified))
    return out
