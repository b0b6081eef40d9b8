"""Assemble a serving stack from a checkpoint: deployment, runtime, profile, policy, backend.

`build_stack(StackConfig(...))` is what `weightshare serve`, `serve profile`,
`serve simulate` and the benchmark share:

1. load the checkpoint once;
2. reuse the saved profile (default `CKPT.profile.json`) when it matches the
   checkpoint's SHA-256, the thread count, the batch limit and this machine --
   its deployed SubNets and accuracies come with it; otherwise pick the
   SubNets (`--deploy frontier.json`, else N spread evenly in MACs), give each
   BN statistics and a test accuracy (recalibrating / evaluating only what the
   checkpoint lacks), measure a fresh profile and save it;
3. build the policy by name, and the backend it needs: the SubNetAct runtime,
   or for separate-model policies (INFaaS) a store of extracted models on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .policies import Policy, make_policy
from .profile import Profile, checkpoint_identity, measure_profile
from .runtime import (
    ExtractedModelStore,
    SeparateModelsRuntime,
    SubNetActRuntime,
    choose_deployment,
    load_frontier,
    prepare_deployment,
)

__all__ = ["Stack", "StackConfig", "build_stack", "default_profile_path"]


def default_profile_path(checkpoint: str | os.PathLike) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.name + ".profile.json")


@dataclass(frozen=True)
class StackConfig:
    """How to serve a checkpoint.

    deploy: a frontier JSON file naming the SubNets (and accuracies); else
        `num_subnets` spread evenly in MACs.
    dataset, data_dir, test_subset: for BN recalibration and test accuracy of SubNets the
        checkpoint has no statistics / accuracy for (loaded only when needed).
    profile: where the profile is read from / written to (default beside the checkpoint).
    max_batch: largest batch profiled (and allowed per request).
    threads: torch intra-op threads (None: leave torch's default).
    switch_mode: hold one SubNet at a time (small-memory devices) instead of the whole
        SuperNet: "full" loads the next SubNet's whole extracted model on a switch, "delta"
        reads only the slices it lacks from a safetensors SuperNet file (FastSwitch).
        None: the policy's own backend.
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

    def __post_init__(self) -> None:
        if self.switch_mode not in (None, "full", "delta"):
            raise ValueError(f"switch_mode must be 'full' or 'delta', got {self.switch_mode!r}")
        if self.num_subnets < 1:
            raise ValueError("num_subnets must be >= 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")


@dataclass
class Stack:
    runtime: SubNetActRuntime
    profile: Profile
    policy: Policy
    backend: Any
    profile_path: Path
    profile_reused: bool
    _tmp: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def build_stack(cfg: StackConfig, log: Callable[[str], None] = lambda _: None,
                policy: Policy | None = None) -> Stack:
    from ..checkpoint import load_checkpoint

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    policy = policy or make_policy(cfg.policy)  # fail fast on a bad name, before any work
    net = load_checkpoint(cfg.checkpoint).supernet.eval()
    ident = checkpoint_identity(cfg.checkpoint)
    path = Path(cfg.profile) if cfg.profile else default_profile_path(cfg.checkpoint)
    threads = torch.get_num_threads()
    dataset_cache: list[Any] = []

    def dataset() -> Any:
        if not dataset_cache:
            from ..data import load_dataset

            log(f"loading dataset {cfg.dataset} for BN recalibration / test accuracy")
            dataset_cache.append(load_dataset(cfg.dataset, cfg.data_dir,
                                              test_subset=cfg.test_subset,
                                              **cfg.dataset_options))
        return dataset_cache[0]

    profile: Profile | None = None
    if path.is_file() and not cfg.reprofile:
        saved = Profile.load(path)
        wanted = [c for c, _ in load_frontier(cfg.deploy)] if cfg.deploy else None
        same_set = wanted is None or set(wanted) == {s.subnet for s in saved.subnets}
        if same_set and (cfg.deploy or len(saved.subnets) == cfg.num_subnets) and saved.matches(
                checkpoint=ident, threads=threads, max_batch=cfg.max_batch):
            profile = saved
            log(f"reusing profile {path}")
        else:
            log(f"profile {path} is for another checkpoint, machine, thread count or "
                "deployment: measuring a new one")
    if profile is not None:
        subnets = [s.subnet for s in profile.subnets]
        accs: list[float | None] = [s.acc for s in profile.subnets]
    elif cfg.deploy:
        pairs = load_frontier(cfg.deploy)
        subnets, accs = [c for c, _ in pairs], [a for _, a in pairs]
    else:
        subnets, accs = choose_deployment(net, cfg.num_subnets), None
    needs_data = any(c not in net.subnet_norms for c in subnets) or accs is None \
        or any(a is None for a in accs)
    deployed = prepare_deployment(net, subnets, accs, dataset=dataset() if needs_data else None)
    runtime = SubNetActRuntime(net, deployed)
    reused = profile is not None
    if profile is None:
        log(f"profiling {len(deployed)} SubNets at batch sizes up to {cfg.max_batch} "
            f"({threads} threads)")
        profile = measure_profile(runtime, max_batch=cfg.max_batch, runs=cfg.profile_runs,
                                  checkpoint=ident)
        profile.save(path)
        log(f"saved profile {path}")
    backend: Any = runtime
    tmp = None
    if policy.runtime_kind == "separate":
        tmp = tempfile.TemporaryDirectory(prefix="weightshare-models-")
        store = ExtractedModelStore.from_runtime(runtime, tmp.name)
        backend = SeparateModelsRuntime(store, policy.max_held or 1, runtime.input_shape(),
                                        runtime.num_classes)
    if cfg.switch_mode is not None:
        tmp = tmp or tempfile.TemporaryDirectory(prefix="weightshare-models-")
        if cfg.switch_mode == "delta":
            from ..accel.fastswitch import DeltaSwitchRuntime

            backend = DeltaSwitchRuntime(
                net, {n: d.subnet for n, d in runtime.deployed.items()}, tmp.name)
        else:
            store = ExtractedModelStore.from_runtime(runtime, tmp.name)
            backend = SeparateModelsRuntime(store, 1, runtime.input_shape(),
                                            runtime.num_classes)
        log(f"switch mode {cfg.switch_mode}: one SubNet held at a time")
    return Stack(runtime, profile, policy, backend, path, reused, tmp)
