"""The serving step of `weightshare demo`: SlackFit vs a fixed SubNet against the real server.

`serving_demo` replays one short bursty trace (gamma arrivals) against a freshly
started server on 127.0.0.1 per policy, with the real load generator in a separate
process; `format_demo_table` prints the result; `demo_serving` does it from a
checkpoint (build the stack, run, release). `write_deploy_file` turns training's
evaluation rows into the frontier file the stack deploys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..serve.live import replay
from ..serve.profile import Profile
from ..serve.traces import make_trace
from .load import slo_and_rate

__all__ = [
    "DemoConfig",
    "demo_serving",
    "demo_settings",
    "format_demo_table",
    "serving_demo",
    "write_deploy_file",
]


@dataclass(frozen=True)
class DemoConfig:
    """The serving step of the demo.

    seconds, cv2: length and burstiness (squared coefficient of variation of the gamma
        inter-arrival times) of the replayed trace.
    slo_ms: per-request deadline; None: `demo_settings` derives it from the profile.
    rate: mean requests per second; None: derived from the profile, at most `max_rate`.
    fixed: the fixed SubNet to compare with; None: the deployed SubNet whose accuracy is
        closest to SlackFit's measured mean accuracy (the comparison at equal accuracy).
    """

    seconds: float = 4.0
    cv2: float = 8.0
    slo_ms: float | None = None
    rate: float | None = None
    max_rate: float = 60.0
    load: float = 0.7
    fixed: str | None = None
    seed: int = 0
    client: str = "process"

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.cv2 <= 0 or self.max_rate <= 0 or self.load <= 0:
            raise ValueError("seconds, cv2, max_rate and load must be > 0")


def demo_settings(profile: Profile, cfg: DemoConfig) -> tuple[float, float]:
    """(slo_ms, rate) for the demo trace: `load.slo_and_rate` with the demo's settings."""
    return slo_and_rate(profile, slo_ms=cfg.slo_ms, rate=cfg.rate, load=cfg.load,
                        max_rate=cfg.max_rate)


def _nearest_fixed(profile: Profile, acc: float) -> str:
    if math.isnan(acc):
        return profile.most_accurate()
    # Ties go to the more accurate SubNet: the comparison should not favour SlackFit.
    return min(profile.subnets, key=lambda s: (abs(s.acc - acc), -s.acc)).name


def serving_demo(stack: Any, cfg: DemoConfig | None = None,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """SlackFit vs a fixed SubNet on the same short bursty trace, each on a freshly started
    server on 127.0.0.1 with the real load generator. Returns the settings and one summary
    row per policy (`format_demo_table` prints them)."""
    cfg = cfg or DemoConfig()
    prof = stack.profile
    slo_ms, rate = demo_settings(prof, cfg)
    spec = f"gamma:rate={rate:g},cv2={cfg.cv2:g},duration={cfg.seconds:g},seed={cfg.seed}"
    trace = make_trace(spec)
    log(f"replaying {spec} ({len(trace)} requests, SLO {slo_ms:g} ms) against "
        "http://127.0.0.1 (free port), one fresh server per policy")
    rows = []
    t0 = time.perf_counter()
    first = replay(stack, "slackfit", trace, slo_ms=slo_ms, client=cfg.client)
    rows.append({"policy": "slackfit", **first.summary, "http_statuses": first.statuses})
    fixed = cfg.fixed or _nearest_fixed(prof, first.summary["mean_acc"])
    fixed = prof.resolve(fixed)
    res = replay(stack, f"fixed:{fixed}", trace, slo_ms=slo_ms, client=cfg.client)
    rows.append({"policy": f"fixed:{fixed}", **res.summary, "http_statuses": res.statuses})
    sf, fx = rows[0]["slo_attainment"], rows[1]["slo_attainment"]
    return {"trace": spec, "requests": len(trace), "slo_ms": slo_ms, "rate": rate,
            "rows": rows, "wall_s": round(time.perf_counter() - t0, 2),
            "slo_ratio": sf / fx if fx > 0 else math.inf}


def format_demo_table(result: dict[str, Any]) -> str:
    """The demo's SLO / accuracy table, one line per policy, plus the SlackFit ratio."""
    lines = [f"{'policy':<14} {'SLO met %':>9} {'mean acc %':>10} {'p50 ms':>7} "
             f"{'p99 ms':>7} {'req/s':>6} {'missed':>6}  SubNets used"]
    for r in result["rows"]:
        missed = r["late"] + r["dropped"] + r["rejected"] + r["errors"]
        used = ", ".join(f"{k}x{v}" for k, v in r["subnets"].items()) or "-"
        lines.append(f"{r['policy']:<14} {100 * r['slo_attainment']:9.1f} "
                     f"{r['mean_acc']:10.2f} {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} "
                     f"{r['throughput_rps']:6.1f} {missed:6d}  {used}")
    ratio = result["slo_ratio"]
    lines.append(f"SlackFit meets {'all' if math.isinf(ratio) else f'{ratio:.2f}x'} "
                 f"{'' if math.isinf(ratio) else 'the '}SLO attainment of "
                 f"{result['rows'][1]['policy']} on {result['trace']} "
                 f"(SLO {result['slo_ms']:g} ms)")
    return "\n".join(lines)


def write_deploy_file(rows: Sequence[dict[str, Any]], path: Any) -> Any:
    """A frontier file (`--deploy`) from evaluation rows ({"subnet": {...}, "acc": ...}),
    one entry per distinct SubNet: serving then needs neither BN recalibration nor test
    accuracy, because training saved both. Written by `weightshare.deployment.save_frontier`
    (the one format, atomically); the rows' accuracies are measured test accuracies."""
    import json

    from ..deployment import FrontierPoint, save_frontier
    from ..space import SubnetConfig

    seen: dict[str, FrontierPoint] = {}
    for r in rows:
        seen.setdefault(json.dumps(r["subnet"], sort_keys=True), FrontierPoint(
            SubnetConfig.from_dict(r["subnet"]), None, float(r["acc"]), r.get("macs"),
            r.get("params"), None))
    return save_frontier(path, list(seen.values()), supernet=None,
                         extra={"source": "training evaluation rows"})


def demo_serving(stack_config: Any, demo: DemoConfig | None = None,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The demo's serving step from a checkpoint: build the stack (profile measured, or
    reused when it matches), run `serving_demo`, release everything. The result carries
    the printed `table`; no server or client process is left running."""
    from ..serve.stack import build_stack

    t0 = time.perf_counter()
    stack = build_stack(stack_config, log=log)
    try:
        prof = stack.profile
        log(f"deployed {len(prof.subnets)} SubNets: " + ", ".join(
            f"{s.name} {s.acc:.1f} % {prof.latency_ms(s.name, 1, 'median'):.1f} ms"
            for s in prof.subnets) + " (accuracy, batch-1 latency)")
        result = serving_demo(stack, demo, log)
    finally:
        stack.close()
    result["table"] = format_demo_table(result)
    result["total_s"] = round(time.perf_counter() - t0, 2)
    return result
