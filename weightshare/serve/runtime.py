"""SubNetAct: one SuperNet in memory serving every deployed SubNet, per batch, with no reload.

`SubNetActRuntime.run(batch, subnet)` runs the SuperNet's forward with the
SubNet as an argument: LayerSelect (skipped blocks are not run), WeightSlice
(the first channels of each weight) and SubnetNorm (that SubNet's own BN
statistics, from the checkpoint or recalibrated at load) all happen inside the
call, and nothing is remembered between calls, so two threads may run
different SubNets at once. Choosing another SubNet costs nothing but the
per-call slicing; `measure_switch_us` measures it honestly.

For comparison, `ExtractedModelStore` keeps each deployed SubNet as a
separately stored extracted model (a `weights_only` torch file of its state
dict) and loads it into a fresh module on demand: what an INFaaS-style server
pays to switch. `SeparateModelsRuntime` serves from such a store, holding at
most `max_held` models in memory (LRU).

Deployment: `choose_deployment` picks N SubNets spread evenly in MACs (from
the checkpoint's calibrated SubNets when it has enough, else a seeded pool),
or a frontier file names them (`weightshare.deployment`, which also names them s0.. by
MACs and holds `DeployedSubnet`);
`prepare_deployment` makes sure each has BN statistics and a test accuracy.
"""

from __future__ import annotations

import copy
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import deployment
from ..deployment import DeployedSubnet
from ..models import StaticNet, SuperNet
from ..space import SubnetConfig
from ..timing import median_ms, repeat, timed_ms
from .executors import Executor, make_executor
from .memory import module_bytes, rss_bytes

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = [
    "ExtractedModelStore",
    "SeparateModelsRuntime",
    "SubNetActRuntime",
    "choose_deployment",
    "load_frontier",
    "module_bytes",
    "prepare_deployment",
    "rss_bytes",
]


# ----------------------------------------------------------------- deployment
def choose_deployment(net: SuperNet, n: int = 6, *, seed: int = 0, pool: int = 2000
                      ) -> list[SubnetConfig]:
    """`n` SubNets spread evenly in MACs from smallest to largest (both included).

    Candidates are the SubNets the checkpoint already has BN statistics for when
    there are at least `n` of them (no recalibration needed), else a seeded pool of
    random SubNets plus the smallest and largest. For each of `n` evenly spaced MAC
    targets the closest unused candidate is taken.
    """
    if n < 1:
        raise ValueError(f"deploy at least one SubNet, got n={n}")
    space = net.space
    calibrated = sorted(net.subnet_norms, key=lambda c: c.to_json())
    if len(calibrated) >= n:
        candidates = calibrated
    else:
        rng = random.Random(seed)
        found = {space.sample(rng) for _ in range(pool)} | {space.smallest(), space.largest()}
        candidates = sorted(found | set(calibrated), key=lambda c: c.to_json())
    macs = {c: net.cost(c).macs for c in candidates}
    lo, hi = min(macs.values()), max(macs.values())
    chosen: list[SubnetConfig] = []
    for i in range(n):
        target = lo + (hi - lo) * (i / (n - 1) if n > 1 else 1.0)
        rest = [c for c in candidates if c not in chosen]
        if not rest:
            break
        chosen.append(min(rest, key=lambda c: (abs(macs[c] - target), c.to_json())))
    return sorted(chosen, key=lambda c: macs[c])


def load_frontier(path: str | os.PathLike) -> list[tuple[SubnetConfig, float | None]]:
    """(SubNet, measured accuracy or None) per entry of a frontier file.

    The reader is `weightshare.deployment.read_frontier` (the current format and the older
    shapes); this pair form is kept for existing callers.
    """
    return [(p.subnet, p.measured_acc) for p in deployment.load_frontier(path)]


