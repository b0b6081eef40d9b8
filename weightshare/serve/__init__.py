"""SuperServe: serve a SuperNet adaptively under unpredictable load.

Mechanism apart from policy. The mechanism: `runtime` (SubNetAct: one SuperNet
runs any deployed SubNet per batch, no reload), `batching` (the deadline-ordered
bounded queue), `worker` (the one inference thread), `server` (Open Inference
Protocol v2 over FastAPI), `metrics` (Prometheus), `simulate` (the same loop on
a virtual clock), `loadgen` + `traces` (open-loop replay of synthetic and
Azure-Functions-shaped traces). The policy: `policies` (SlackFit, fixed SubNet
with AIMD batching, INFaaS-style switching, max-accuracy), which see only the
queue, the clock reading and the `profile` of latencies per SubNet and batch
(measured by `profiling`). `stack` assembles all of it from a checkpoint;
`backends` holds the one-SubNet-resident switch modes (FastSwitch plugs in there),
`memory` and `subnet_stats` are shared helpers, `live` runs the real server for one
replay. What is deployed (SubNets, frontier files, naming) is
`weightshare.deployment`; experiments built on serving are `weightshare.experiments`.

Submodules are imported on use: the policy, queue, trace and simulator modules
need no torch.
"""

from __future__ import annotations

__all__ = [
    "backends",
    "batching",
    "core",
    "live",
    "loadgen",
    "memory",
    "metrics",
    "outcomes",
    "policies",
    "profile",
    "profiling",
    "runtime",
    "server",
    "simulate",
    "stack",
    "subnet_stats",
    "traces",
    "worker",
]
