"""Executors: what runs one batch of one deployed SubNet, chosen per deployment by name.

The runtime (`SubNetActRuntime`) owns the SuperNet's weights and per-SubNet BN
statistics; an executor turns "run SubNet s on this batch" into compute. Each
is registered by name (`@register_executor`), so the server, the stack and the
CLI look them up instead of branching, and a new engine plugs in here:

- ``torch`` (`torch_plan`): the elastic forward on the one copy of the weights, each
  SubNet's weight slices bound once as a *plan* (1x1 convs as matmuls on views of the
  SuperNet's weights, never copies; only the small transformed kernels are copied, BN
  folded in). SuperNets without a planner (`register_planner`) run `net(x, subnet)`.
- ``onnxruntime`` (`ort`): an optimised `onnxruntime.InferenceSession` per deployed
  SubNet, built in a background thread at deploy time and cached on disk
  (`session_cache_key`), so a restart loads instead of rebuilding; a memory budget caps
  the sessions, and any SubNet without one is served by the ``torch`` plan. No request
  waits for a build: `run` only looks a session up.
- ``auto`` (`ort`): the same sessions, but each SubNet is routed to whichever path was
  measured faster for it on this machine (see `OnnxRuntimeExecutor.route`), recorded in
  the profile.

The package is split by job, imports pointing one way: `base` (the `Executor` protocol,
`ExecutorConfig`, the registry) <- `torch_plan` <- `ort` (which serves SubNets without a
session on the torch plan). Importing the package imports both implementations, so every
executor and planner above is registered; callers import from here.
"""

from __future__ import annotations

from .base import (
    EXECUTORS,
    Executor,
    ExecutorConfig,
    ExecutorFactory,
    list_executors,
    make_executor,
    register_executor,
)
from .ort import ORT_PROVIDER, OnnxRuntimeExecutor, SessionInfo, session_cache_key
from .torch_plan import LAYOUT, PLANNERS, Planner, TorchExecutor, register_planner

__all__ = [
    "EXECUTORS",
    "LAYOUT",
    "ORT_PROVIDER",
    "PLANNERS",
    "Executor",
    "ExecutorConfig",
    "ExecutorFactory",
    "OnnxRuntimeExecutor",
    "Planner",
    "SessionInfo",
    "TorchExecutor",
    "list_executors",
    "make_executor",
    "register_executor",
    "register_planner",
    "session_cache_key",
]
