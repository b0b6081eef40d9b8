"""The Flower ClientApp: train the SubNet the server assigned, on this client's data only.

A client receives only its SubNet's slice of the SuperNet (the masked elements
of `masks.py`, as flat vectors) plus the round's settings in the message's
ConfigRecord. It places the slice into a local SuperNet of the same layout
(elements outside the slice are never read by that SubNet), trains that
SubNet with cross-entropy, SGD and gradient clipping, and replies with the
trained slice, its number of examples and its compute.

The client's data is its partition of a Dirichlet label split, chosen by the
node's `partition-id` (Flower's simulation sets it; a deployed SuperNode gets
it with `--node-config "partition-id=0 num-partitions=2"`).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..data import Dataset, ImageSet, Loader, load_dataset
from ..models import SuperNet, create_supernet
from ..space import SubnetConfig
from .config import FedConfig
from .masks import put, subnet_masks, take
from .split import dirichlet_split

__all__ = ["make_client_app", "client_partition", "local_train", "load_fed_dataset"]


@lru_cache(maxsize=4)
def _dataset(name: str, root: str, train_subset: int, calib_size: int, test_subset: int,
             seed: int) -> Dataset:
    return load_dataset(name, root or None, seed=seed, calib_size=calib_size,
                        train_subset=train_subset or None, test_subset=test_subset or None)


def load_fed_dataset(cfg: FedConfig) -> Dataset:
    """The run's dataset, loaded once per process (server and every client share the recipe)."""
    return _dataset(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.calib_size,
                    cfg.test_subset, cfg.seed)


@lru_cache(maxsize=4)
def _split(name: str, root: str, train_subset: int, calib_size: int, test_subset: int, seed: int,
           clients: int, alpha: float) -> tuple[Any, ...]:
    ds = _dataset(name, root, train_subset, calib_size, test_subset, seed)
    return tuple(dirichlet_split(ds.train.labels, clients, alpha, seed=seed))


def client_partitions(cfg: FedConfig) -> list[Any]:
    """Every client's sample indices into the training split (deterministic by seed)."""
    return list(_split(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.calib_size,
                       cfg.test_subset, cfg.seed, cfg.clients, cfg.alpha))


def client_partition(cfg: FedConfig, partition_id: int) -> ImageSet:
    if not 0 <= partition_id < cfg.clients:
        raise ValueError(f"partition-id {partition_id} is outside 0..{cfg.clients - 1} "
                         f"(the run has {cfg.clients} clients)")
    return load_fed_dataset(cfg).train.subset(client_partitions(cfg)[partition_id])


@lru_cache(maxsize=2)
def _supernet(name: str, args_json: str) -> SuperNet:
    return create_supernet(name, **json.loads(args_json))


def local_train(net: SuperNet, subnet: SubnetConfig, data: ImageSet, dataset: Dataset, *,
                epochs: int, batch_size: int, lr: float, momentum: float, weight_decay: float,
                clip: float, seed: int, augment: bool = True) -> dict[str, float]:
    """Train `subnet` of `net` in place on `data`; returns loss, examples and training MACs."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=0.0)
    loader = Loader(data, dataset, min(batch_size, len(data)), train=True, seed=seed,
                    augment=augment, drop_last=False, resolution=subnet.resolution)
    masks = subnet_masks(net, subnet)
    # Weight decay only on this SubNet's elements: decaying the others would be
    # harmless to this SubNet but make the "only the slice changes" contract false.
    decay = [(p, masks[n].to(p.device)) for n, p in net.named_parameters() if n in masks]
    macs = net.cost(subnet).macs
    net.train()
    total_loss, seen = 0.0, 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(net(x, subnet), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if weight_decay:
                with torch.no_grad():
                    for p, m in decay:
                        if p.grad is not None:
                            p.grad.add_(p * m, alpha=weight_decay)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            total_loss += float(loss.detach()) * len(y)
            seen += len(y)
    return {"train_loss": total_loss / max(1, seen), "num-examples": len(data),
            "client_macs": 3.0 * macs * seen}


def _train(msg: Message, context: Context, cfg: FedConfig | None) -> Message:
    cfg = cfg or FedConfig.from_run_config(dict(context.run_config))
    rc = msg.content["config"]
    torch.set_num_threads(max(1, int(rc.get("threads", 1))))
    net = _supernet(str(rc["supernet"]), str(rc["supernet-args"]))
    subnet = SubnetConfig.from_json(str(rc["subnet"]))
    masks = subnet_masks(net, subnet)
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    put(state, masks, msg.content["arrays"].to_torch_state_dict())
    pid = int(context.node_config.get("partition-id", 0))
    data = client_partition(cfg, pid)
    stats = local_train(net, subnet, data, load_fed_dataset(cfg),
                        epochs=int(rc["local-epochs"]), batch_size=int(rc["batch-size"]),
                        lr=float(rc["lr"]), momentum=float(rc["momentum"]),
                        weight_decay=float(rc["weight-decay"]), clip=float(rc["clip"]),
                        seed=int(rc["seed"]), augment=bool(rc.get("augment", True)))
    if not math.isfinite(stats["train_loss"]):
        raise FloatingPointError(f"client {pid}: local training diverged (loss "
                                 f"{stats['train_loss']}); lower the learning rate")
    metrics = MetricRecord({**stats, "partition-id": pid})
    reply = RecordDict({"arrays": ArrayRecord(take(state, masks)), "metrics": metrics})
    return Message(content=reply, reply_to=msg)


def make_client_app(cfg: FedConfig | None = None) -> ClientApp:
    """A ClientApp; with `cfg` None it reads the run's settings from Flower's run config."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _train(msg, context, cfg)

    return app
