"""Assemble a serving stack from a checkpoint: deployment, runtime, executor, profile, policy.

`build_stack(StackConfig(...))` is what `weightshare serve`, `serve profile`,
`serve simulate` and the benchmark share:

1. load the checkpoint once, and the per-SubNet BN statistics and test
   accuracies earlier starts wrote beside it (`CKPT.subnet-stats.pt`, keyed by
   the checkpoint's SHA-256; `weightshare.serve.subnet_stats`), so a second start
   recalibrates nothing;
2. reuse the saved profile (default `CKPT.profile.json`) when it matches the
   checkpoint's SHA-256, the thread count, the batch limit, this machine and
   the candidate SubNets -- its deployed SubNets and accuracies come with it;
   otherwise take the candidates (`--deploy frontier.json`, else N spread evenly
   in MACs), give each BN statistics and a test accuracy (recalibrating /
   evaluating only what is missing, with progress bars, results written back),
   time each at batch 1 and keep only the Pareto frontier in (accuracy,
   latency): a dominated SubNet is never deployed, and the profile says which
   were dropped and why; then profile the kept ones and save;
3. put the executor (`torch`, `onnxruntime`, `auto`) under the runtime: for
   onnxruntime, cached sessions load before this returns and missing ones build
   in the background while the torch plan serves; each new session is timed
   (unless the saved profile already has its rows) and the profile the policy
   plans with is republished (`Stack.on_profile`) with the latency of the path
   that actually serves each SubNet, filtered to the frontier again;
4. build the policy by name, and the backend it needs: the SubNetAct runtime,
   or for separate-model policies (INFaaS) a store of extracted models on disk.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..deployment import DeployedSubnet, load_frontier, name_by_macs
from ..space import SubnetConfig
from .backends import make_switch_backend, switch_modes
from .executors import EXECUTORS, ExecutorConfig, OnnxRuntimeExecutor, make_executor
from .policies import Policy, make_policy
from .profile import Profile, checkpoint_identity, pareto_filter
from .profiling import measure_latency_rows, measure_profile
from .runtime import (
    ExtractedModelStore,
    SeparateModelsRuntime,
    SubNetActRuntime,
    choose_deployment,
    prepare_deployment,
)
from .subnet_stats import default_stats_path, load_subnet_stats, save_subnet_stats

__all__ = [
    "Stack",
    "StackConfig",
    "build_stack",
    "default_ort_cache_dir",
    "default_profile_path",
    "default_stats_path",
    "load_subnet_stats",
    "save_subnet_stats",
]

def default_profile_path(checkpoint: str | os.PathLike) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.name + ".profile.json")


def default_ort_cache_dir(checkpoint: str | os.PathLike) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.name + ".onnxruntime")


@dataclass(frozen=True)
class StackConfig:
    """How to serve a checkpoint.

    deploy: a frontier JSON file naming the candidate SubNets (and accuracies); else
        `num_subnets` spread evenly in MACs. Either way only the non-dominated ones in
        (accuracy, batch-1 latency on this machine) are deployed, unless keep_dominated.
    dataset, data_dir, test_subset: for BN recalibration and test accuracy of SubNets the
        checkpoint has no statistics / accuracy for (loaded only when needed); results are
        written to `CKPT.subnet-stats.pt` (save_stats) so the next start skips them.
    profile: where the profile is read from / written to (default beside the checkpoint).
    max_batch: largest batch profiled (and allowed per request).
    threads: torch intra-op threads (None: leave torch's default).
    switch_mode: hold one SubNet at a time (small-memory devices) instead of the whole
        SuperNet: "full" loads the next SubNet's whole extracted model on a switch, "delta"
        reads only the slices it lacks from a safetensors SuperNet file (FastSwitch, a
        plug-in: `weightshare.serve.backends`). None: the policy's own backend.
    executor: what runs batches (weightshare.serve.executors): "torch", "onnxruntime" or
        "auto" (each SubNet on the path measured faster). The CLI defaults to auto; the
        library to torch, which needs no export.
    ort_memory_budget_mb: most MB of onnxruntime sessions (None: no cap); SubNets beyond it
        stay on the torch plan. ort_cache_dir: default `CKPT.onnxruntime/`.
    ort_background: build missing sessions in a background thread (False: before
        build_stack returns).
    show_progress: progress bars for recalibration, evaluation and profiling.
    """

    checkpoint: str
    policy: str = "slackfit"
    deploy: str | None = None
    num_subnets: int = 6
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    test_subset: int | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    reprofile: bool = False
    max_batch: int = 32
    profile_runs: int = 20
    threads: int | None = None
    switch_mode: str | None = None
    executor: str = "torch"
    ort_memory_budget_mb: float | None = None
    ort_cache_dir: str | None = None
    ort_background: bool = True
    keep_dominated: bool = False
    show_progress: bool = False
    save_stats: bool = True

    def __post_init__(self) -> None:
        if self.switch_mode is not None and self.switch_mode not in switch_modes():
            raise ValueError(f"switch_mode must be one of {', '.join(switch_modes())}, got "
                             f"{self.switch_mode!r}")
        if self.num_subnets < 1:
            raise ValueError("num_subnets must be >= 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; choose one of "
                             f"{', '.join(sorted(EXECUTORS))}")
        if self.ort_memory_budget_mb is not None and self.ort_memory_budget_mb < 0:
            raise ValueError("ort_memory_budget_mb must be >= 0")

    @property
    def filters_up_front(self) -> bool:
        """Whether dominated candidates are dropped on their torch timings before serving.

        Only for the torch executor: with an onnxruntime path coming, torch timings are not
        what will serve (Python overhead, not MACs, sets a 0.2 ms forward's time there), so
        the other executors filter on the path serving each SubNet as its session is
        measured (`_ProfilePublisher.effective`).
        """
        return self.executor == "torch" and not self.keep_dominated

    def dataset_key(self) -> str:
        """Which test set an accuracy was measured on (accuracies are only reused for it)."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.dataset_options.items()))
        return f"{self.dataset}|subset={self.test_subset}|{opts}"


@dataclass
class Stack:
    runtime: SubNetActRuntime
    profile: Profile
    policy: Policy
    backend: Any
    profile_path: Path
    profile_reused: bool
    _tmp: tempfile.TemporaryDirectory | None = None
    executor_name: str = "torch"
    _publisher: _ProfilePublisher | None = None

    @property
    def executor(self) -> Any:
        return self.runtime.executor

    def on_profile(self, fn: Callable[[Profile], None]) -> None:
        """Call `fn(profile)` whenever the profile changes (an onnxruntime session became
        ready and its latencies replace the torch plan's); e.g. the worker's `profile`."""
        if self._publisher is not None:
            self._publisher.listeners.append(fn)

    def wait_executor(self, timeout: float | None = None) -> bool:
        """Wait for background session builds (and their timing) to finish."""
        ex = self.runtime.executor
        done = ex.wait(timeout) if isinstance(ex, OnnxRuntimeExecutor) else True
        if self._publisher is not None:
            done = self._publisher.idle.wait(timeout) and done
        return done

    def close(self) -> None:
        self.runtime.executor.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _rows(profile: Profile, table: str) -> dict[str, list[float]]:
    return {n: list(r) for n, r in getattr(profile, table).items()}


class _ProfilePublisher:
    """Keeps the profile the policy plans with in step with the paths serving each SubNet.

    base: the profile with the torch plan's latencies. When a session becomes ready its
    rows are measured (or taken from the saved profile), the route is chosen (auto: the
    faster path for that SubNet; onnxruntime: always the session), and a new Profile is
    published, filtered to the frontier again, and saved.
    """

    def __init__(self, base: Profile, runtime: SubNetActRuntime, executor: OnnxRuntimeExecutor,
                 cfg: StackConfig, path: Path, log: Callable[[str], None]) -> None:
        import onnxruntime as ort

        self.base, self.runtime, self.executor = base, runtime, executor
        self.cfg, self.path, self.log = cfg, path, log
        self.listeners: list[Callable[[Profile], None]] = []
        self.idle = threading.Event()
        self.idle.set()
        self._lock = threading.Lock()
        saved = base.meta.get("executors", {}).get("onnxruntime", {})
        # Rows measured by an earlier start are valid for the same onnxruntime version
        # (the profile as a whole already matched checkpoint, machine and threads).
        valid = saved.get("version") == ort.__version__
        self.ort_median: dict[str, list[float]] = dict(saved.get("median_ms", {})) if valid else {}
        self.ort_p99: dict[str, list[float]] = dict(saved.get("p99_ms", {})) if valid else {}
        self.ort_version = ort.__version__
        self.current = self.effective()

    def _route(self, name: str) -> None:
        if name not in self.ort_median:
            return
        if self.executor.mode == "auto":
            ort_ms, torch_ms = sum(self.ort_median[name]), sum(self.base.median_ms[name])
            self.executor.route[name] = "onnxruntime" if ort_ms <= torch_ms else "torch"
        else:
            self.executor.route[name] = "onnxruntime"

    def session_ready(self, name: str) -> None:
        self.idle.clear()
        try:
            if name not in self.ort_median:
                # Timed with the session itself, whatever the route says meanwhile.
                med, p99 = measure_latency_rows(
                    self.executor.run_session, name, self.runtime.input_shape(name),
                    self.base.batch_sizes, runs=self.cfg.profile_runs)
                self.ort_median[name], self.ort_p99[name] = med, p99
            self._route(name)
            with self._lock:
                self.current = self.effective()
                self.current.save(self.path)
            self.log(f"{name} now served by {self.executor.path(name)} "
                     f"({self.current.meta['executor']['paths'].get(name)}); profile updated")
            for fn in self.listeners:
                fn(self.current)
        finally:
            self.idle.set()

    def effective(self) -> Profile:
        base = self.base
        paths = {s.name: self.executor.path(s.name) for s in base.subnets}
        median, p99 = _rows(base, "median_ms"), _rows(base, "p99_ms")
        for n, p in paths.items():
            if p == "onnxruntime" and n in self.ort_median:
                median[n], p99[n] = list(self.ort_median[n]), list(self.ort_p99[n])
        meta = dict(base.meta)
        meta["executors"] = {
            "torch": {"median_ms": _rows(base, "median_ms"), "p99_ms": _rows(base, "p99_ms")},
            "onnxruntime": {"version": self.ort_version, "median_ms": dict(self.ort_median),
                            "p99_ms": dict(self.ort_p99)},
        }
        totals = {"torch": sum(base.median_ms[n][0] for n in paths)}
        if all(n in self.ort_median for n in paths):
            totals["onnxruntime"] = sum(self.ort_median[n][0] for n in paths)
        meta["executor"] = {"name": self.cfg.executor, "paths": paths,
                            # Sum of batch-1 medians over the deployed set, per engine measured
                            "set_batch1_ms": {k: round(v, 4) for k, v in totals.items()},
                            "fastest_for_set": min(totals, key=totals.__getitem__),
                            "batch1_ms": {n: {"torch": base.median_ms[n][0],
                                              "onnxruntime": (self.ort_median.get(n) or
                                                              [None])[0]}
                                          for n in paths}}
        subnets = list(base.subnets)
        frontier = dict(meta.get("frontier", {}))
        if not self.cfg.keep_dominated and len(subnets) > 1:
            kept, dropped = pareto_filter(subnets, {n: median[n][0] for n in paths})
            if dropped:
                for d in dropped:
                    d["reason"] += " on the paths now serving them"
                frontier["dropped_after_executor"] = dropped
                subnets = kept
        meta["frontier"] = frontier
        names = {s.name for s in subnets}
        return Profile(tuple(subnets), base.batch_sizes,
                       {n: r for n, r in median.items() if n in names},
                       {n: r for n, r in p99.items() if n in names},
                       dict(base.load_ms), base.switch_us, meta)


def _torch_base(saved: Profile) -> Profile:
    """The torch-plan latencies of a saved profile (its main table may be another path's)."""
    rows = saved.meta.get("executors", {}).get("torch")
    if not rows:
        return saved
    names = {s.name for s in saved.subnets}
    if not names <= set(rows.get("median_ms", {})):
        return saved
    return replace(saved, median_ms={n: rows["median_ms"][n] for n in names},
                   p99_ms={n: rows["p99_ms"][n] for n in names})


def _renamed(deployed: Any) -> tuple[DeployedSubnet, ...]:
    return tuple(replace(d, name=name)
                 for name, d in name_by_macs(deployed, key=lambda d: (d.macs, d.name)))


def build_stack(cfg: StackConfig, log: Callable[[str], None] = lambda _: None,
                policy: Policy | None = None, net: Any = None) -> Stack:
    """Everything `cfg` describes (see the module doc). `net`: the checkpoint's SuperNet when
    the caller already loaded it (the server reads its input shape before the stack is up)."""
    from ..checkpoint import load_checkpoint

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    policy = policy or make_policy(cfg.policy)  # fail fast on a bad name, before any work
    if net is None:
        net = load_checkpoint(cfg.checkpoint).supernet
    net = net.eval()
    ident = checkpoint_identity(cfg.checkpoint)
    path = Path(cfg.profile) if cfg.profile else default_profile_path(cfg.checkpoint)
    threads = torch.get_num_threads()
    dataset_cache: list[Any] = []
    stats_path = default_stats_path(cfg.checkpoint)
    dkey = cfg.dataset_key()

    def dataset() -> Any:
        if not dataset_cache:
            from ..data import load_dataset

            log(f"loading dataset {cfg.dataset} for BN recalibration / test accuracy")
            dataset_cache.append(load_dataset(cfg.dataset, cfg.data_dir,
                                              test_subset=cfg.test_subset,
                                              **cfg.dataset_options))
        return dataset_cache[0]

    # The candidate pool: what a frontier file names, or N spread evenly in MACs.
    if cfg.deploy:
        points = load_frontier(cfg.deploy)
        pool, pool_accs = [p.subnet for p in points], [p.measured_acc for p in points]
    else:
        pool, pool_accs = choose_deployment(net, cfg.num_subnets), [None] * cfg.num_subnets
    pool_key = sorted(c.to_json() for c in pool)
    # After choosing the pool (which prefers SubNets the checkpoint has statistics for), so
    # the statistics written back by an earlier start do not change what the pool is.
    known_accs = load_subnet_stats(net, stats_path, ident["sha256"], dkey, log)

    profile: Profile | None = None
    if path.is_file() and not cfg.reprofile:
        saved = Profile.load(path)
        candidates = saved.meta.get("candidates")
        if candidates is not None:
            prefiltered = saved.meta.get("frontier", {}).get("measured_with") == "torch"
            same_set = sorted(candidates) == pool_key \
                and bool(saved.meta.get("keep_dominated")) == cfg.keep_dominated \
                and (prefiltered == cfg.filters_up_front or cfg.keep_dominated)
        else:  # a profile from before frontier filtering: its SubNets were the pool
            same_set = sorted(s.subnet.to_json() for s in saved.subnets) == pool_key \
                and cfg.keep_dominated
        if same_set and saved.matches(checkpoint=ident, threads=threads,
                                      max_batch=cfg.max_batch):
            profile = _torch_base(saved)
            log(f"reusing profile {path}")
        else:
            log(f"profile {path} is for another checkpoint, machine, thread count or "
                "deployment: measuring a new one")
    reused = profile is not None
    if profile is not None:
        deployed = tuple(profile.subnets)
        missing = [s.subnet for s in deployed if s.subnet not in net.subnet_norms]
        if missing:
            prepare_deployment(net, missing, [s.acc for s in deployed
                                              if s.subnet in missing],
                               dataset=dataset(), show_progress=cfg.show_progress)
        runtime = SubNetActRuntime(net, deployed)
    else:
        accs = [a if a is not None else known_accs.get(c) for c, a in
                zip(pool, pool_accs, strict=True)]
        needs_data = any(c not in net.subnet_norms for c in pool) or any(a is None for a in accs)
        measured: dict[SubnetConfig, float] = {}

        def write_back(c: SubnetConfig, acc: float) -> None:
            measured[c] = acc
            if cfg.save_stats:  # after each SubNet, so an interrupted start keeps its work
                save_subnet_stats(net, stats_path, ident["sha256"], dkey, measured)

        prepared = prepare_deployment(net, pool, accs, dataset=dataset() if needs_data else None,
                                      show_progress=cfg.show_progress, on_measured=write_back)
        # Candidates are c0.. by MACs; the deployed ones are renamed s0.. after filtering.
        candidates = tuple(replace(d, name=name) for name, d in
                           name_by_macs(prepared, key=lambda d: d.macs, prefix="c"))
        # Every candidate is profiled once, and the frontier is read off that profile's
        # batch-1 medians: the same numbers the policy plans with, so the filter applied
        # again later (when an executor changes a SubNet's path) agrees with this one.
        probe = SubNetActRuntime(net, candidates)
        log(f"profiling {len(candidates)} candidate SubNets at batch sizes up to "
            f"{cfg.max_batch} ({threads} threads)")
        full = measure_profile(probe, max_batch=cfg.max_batch, runs=cfg.profile_runs,
                               checkpoint=ident, show_progress=cfg.show_progress)
        dropped: list[dict[str, Any]] = []
        kept = candidates
        if cfg.filters_up_front and len(candidates) > 1:
            kept_list, dropped = pareto_filter(candidates,
                                               {d.name: full.median_ms[d.name][0]
                                                for d in candidates})
            kept = tuple(kept_list)
        deployed = _renamed(kept)
        new_name = {k.name: d.name for k, d in zip(sorted(kept, key=lambda d: (d.macs, d.name)),
                                                   deployed, strict=True)}
        for d in dropped:
            d["candidate"] = d.pop("name")  # candidates are named c0.. by MACs
            d["dominated_by"] = new_name[d["dominated_by"]]
            log(f"not deploying candidate {d['candidate']} ({d['subnet']}): dominated by "
                f"{d['dominated_by']}: {d['reason']}")
        runtime = SubNetActRuntime(net, deployed)
        old = {v: k for k, v in new_name.items()}
        profile = Profile(deployed, full.batch_sizes,
                          {n: full.median_ms[old[n]] for n in old},
                          {n: full.p99_ms[old[n]] for n in old},
                          {n: full.load_ms[old[n]] for n in old if old[n] in full.load_ms},
                          full.switch_us, dict(full.meta))
        profile.meta.update({
            "candidates": pool_key, "keep_dominated": cfg.keep_dominated,
            "frontier": {"criterion": "non-dominated in (acc, batch-1 median latency)",
                         "measured_with": "torch" if cfg.executor == "torch"
                         else "the path serving each SubNet", "dropped": dropped},
            "executors": {"torch": {"median_ms": _rows(profile, "median_ms"),
                                    "p99_ms": _rows(profile, "p99_ms")}},
        })
        profile.save(path)
        log(f"saved profile {path}")
    publisher = None
    if cfg.executor != "torch":
        executor = make_executor(cfg.executor, net, runtime.configs(), ExecutorConfig(
            ort_memory_budget_mb=cfg.ort_memory_budget_mb,
            cache_dir=cfg.ort_cache_dir or str(default_ort_cache_dir(cfg.checkpoint)),
            checkpoint_sha256=ident["sha256"], threads=threads, background=cfg.ort_background))
        assert isinstance(executor, OnnxRuntimeExecutor)
        executor.log = log
        runtime.use_executor(executor)
        publisher = _ProfilePublisher(profile, runtime, executor, cfg, path, log)
        executor.on_session(publisher.session_ready)
        # Sessions found in the cache load here (no export), so a restart is served by them
        # from the first request; missing ones build in the background.
        executor.start()
        profile = publisher.current
    else:
        profile = replace(profile, meta={**profile.meta, "executor": {
            "name": "torch", "paths": {s.name: "torch" for s in profile.subnets}}})
    backend: Any = runtime
    tmp = None
    if policy.runtime_kind == "separate":
        tmp = tempfile.TemporaryDirectory(prefix="weightshare-models-")
        store = ExtractedModelStore.from_runtime(runtime, tmp.name)
        backend = SeparateModelsRuntime(store, policy.max_held or 1, runtime.input_shape(),
                                        runtime.num_classes)
    if cfg.switch_mode is not None:
        tmp = tmp or tempfile.TemporaryDirectory(prefix="weightshare-models-")
        # A registry (weightshare.serve.backends): FastSwitch's "delta" plugs in from accel
        backend = make_switch_backend(cfg.switch_mode, runtime, tmp.name)
        log(f"switch mode {cfg.switch_mode}: one SubNet held at a time")
    stack = Stack(runtime, profile, policy, backend, path, reused, tmp, cfg.executor, publisher)
    if publisher is not None:
        publisher.listeners.append(lambda p: setattr(stack, "profile", p))
    return stack