def prepare_deployment(net: SuperNet, subnets: Sequence[SubnetConfig],
                       accs: Sequence[float | None] | None = None, *,
                       dataset: Dataset | None = None, show_progress: bool = False,
                       on_measured: Callable[[SubnetConfig, float], None] | None = None
                       ) -> tuple[DeployedSubnet, ...]:
    """Name the SubNets s0.. by MACs, give each BN statistics and a test accuracy.

    Statistics already on `net` (from the checkpoint) are reused; missing ones are
    recalibrated on `dataset.calib`. Accuracies not given are measured on
    `dataset.test`. Without a dataset both must already be known. `show_progress`
    draws a bar over the SubNets that need work; `on_measured(subnet, acc)` is called
    after each one (the stack writes results back beside the checkpoint).
    """
    from ..train.evaluate import accuracy, recalibrate

    accs = list(accs) if accs is not None else [None] * len(subnets)
    if len(accs) != len(subnets):
        raise ValueError("one accuracy (or None) per SubNet")
    named = deployment.name_by_macs(zip(subnets, accs, strict=True),
                                    key=lambda p: net.cost(p[0]).macs)
    pairs = [p for _, p in named]
    todo = sum(1 for c, a in pairs if c not in net.subnet_norms or a is None)
    bar = None
    if show_progress and todo and dataset is not None:
        from ..progress import progress

        bar = progress(total=todo, desc="BN recalibration + test accuracy", unit="subnet",
                       log_interval_s=5.0)
    out = []
    for name, (cfg, acc) in named:
        net.space.validate(cfg)
        if cfg not in net.subnet_norms or acc is None:
            if dataset is None:
                raise ValueError(
                    f"SubNet {cfg.to_json()} needs "
                    f"{'BN recalibration' if cfg not in net.subnet_norms else 'a test accuracy'}: "
                    "pass a dataset (--dataset) or a frontier file with accuracies and a "
                    "checkpoint that has its statistics"
                )
            if cfg not in net.subnet_norms:
                recalibrate(net, cfg, dataset)
            if acc is None:
                acc = accuracy(net, cfg, dataset)
            if on_measured is not None:
                on_measured(cfg, float(acc))
            if bar is not None:
                bar.update(1)
        cost = net.cost(cfg)
        out.append(DeployedSubnet(name, cfg, cost.macs, cost.params, round(float(acc), 4)))
    if bar is not None:
        bar.close()
    return tuple(out)


# ------------------------------------------------------------------- SubNetAct
class SubNetActRuntime:
    """One SuperNet, every deployed SubNet runnable per call: `run(batch, name)`."""

    kind = "subnetact"

    def __init__(self, supernet: SuperNet, deployed: Sequence[DeployedSubnet]) -> None:
        if not deployed:
            raise ValueError("deploy at least one SubNet")
        self.net = supernet.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.deployed: dict[str, DeployedSubnet] = {d.name: d for d in deployed}
        for d in deployed:
            if d.subnet not in self.net.subnet_norms:
                raise ValueError(f"{d.name} has no BN statistics; use prepare_deployment first")
        # The engine that runs deployed SubNets (weightshare.serve.executors); the torch plan
        # unless a deployment picks another with `use_executor`.
        self.executor: Executor = make_executor("torch", self.net, self.configs())

    def configs(self) -> dict[str, SubnetConfig]:
        return {n: d.subnet for n, d in self.deployed.items()}

    def use_executor(self, executor: Executor) -> None:
        """Run deployed SubNets on `executor` from the next batch on (the old one is closed)."""
        old, self.executor = self.executor, executor
        if old is not executor:
            old.close()

    @property
    def names(self) -> list[str]:
        return list(self.deployed)

    def subnet(self, name: str | SubnetConfig) -> SubnetConfig:
        if isinstance(name, SubnetConfig):
            return name
        try:
            return self.deployed[name].subnet
        except KeyError:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {self.names}") from None

    def input_shape(self, name: str | SubnetConfig | None = None) -> tuple[int, int, int]:
        return self.net.input_shape(self.subnet(name) if name is not None else None)

    @property
    def num_classes(self) -> int:
        return int(self.net.num_classes)

    def run(self, batch: Tensor, name: str | SubnetConfig) -> Tensor:
        """Logits of SubNet `name` on `batch` (N, C, H, W); resized to its resolution."""
        cfg = self.subnet(name)
        res = self.net.space.resolution_of(cfg)
        with torch.inference_mode():
            if batch.shape[-1] != res or batch.shape[-2] != res:
                batch = F.interpolate(batch, size=(res, res), mode="bilinear",
                                      align_corners=False)
            if isinstance(name, str):
                return self.executor.run(batch, name)
            return self.net(batch, cfg)  # an ad-hoc SubNet: the plain elastic forward

    def prepare(self, name: str) -> float:
        """Nothing to load: every SubNet is resident. Returns the seconds spent (0)."""
        self.subnet(name)
        return 0.0

    # ------------------------------------------------------------ reporting
    def memory(self) -> dict[str, Any]:
        """Bytes held for all deployed SubNets vs the same SubNets as separate models."""
        supernet = module_bytes(self.net)
        norms = sum(m.numel() * m.element_size() + v.numel() * v.element_size()
                    for d in self.deployed.values()
                    for m, v in self.net.subnet_norms[d.subnet].values())
        separate = {d.name: module_bytes(self.net.extract(d.subnet))
                    for d in self.deployed.values()}
        total_sep = sum(separate.values())
        executor = self.executor.memory()
        held = supernet + norms + executor["extra_bytes"]
        return {
            "supernet_bytes": supernet,
            "subnet_norm_bytes": norms,
            "subnetact_bytes": supernet + norms,
            "executor": executor,
            "executor_total_bytes": held,
            "separate_bytes": separate,
            "separate_total_bytes": total_sep,
            "ratio_separate_over_subnetact": total_sep / (supernet + norms),
            "ratio_separate_over_executor": total_sep / held,
            "rss_bytes": rss_bytes(),
        }

    def measure_switch_us(self, a: str | None = None, b: str | None = None, *,
                          batch: int = 1, rounds: int = 100) -> dict[str, float]:
        """Switch cost: run(B) right after run(A) minus run(B) right after run(B), in µs.

        Also the per-call slicing overhead: run(B) through the SuperNet minus B's
        extracted model on the same input.
        """
        names = self.names
        a = a or names[0]
        b = b or names[-1]
        if a == b and len(names) > 1:
            a = names[0] if b != names[0] else names[1]
        x = torch.randn(batch, *self.input_shape(b))
        static = self.net.extract(self.subnet(b))

        def one_round() -> tuple[float, float, float]:
            self.run(x, a)  # untimed: the switch is into B from A
            return (timed_ms(lambda: self.run(x, b)), timed_ms(lambda: self.run(x, b)),
                    timed_ms(lambda: static(x)))

        with torch.inference_mode():
            rows = repeat(one_round, warmup=5, runs=rounds)
        med = {k: median_ms([r[i] for r in rows]) * 1e3 for i, k in
               enumerate(("after_other", "after_same", "extracted"))}
        return {
            "switch_us": med["after_other"] - med["after_same"],
            "run_after_switch_us": med["after_other"],
            "run_same_us": med["after_same"],
            "extracted_run_us": med["extracted"],
            "slicing_overhead_us": med["after_same"] - med["extracted"],
            "from": a, "to": b, "batch": batch, "rounds": rounds,
        }


