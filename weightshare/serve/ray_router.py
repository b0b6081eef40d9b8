"""Slack-aware request routing across Ray Serve replicas (a Ray Serve `RequestRouter`).

SlackFit runs on each replica's own queue: the SubNet and batch it picks depend on how
much slack the requests in that queue have left. What the router can do for it is send a
new request where it will wait least, i.e. where it keeps the most slack. Ray's default
router (power of two choices) compares two replicas' *counts* of ongoing requests; this
one ranks every replica by its expected wait in milliseconds: the ongoing requests the
router knows of (Ray's queue-length cache, updated on every send and completion) times the
replica's own measured drain time per request (reported by the replica through
`record_routing_stats`: batch service time / requests per batch, which changes with the
SubNets SlackFit chooses and with what else runs on that core). A replica that serves
bigger SubNets or shares its core drains slower and so gets fewer requests; with equal
replicas it is join-the-shortest-queue over all replicas, not two sampled ones.

The base class takes the first rank whose replica accepts (below `max_ongoing_requests`),
probing queue lengths it has no fresh entry for, and backs off only when every rank
refuses, so the ranking never blocks a request a replica could take.
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

__all__ = ["DEFAULT_MS_PER_REQUEST", "SlackAwareRouter", "expected_wait_ms"]

# Used until a replica has reported its drain time (the first stats poll).
DEFAULT_MS_PER_REQUEST = 1.0


def expected_wait_ms(ongoing: int | None, stats: dict[str, Any] | None) -> float:
    """How long a request sent now would wait on a replica: ongoing requests times the
    replica's drain time per request. `ongoing` None (no cache entry): the replica's own
    last reported count."""
    stats = stats or {}
    per = float(stats.get("ms_per_request") or DEFAULT_MS_PER_REQUEST)
    n = ongoing if ongoing is not None else int(stats.get("pending", 0))
    return n * per


class SlackAwareRouter(FIFOMixin, RequestRouter):
    """Every replica ranked by expected wait (ms); ties broken at random."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        cache = self.replica_queue_len_cache

        def key(r: RunningReplica) -> tuple[float, float]:
            return expected_wait_ms(cache.get(r.replica_id), r.routing_stats), random.random()

        return [[r] for r in sorted(candidate_replicas, key=key)]
