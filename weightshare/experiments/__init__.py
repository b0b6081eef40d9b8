"""Experiments: the demo, live comparisons and sweeps, built on the library below.

The top layer but the CLI: these modules call search, serve, accel and train; no
library module imports them. The CLI and the benchmarks call them and print.

- `load`: the SLO and request rate a replayed trace gets from a serving profile.
- `serving_demo`: SlackFit vs a fixed SubNet on a short bursty trace against the
  real server (the last step of `weightshare demo`), its table and deploy file.
- `comparisons`: the same trace on the server and in the simulator; the server's
  throughput at saturation vs the raw model's (`benchmarks/serving.py`).
- `fastswitch_live`: the real server in normal vs `--switch-mode delta` on one trace
  (`benchmarks/accel.py --live`).
- `pipeline`: `weightshare demo` end to end (data, SuperNet, training, export, serving).

Submodules are imported on use.
"""

from __future__ import annotations

__all__ = ["comparisons", "fastswitch_live", "load", "pipeline", "serving_demo"]
