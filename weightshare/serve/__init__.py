"""SuperServe: serve a SuperNet adaptively under unpredictable load.

Mechanism apart from policy. The mechanism: `runtime` (SubNetAct: one SuperNet
runs any deployed SubNet per batch, no reload), `batching` (the deadline-ordered
bounded queue), `worker` (the one inference thread), `server` (Open Inference
Protocol v2 over FastAPI), `metrics` (Prometheus), `simulate` (the same loop on
a virtual clock), `loadgen` + `traces` (open-loop replay of synthetic and
Azure-Functions-shaped traces). The policy: `policies` (SlackFit, fixed SubNet
with AIMD batching, INFaaS-style switching, max-accuracy), which see only the
queue, the clock reading and the `profile` of latencies per SubNet and batch.
`stack` assembles all of it from a checkpoint.

Submodules are imported on use: the policy, queue, trace and simulator modules
need no torch.
"""

from __future__ import annotations

__all__ = [
    "batching",
    "core",
    "loadgen",
    "metrics",
    "outcomes",
    "policies",
    "profile",
    "runtime",
    "server",
    "simulate",
    "stack",
    "traces",
    "worker",
]
