"""How hard a live experiment drives the server: its SLO and request rate, from a profile.

The demo and the live FastSwitch comparison both replay a bursty trace against a
server whose latencies the serving profile knows; each picks its own defaults
(`serving_demo.DemoConfig`, `fastswitch_live.live_switching`) and derives the
numbers here, so neither borrows the other's settings.
"""

from __future__ import annotations

from ..serve.profile import Profile

__all__ = ["slo_and_rate"]


def slo_and_rate(profile: Profile, *, slo_ms: float | None = None, rate: float | None = None,
                 load: float = 0.7, max_rate: float = 60.0) -> tuple[float, float]:
    """(slo_ms, rate) for a trace replayed against a server with `profile`.

    SLO (unless given): five times the most accurate SubNet's batch-1 latency plus 20 ms
    for HTTP and JSON, which the profile does not see. Rate (unless given): `load` times
    what the most accurate SubNet sustains when its batches take at most half the SLO --
    so a burst overwhelms a fixed large SubNet while smaller SubNets and bigger batches
    can absorb it -- capped at `max_rate` because the load generator shares the machine
    with the server (on 2 busy cores, bursts above ~60 req/s on average overwhelm every
    policy alike).
    """
    big = profile.most_accurate()
    slo = slo_ms or round(5.0 * profile.latency_ms(big, 1, "median") + 20.0, 1)
    if rate is not None:
        return slo, rate
    sustained = [b * 1000.0 / profile.latency_ms(big, b, "median") for b in profile.batch_sizes
                 if profile.latency_ms(big, b, "median") <= slo / 2]
    peak = max(sustained or [1000.0 / profile.latency_ms(big, 1, "median")])
    return slo, round(min(max_rate, load * peak), 1)
