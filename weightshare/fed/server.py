"""The Flower ServerApp: the round loop, server-side evaluation, checkpoints and resume.

The loop drives the `SuperFedNAS` strategy's `configure_train` /
`aggregate_train` over the Grid itself (rather than `Strategy.start`) so that
it can resume from a checkpoint, stop exactly at a client-compute budget, give
up on a dead node within seconds (`exchange`), evaluate the corner SubNets
every `eval_every` rounds (after BN recalibration on the server's calibration
images when BN is trained), and write a checkpoint in the same format as
centralized training: search, export and serving work on it unchanged (a run
with `bn="identity"` must be evaluated without BN recalibration).

Outputs in `out_dir`: `checkpoint.pt` (atomic, after every evaluation),
`history.json` (one row per round), `clients.json` (per-client data sizes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ..checkpoint import CheckpointError, load_checkpoint, plain, save_checkpoint
from ..deployment import dataset_meta
from ..io import atomic_write_text, read_json
from ..models import SuperNet, create_supernet
from ..space import SubnetConfig
from ..train.evaluate import accuracy, recalibrate
from .client import client_partitions, load_fed_dataset, set_identity_bn
from .config import FedConfig
from .strategy import SuperFedNAS, exchange

__all__ = ["run_server", "make_server_app", "evaluate_corners", "client_sizes", "budget_floor"]

RoundHook = Callable[[dict[str, Any]], None]


def client_sizes(cfg: FedConfig) -> dict[str, Any]:
    """Per-client sample counts and label histograms of the Dirichlet split."""
    ds = load_fed_dataset(cfg)
    labels = ds.train.labels
    parts = client_partitions(cfg)
    return {"alpha": cfg.alpha, "clients": [
        {"client": i, "examples": len(p),
         "labels": torch.bincount(labels[torch.as_tensor(p)], minlength=ds.num_classes).tolist()}
        for i, p in enumerate(parts)]}


def evaluate_corners(net: SuperNet, cfg: FedConfig) -> dict[str, float]:
    """Test accuracy (percent) of the corner SubNets (FedAvg: its one SubNet).

    With `bn="train"` each is BN-recalibrated on the server's calibration images
    first; with `bn="identity"` (the reference's default) BN stays the identity it
    was trained with, so there is nothing to recalibrate (as the reference's test).
    """
    ds = load_fed_dataset(cfg)
    net.subnet_norms.clear()  # statistics of older weights are stale
    if cfg.mode == "fedavg":
        subnets = {"subnet": SubnetConfig.from_json(cfg.subnet) if cfg.subnet
                   else net.space.largest()}
    else:
        subnets = {"largest": net.space.largest(), "smallest": net.space.smallest()}
        for i, c in enumerate(net.space.corners()):
            if c not in subnets.values():
                subnets[f"corner{i}"] = c
    out = {}
    for name, subnet in subnets.items():
        if cfg.bn == "train":
            recalibrate(net, subnet, ds)
        out[f"acc_{name}"] = accuracy(net, subnet, ds)
    return out


def _resume(ckpt: Path, net: SuperNet, strategy: SuperFedNAS, cfg: FedConfig
            ) -> tuple[int, list[dict[str, Any]]]:
    if not ckpt.exists():
        return 1, []
    loaded = load_checkpoint(ckpt)
    fed = loaded.train_state.get("fed")
    if not fed:
        raise CheckpointError(f"{ckpt} is not a federated checkpoint; choose another --out")
    if fed.get("config", {}).get("supernet") != cfg.supernet or loaded.supernet.name != net.name:
        raise CheckpointError(f"{ckpt} was written by a different run; choose another --out")
    net.load_state_dict(loaded.supernet.state_dict())
    for sub, stats in loaded.supernet.subnet_norms.items():
        net.set_subnet_stats(sub, stats)
    strategy.load_state_dict(fed["strategy"])
    log(INFO, "resuming from %s after round %s", ckpt, fed["round"])
    return int(fed["round"]) + 1, list(fed["history"])


def budget_floor(net: SuperNet, cfg: FedConfig) -> float:
    """Below this many MACs left, no client could train one more image: the budget is spent."""
    subnet = (SubnetConfig.from_json(cfg.subnet) if cfg.mode == "fedavg" and cfg.subnet
              else net.space.largest() if cfg.mode == "fedavg" else net.space.smallest())
    return cfg.per_round * 3.0 * net.cost(subnet).macs


def run_server(grid: Grid, cfg: FedConfig, out_dir: str | Path, *, threads: int = 1,
               max_client_macs: float = 0.0, timeout: float | None = None,
               on_round: RoundHook | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the federated training; returns the per-round history.

    With `max_client_macs` the run stops at that much client training compute,
    not past it: each round's clients may spend at most (what is left) / K
    MACs each (a client stops mid-epoch at its cap), and the run ends once less
    than one image per client is left (or at `cfg.rounds`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    net = create_supernet(cfg.supernet, **cfg.supernet_args)
    if cfg.bn == "identity":
        set_identity_bn(net)
    strategy = SuperFedNAS(cfg, net, threads=threads)
    strategy.summary()
    ckpt = out / "checkpoint.pt"
    start, history = _resume(ckpt, net, strategy, cfg)
    atomic_write_text(out / "clients.json", _json(client_sizes(cfg)))
    spent = sum(float(r.get("client_macs", 0.0)) for r in history)
    floor = budget_floor(net, cfg) if max_client_macs else 0.0
    for rnd in range(start, cfg.rounds + 1):
        if max_client_macs and max_client_macs - spent < floor:
            log(INFO, "client compute budget %.4g MACs spent (%.4g) after round %s",
                max_client_macs, spent, rnd - 1)
            break
        t0 = time.perf_counter()
        strategy.client_budget = ((max_client_macs - spent) / cfg.per_round
                                  if max_client_macs else 0.0)
        messages = list(strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid))
        replies, _ = exchange(grid, messages, cfg.reply_timeout if timeout is None else timeout)
        _, metrics = strategy.aggregate_train(rnd, replies)
        row: dict[str, Any] = {"round": rnd, **dict(metrics or {})}
        spent += float(row.get("client_macs", 0.0))
        row["total_client_macs"] = spent
        last = rnd == cfg.rounds or bool(max_client_macs and max_client_macs - spent < floor)
        if rnd % cfg.eval_every == 0 or last:
            row.update(evaluate_corners(net, cfg))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if "acc_largest" in row or "acc_subnet" in row or last:
            save_checkpoint(ckpt, net, train_state={"fed": {
                "round": rnd, "history": plain(history), "strategy": strategy.state_dict(),
                "config": plain(cfg.__dict__)}}, meta=_meta(cfg))
        atomic_write_text(out / "history.json", _json({"config": plain(cfg.__dict__),
                                                       "rounds": history}))
        if on_round is not None:
            on_round(row)
    if history and not ckpt.exists():
        save_checkpoint(ckpt, net, train_state={"fed": {
            "round": history[-1]["round"], "history": plain(history),
            "strategy": strategy.state_dict(), "config": plain(cfg.__dict__)}}, meta=_meta(cfg))
    return history


def _meta(cfg: FedConfig) -> dict[str, Any]:
    # The dataset record every checkpoint carries (weightshare.deployment), so search,
    # evaluation and serving recalibrate and test on this run's calib and test images.
    return {"method": f"fed-{cfg.mode}", "dataset": dataset_meta(
        cfg.dataset, data_dir=cfg.data_root, seed=cfg.seed, calib_size=cfg.calib_size,
        test_subset=cfg.test_subset)}


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=float) + "\n"


def read_history(out_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(out_dir) / "history.json", what="federated history")


def make_server_app(cfg: FedConfig | None = None, out_dir: str | Path | None = None, *,
                    threads: int = 1, max_client_macs: float = 0.0,
                    on_round: RoundHook | None = None) -> ServerApp:
    """A ServerApp; with `cfg` None it reads the settings (and `out-dir`) from the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        rc = dict(context.run_config)
        run_cfg = cfg or FedConfig.from_run_config(rc)
        run_server(grid, run_cfg, out_dir or str(rc.get("out-dir", "runs/fed")),
                   threads=int(rc.get("threads", threads)),
                   max_client_macs=float(rc.get("max-client-macs", max_client_macs)),
                   on_round=on_round)

    return app
