"""Multi-objective search of a SuperNet's SubNets: NSGA-II (pymoo), a random baseline, hypervolume.

Objectives are (maximize accuracy, minimize one cost); costs are "macs",
"params" and "latency_ms" (predicted by a latency table), and any of them may
also be capped (`constraints`, e.g. {"latency_ms": 5.0}) as pymoo inequality
constraints, normalized by the limit so caps of different units weigh alike.

The genome is `SearchSpace.to_genome`'s integer vector (bounds from
`genome_bounds`), and sampling, crossover and mutation call the space's own
`sample` / `crossover` / `mutate`, so every offspring is a valid SubNet. Genomes
are kept canonical (skipped blocks hold 0) so pymoo's duplicate elimination sees
two genomes of one network as equal. Accuracy comes from any batch function
(the fitted predictor, or measurement after BN recalibration); an `Evaluator`
caches it per SubNet and counts evaluations, so NSGA-II and random search can be
compared at the same budget by the hypervolume of their frontiers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..space import SearchSpace, SubnetConfig
from .common import SearchError

if TYPE_CHECKING:
    from ..models import SuperNet
    from .latency_table import LatencyTable

__all__ = [
    "COSTS",
    "AccuracyFn",
    "cost_key",
    "feasible",
    "require_feasible",
    "Candidate",
    "Evaluator",
    "SearchResult",
    "nsga2_search",
    "random_search",
    "non_dominated",
    "pareto_front",
    "hypervolume",
    "frontier_hypervolume",
]

AccuracyFn = Callable[[Sequence[SubnetConfig]], Sequence[float]]

# Cost names a search can minimize or cap, and how a user may spell them.
COSTS: dict[str, str] = {"macs": "macs", "params": "params", "latency": "latency_ms",
                         "latency_ms": "latency_ms"}


def cost_key(name: str) -> str:
    try:
        return COSTS[name]
    except KeyError:
        raise SearchError(f"unknown cost {name!r}; choose from {sorted(set(COSTS))}") from None


@dataclass(frozen=True)
class Candidate:
    """One evaluated SubNet: its (predicted or measured) accuracy and its costs."""

    subnet: SubnetConfig
    acc: float
    costs: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": self.subnet.to_dict(), "acc": self.acc, **self.costs}


class Evaluator:
    """Accuracy and costs of SubNets, cached; `evaluations` counts SubNets evaluated."""

    def __init__(self, net: SuperNet, accuracy_fn: AccuracyFn,
                 table: LatencyTable | None = None) -> None:
        self.net, self.accuracy_fn, self.table = net, accuracy_fn, table
        self.cache: dict[SubnetConfig, Candidate] = {}
        self.evaluations = 0

    def costs(self, subnet: SubnetConfig) -> dict[str, float]:
        c = self.net.cost(subnet)
        out = {"macs": float(c.macs), "params": float(c.params)}
        if self.table is not None:
            out["latency_ms"] = self.table.predict_ms(self.net.space, subnet)
        return out

    def has(self, key: str) -> bool:
        return key != "latency_ms" or self.table is not None

    def __call__(self, subnets: Sequence[SubnetConfig]) -> list[Candidate]:
        new = list(dict.fromkeys(s for s in subnets if s not in self.cache))
        if new:
            accs = self.accuracy_fn(new)
            for s, a in zip(new, accs, strict=True):
                self.cache[s] = Candidate(s, float(a), self.costs(s))
        self.evaluations += len(subnets)
        return [self.cache[s] for s in subnets]


@dataclass
class SearchResult:
    """The feasible Pareto set (by increasing cost), and what the search evaluated to find it."""

    pareto: list[Candidate]
    evaluated: list[Candidate] = field(repr=False)
    evaluations: int
    objective: str
    constraints: dict[str, float]

    def best(self) -> Candidate:
        """The most accurate feasible SubNet found (ties: the cheapest)."""
        return max(self.pareto, key=lambda c: (c.acc, -c.costs[self.objective]))


# ------------------------------------------------------------------------------ pareto / hv
def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (all objectives minimized)."""
    pts = np.asarray(points, dtype=np.float64)
    keep = []
    for i, p in enumerate(pts):
        dominated = np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
        if not dominated:
            keep.append(i)
    return keep


def feasible(c: Candidate, constraints: Mapping[str, float]) -> bool:
    return all(c.costs[k] <= v for k, v in constraints.items())


def pareto_front(candidates: Sequence[Candidate], objective: str,
                 constraints: Mapping[str, float] | None = None) -> list[Candidate]:
    """Feasible, non-dominated (max acc, min cost) candidates, unique, by increasing cost."""
    uniq = list({c.subnet: c for c in candidates if feasible(c, constraints or {})}.values())
    if not uniq:
        return []
    idx = non_dominated([(-c.acc, c.costs[objective]) for c in uniq])
    return sorted((uniq[i] for i in idx), key=lambda c: (c.costs[objective], -c.acc))


def hypervolume(points: Sequence[Sequence[float]], ref_point: Sequence[float]) -> float:
    """pymoo's hypervolume of minimized `points` up to `ref_point` (points beyond it add nothing)."""
    from pymoo.indicators.hv import HV

    pts = np.asarray(points, dtype=np.float64).reshape(-1, len(ref_point))
    ref = np.asarray(ref_point, dtype=np.float64)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=ref)(pts))


def frontier_hypervolume(candidates: Sequence[Candidate], objective: str, cost_ref: float,
                         acc_ref: float = 0.0) -> float:
    """Hypervolume of (accuracy / 100, cost / cost_ref) between (acc_ref, cost_ref) and (100, 0).

    Normalized to [0, 1]: 1 would be 100 % accuracy at zero cost. Use the same
    references for every search being compared.
    """
    pts = [(-(c.acc - acc_ref) / (100.0 - acc_ref), c.costs[objective] / cost_ref)
           for c in candidates]
    return hypervolume(pts, (0.0, 1.0))


