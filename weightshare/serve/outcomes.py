"""What happened to each request, and the serving metrics computed from it.

The simulator and the load generator both produce `Outcome` records and
summarise them with the one `summarize`, so their numbers mean the same:
SLO attainment (answered correctly within the deadline, over all requests
sent), mean accuracy of the served predictions (the profiled accuracy of the
SubNet that answered), throughput, p50/p99 latency of answered requests, and
counts of drops (deadline could not be met), rejections (queue full) and errors.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["STATUSES", "Outcome", "summarize"]

# ok: answered in time; late: answered after the deadline (or 504 for it); dropped: the
# policy gave up on it; rejected: admission control (429); error: anything else.
STATUSES = ("ok", "late", "dropped", "rejected", "error")


@dataclass(frozen=True)
class Outcome:
    """One request's fate. Times are seconds from the start of the trace."""

    id: int
    arrival: float
    deadline: float
    status: str
    finish: float | None = None
    subnet: str | None = None
    acc: float | None = None
    batch: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}; one of {STATUSES}")

    @property
    def latency_ms(self) -> float | None:
        return None if self.finish is None else (self.finish - self.arrival) * 1000.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def summarize(outcomes: Iterable[Outcome], duration_s: float | None = None) -> dict[str, Any]:
    """Aggregate metrics. `duration_s` defaults to first arrival .. last finish."""
    rows = list(outcomes)
    n = len(rows)
    counts = Counter(o.status for o in rows)
    served = [o for o in rows if o.status in ("ok", "late")]
    lat = sorted(o.latency_ms for o in served if o.latency_ms is not None)
    accs = [o.acc for o in served if o.acc is not None]
    if duration_s is None and rows:
        end = max((o.finish for o in rows if o.finish is not None),
                  default=max(o.arrival for o in rows))
        duration_s = max(end - min(o.arrival for o in rows), 1e-9)
    chosen = Counter(o.subnet for o in served if o.subnet is not None)
    batches = [o.batch for o in served if o.batch]
    return {
        "requests": n,
        "slo_attainment": counts["ok"] / n if n else float("nan"),
        "mean_acc": statistics.fmean(accs) if accs else float("nan"),
        # Accuracy of the SLO-meeting answers only, counting each missed request as 0 --
        # the "effective" accuracy a user sees.
        "effective_acc": (sum(o.acc or 0.0 for o in rows if o.status == "ok") / n) if n
        else float("nan"),
        "throughput_rps": len(served) / duration_s if duration_s else float("nan"),
        "goodput_rps": counts["ok"] / duration_s if duration_s else float("nan"),
        "p50_ms": _quantile(lat, 0.50),
        "p99_ms": _quantile(lat, 0.99),
        "ok": counts["ok"],
        "late": counts["late"],
        "dropped": counts["dropped"],
        "rejected": counts["rejected"],
        "errors": counts["error"],
        "mean_batch": statistics.fmean(batches) if batches else float("nan"),
        "subnets": dict(sorted(chosen.items())),
        "duration_s": duration_s,
    }
