"""Run a federated training in one process with Flower's Simulation Engine.

`simulate(cfg, out_dir)` builds the same ServerApp and ClientApp that a
deployment uses (with the settings passed directly instead of through the
run config) and hands them to `flwr.simulation.run_simulation`, which runs
the ClientApps of `cfg.clients` virtual SuperNodes in Ray actors. `parallel`
actors train at once, each with `threads` torch threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from .client import make_client_app
from .config import FedConfig
from .server import RoundHook, make_server_app, read_history

__all__ = ["simulate"]


def simulate(cfg: FedConfig, out_dir: str | Path, *, parallel: int | None = None,
             threads: int = 1, max_client_macs: float = 0.0, on_round: RoundHook | None = None,
             verbose: bool = False) -> dict[str, Any]:
    """Train (or resume) in simulation; returns the history written to `out_dir`."""
    parallel = parallel or max(1, (os.cpu_count() or 1) // max(1, threads))
    server = make_server_app(cfg, out_dir, threads=threads, max_client_macs=max_client_macs,
                             on_round=on_round)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": parallel, "include_dashboard": False,
                             "log_to_driver": verbose}}
    run_simulation(server_app=server, client_app=make_client_app(cfg),
                   num_supernodes=cfg.clients, backend_config=backend,
                   verbose_logging=verbose)
    history = read_history(out_dir)
    if not history["rounds"]:
        raise RuntimeError(f"the simulation finished without a round; see the log ({out_dir})")
    return history
