"""Specialize many: find the SubNet to ship for each target, with no more training.

* `latency_table`: per-operator latency lookup tables measured on the user's
  machine; a SubNet's latency is a sum of table entries. `latency_build` times,
  calibrates and checks them.
* `predictor`: (SubNet, held-out accuracy) pairs measured once, an MLP (or
  linear) model fitted on them, saved beside the checkpoint.
* `nsga`: NSGA-II (pymoo) over the space's integer genome, with the space's own
  sampling/crossover/mutation; a random-search baseline; hypervolume.
* `targets`: named caps on latency / MACs / params, from YAML; infeasible ones
  are refused with the smallest achievable value.
* `frontier`: the Pareto set re-measured (BN recalibration + test accuracy),
  written (in `weightshare.deployment`'s frontier format) and plotted.
* `specialize`: the glue the command line and benchmarks call.
* `finetune`: a chosen SubNet trained a few epochs further with KD from the
  largest, written as a SuperNet checkpoint that `export` reads.
"""

from .common import SearchError, kendall_tau, mape
from .finetune import FinetuneConfig, FinetuneResult, finetune, load_subnet_choice
from .frontier import FrontierPoint, load_frontier, measure_frontier, plot_frontier, save_frontier
from .latency_build import (
    LatencyCheck,
    build_latency_table,
    calibrate_latency_table,
    check_latency_table,
)
from .latency_table import LatencyTable, load_latency_table
from .nsga import (
    Candidate,
    Evaluator,
    SearchResult,
    frontier_hypervolume,
    hypervolume,
    non_dominated,
    nsga2_search,
    pareto_front,
    random_search,
)
from .predictor import Predictor, fit_and_save, fit_predictor, load_predictor, measure_samples
from .targets import Target, check_feasible, load_targets

__all__ = [
    "Candidate",
    "Evaluator",
    "FinetuneConfig",
    "FinetuneResult",
    "FrontierPoint",
    "LatencyCheck",
    "LatencyTable",
    "Predictor",
    "SearchError",
    "SearchResult",
    "Target",
    "build_latency_table",
    "calibrate_latency_table",
    "check_feasible",
    "check_latency_table",
    "finetune",
    "fit_and_save",
    "fit_predictor",
    "frontier_hypervolume",
    "hypervolume",
    "kendall_tau",
    "load_frontier",
    "load_latency_table",
    "load_predictor",
    "load_subnet_choice",
    "load_targets",
    "mape",
    "measure_frontier",
    "measure_samples",
    "non_dominated",
    "nsga2_search",
    "pareto_front",
    "plot_frontier",
    "random_search",
    "save_frontier",
]