# ----------------------------------------------------------------------------- operators
def _rng(random_state: np.random.Generator | None) -> random.Random:
    seed = int(random_state.integers(2**62)) if random_state is not None else None
    return random.Random(seed)


def _canonical(space: SearchSpace, cfg: SubnetConfig) -> np.ndarray:
    return np.asarray(space.to_genome(cfg), dtype=np.int64)


def _operators(space: SearchSpace, gene_prob: float):
    from pymoo.core.crossover import Crossover
    from pymoo.core.mutation import Mutation
    from pymoo.core.sampling import Sampling

    class SpaceSampling(Sampling):
        def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
            rng = _rng(random_state)
            return np.stack([_canonical(space, space.sample(rng)) for _ in range(n_samples)])

    class SpaceCrossover(Crossover):
        def __init__(self) -> None:
            super().__init__(n_parents=2, n_offsprings=2, prob=0.9)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            rng = _rng(random_state)
            _, n_matings, n_var = X.shape
            out = np.empty((2, n_matings, n_var), dtype=np.int64)
            for m in range(n_matings):
                a, b = space.from_genome(X[0, m]), space.from_genome(X[1, m])
                for k in range(2):
                    out[k, m] = _canonical(space, space.crossover(a, b, rng))
            return out

    class SpaceMutation(Mutation):
        def __init__(self) -> None:
            super().__init__(prob=1.0)

        def _do(self, problem, X, *args, random_state=None, **kwargs):
            rng = _rng(random_state)
            return np.stack([_canonical(space, space.mutate(space.from_genome(x), rng, gene_prob))
                             for x in X])

    return SpaceSampling(), SpaceCrossover(), SpaceMutation()


def _check_keys(evaluator: Evaluator, objective: str, constraints: Mapping[str, float]) -> None:
    for key in (objective, *constraints):
        if key not in ("macs", "params", "latency_ms"):
            raise SearchError(f"unknown cost {key!r}; choose from macs, params, latency_ms")
        if not evaluator.has(key):
            raise SearchError(f"searching on {key} needs a latency table (--latency-table)")
    for key, limit in constraints.items():
        if not limit > 0:
            raise SearchError(f"the limit on {key} must be > 0, got {limit}")


def nsga2_search(space: SearchSpace, evaluator: Evaluator, *, objective: str = "macs",
                 constraints: Mapping[str, float] | None = None, pop_size: int = 100,
                 generations: int = 50, gene_prob: float = 0.1, seed: int = 0,
                 progress: bool = False) -> SearchResult:
    """NSGA-II over `space`: the feasible accuracy-vs-`objective` Pareto set it found."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.core.problem import Problem
    from pymoo.optimize import minimize

    objective = cost_key(objective)
    constraints = {cost_key(k): float(v) for k, v in (constraints or {}).items()}
    _check_keys(evaluator, objective, constraints)
    if pop_size < 2 or generations < 1:
        raise SearchError(f"need pop_size >= 2 and generations >= 1, got {pop_size}, {generations}")
    bounds = np.asarray(space.genome_bounds)
    start = evaluator.evaluations
    seen: dict[SubnetConfig, Candidate] = {}
    limits = list(constraints.items())

    class SubnetProblem(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=len(bounds), n_obj=2, n_ieq_constr=len(limits), xl=0,
                             xu=bounds - 1, vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            cands = evaluator([space.from_genome(x) for x in X])
            for c in cands:
                seen[c.subnet] = c
            out["F"] = np.array([[-c.acc, c.costs[objective]] for c in cands])
            if limits:
                out["G"] = np.array([[(c.costs[k] - v) / v for k, v in limits] for c in cands])

    bar = None
    if progress:
        from ..progress import progress as tqdm

        bar = tqdm(total=generations, desc="NSGA-II", unit="gen", leave=False)

    class Progress(Callback):
        def notify(self, algorithm) -> None:
            if bar is not None:
                bar.update(1)

    sampling, crossover, mutation = _operators(space, gene_prob)
    algorithm = NSGA2(pop_size=pop_size, sampling=sampling, crossover=crossover,
                      mutation=mutation, eliminate_duplicates=True)
    try:
        minimize(SubnetProblem(), algorithm, ("n_gen", generations), seed=seed, verbose=False,
                 callback=Progress())
    finally:
        if bar is not None:
            bar.close()
    evaluated = list(seen.values())
    return SearchResult(pareto_front(evaluated, objective, constraints), evaluated,
                        evaluator.evaluations - start, objective, constraints)


def random_search(space: SearchSpace, evaluator: Evaluator, n: int, *, objective: str = "macs",
                  constraints: Mapping[str, float] | None = None, seed: int = 0) -> SearchResult:
    """The baseline: `n` uniformly sampled SubNets, their feasible Pareto set."""
    objective = cost_key(objective)
    constraints = {cost_key(k): float(v) for k, v in (constraints or {}).items()}
    _check_keys(evaluator, objective, constraints)
    rng = random.Random(seed)
    start = evaluator.evaluations
    evaluated = evaluator([space.sample(rng) for _ in range(n)])
    return SearchResult(pareto_front(evaluated, objective, constraints), evaluated,
                        evaluator.evaluations - start, objective, constraints)


def require_feasible(result: SearchResult, what: str = "the search") -> SearchResult:
    if not result.pareto:
        raise SearchError(f"{what} found no SubNet within {result.constraints}; search longer "
                          "(--generations, --population) or relax the limits")
    return result