# ------------------------------------------------------------ separate models
class ExtractedModelStore:
    """Each deployed SubNet saved as its own state dict file, loadable into a fresh module.

    The module skeletons are kept on the meta device (no weight memory): loading
    is `torch.load(weights_only=True)` from disk, a deep copy of the skeleton and
    `load_state_dict(assign=True)`, the honest cost of bringing a stored model in.
    """

    def __init__(self, directory: str | os.PathLike, skeletons: dict[str, nn.Module]) -> None:
        self.dir = Path(directory)
        self.skeletons = skeletons

    @classmethod
    def from_runtime(cls, runtime: SubNetActRuntime, directory: str | os.PathLike
                     ) -> ExtractedModelStore:
        from ..checkpoint import atomic_torch_save

        directory = Path(directory)
        skeletons: dict[str, nn.Module] = {}
        for name, d in runtime.deployed.items():
            model: StaticNet = runtime.net.extract(d.subnet)
            atomic_torch_save(model.state_dict(), directory / f"{name}.pt")
            skeletons[name] = model.to("meta")
        return cls(directory, skeletons)

    def path(self, name: str) -> Path:
        if name not in self.skeletons:
            raise ValueError(f"no stored model {name!r}; stored: {sorted(self.skeletons)}")
        return self.dir / f"{name}.pt"

    def load(self, name: str) -> nn.Module:
        """Read `name` from disk into a fresh module (eval mode)."""
        state = torch.load(self.path(name), map_location="cpu", weights_only=True)
        module = copy.deepcopy(self.skeletons[name])
        module.load_state_dict(state, assign=True)
        return module.eval()

    def measure_load_ms(self, name: str, runs: int = 5) -> float:
        """Median milliseconds of `load(name)` over `runs` loads (no warm-up: the first
        load's page-cache state is part of what a switch pays)."""
        return median_ms(repeat(lambda: timed_ms(lambda: self.load(name)), runs=max(1, runs)))


class SeparateModelsRuntime:
    """Serves from an `ExtractedModelStore`, at most `max_held` models in memory (LRU).

    `prepare(name)` loads a model not held (paying the real load time); `run`
    loads on demand too, so a forgotten prepare costs time, never correctness.
    """

    kind = "separate"

    def __init__(self, store: ExtractedModelStore, max_held: int = 2,
                 input_shape: tuple[int, int, int] | None = None, num_classes: int = 0) -> None:
        if max_held < 1:
            raise ValueError(f"max_held must be >= 1, got {max_held}")
        self.store, self.max_held = store, max_held
        self.held: OrderedDict[str, nn.Module] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.load_s = 0.0
        self._input_shape = input_shape
        self.num_classes = num_classes

    def input_shape(self, name: str | None = None) -> tuple[int, int, int]:
        if self._input_shape is None:
            raise ValueError("input shape unknown")
        return self._input_shape

    def prepare(self, name: str) -> float:
        with self._lock:
            if name in self.held:
                self.held.move_to_end(name)
                return 0.0
            t0 = time.perf_counter()
            module = self.store.load(name)
            spent = time.perf_counter() - t0
            self.held[name] = module
            while len(self.held) > self.max_held:
                self.held.popitem(last=False)
            self.loads += 1
            self.load_s += spent
            return spent

    def run(self, batch: Tensor, name: str) -> Tensor:
        self.prepare(name)
        with torch.inference_mode():
            return self.held[name](batch)
