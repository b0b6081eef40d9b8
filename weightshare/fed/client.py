"""The Flower ClientApp: train the SubNet the server assigned, on this client's data only.

A client receives only its SubNet's slice of the SuperNet (the masked elements
of `masks.py`, as flat vectors) plus the round's settings in the message's
ConfigRecord. It places the slice into a local SuperNet of the same layout
(elements outside the slice are never read by that SubNet), trains that
SubNet with cross-entropy, plain SGD and gradient clipping (the reference's
client: no momentum, no weight decay, BN fixed to the identity unless the run
trains BN), and replies with the trained slice, its number of examples and its
compute.

The client's data is its partition of a Dirichlet label split, chosen by the
node's `partition-id` (Flower's simulation sets it; a deployed SuperNode gets
it with `--node-config "partition-id=0 num-partitions=2"`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import Tensor

from ..data import Dataset, ImageSet, Loader, load_dataset
from ..errors import ConfigError
from ..models import SuperNet, create_supernet
from ..nn import ElasticBatchNorm2d
from ..space import SubnetConfig
from .config import BN_MODES, FedConfig
from .masks import put, subnet_masks, take
from .split import dirichlet_split

__all__ = ["make_client_app", "client_partition", "local_train", "load_fed_dataset",
           "set_identity_bn"]


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
    # At least 10 samples per client, as the reference's split (when the data allows).
    min_size = max(1, min(10, len(ds.train.labels) // (2 * clients)))
    return tuple(dirichlet_split(ds.train.labels, clients, alpha, seed=seed, min_size=min_size))


def client_partitions(cfg: FedConfig) -> list[Any]:
    """Every client's sample indices into the training split (deterministic by seed)."""
    return list(_split(cfg.dataset, cfg.data_root, cfg.train_subset, cfg.calib_size,
                       cfg.test_subset, cfg.seed, cfg.clients, cfg.alpha))


def client_partition(cfg: FedConfig, partition_id: int) -> ImageSet:
    if not 0 <= partition_id < cfg.clients:
        raise ConfigError(f"partition-id {partition_id} is outside 0..{cfg.clients - 1} "
                         f"(the run has {cfg.clients} clients)")
    return load_fed_dataset(cfg).train.subset(client_partitions(cfg)[partition_id])


@lru_cache(maxsize=2)
def _supernet(name: str, args_json: str) -> SuperNet:
    return create_supernet(name, **json.loads(args_json))


def _bn_layers(net: SuperNet) -> list[tuple[str, ElasticBatchNorm2d]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, ElasticBatchNorm2d)]


@torch.no_grad()
def set_identity_bn(net: SuperNet, masks: Mapping[str, Tensor] | None = None) -> None:
    """Fix BN to the identity (scale 1, shift 0, mean 0, variance 1), as the reference
    does before every local training when BN is off (subnet_trainer.py, no --use_bn).

    With `masks`, only the masked elements change (a client's SubNet slice)."""
    for name, bn in _bn_layers(net):
        for attr, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                            ("running_var", 1.0)):
            t = getattr(bn, attr)
            m = None if masks is None else masks.get(f"{name}.{attr}")
            if masks is None:
                t.fill_(value)
            elif m is not None:
                t[m.to(t.device)] = value


def local_train(net: SuperNet, subnet: SubnetConfig, data: ImageSet, dataset: Dataset, *,
                epochs: int, batch_size: int, lr: float, momentum: float = 0.0,
                weight_decay: float = 0.0, clip: float = 1.0, seed: int = 0,
                augment: bool = True, bn: str = "train", max_macs: float = 0.0
                ) -> dict[str, float]:
    """Train `subnet` of `net` in place on `data`; returns loss, examples and training MACs.

    Cross-entropy, SGD (`momentum`, `weight_decay` on this SubNet's elements only),
    gradient clipping at `clip`. `bn="identity"` keeps every BN an identity in eval
    mode and out of the optimizer (the reference's default); `bn="train"` trains
    BN and updates its running statistics. `max_macs` > 0 stops once this many
    training MACs (3 x forward MACs per image) are spent, to the image.
    """
    if bn not in BN_MODES:
        raise ConfigError(f"bn must be one of {BN_MODES}, got {bn!r}")
    masks = subnet_masks(net, subnet)
    frozen: set[int] = set()
    if bn == "identity":
        set_identity_bn(net, masks)
        frozen = {id(p) for _, m in _bn_layers(net) for p in m.parameters(recurse=False)}
    params = [p for p in net.parameters() if p.requires_grad and id(p) not in frozen]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=0.0)
    loader = Loader(data, dataset, min(batch_size, len(data)), train=True, seed=seed,
                    augment=augment, drop_last=False, resolution=subnet.resolution)
    # Weight decay only on this SubNet's elements: decaying the others would be
    # harmless to this SubNet but make the "only the slice changes" contract false.
    decay = [(p, masks[n].to(p.device)) for n, p in net.named_parameters()
             if n in masks and id(p) not in frozen]
    macs = net.cost(subnet).macs
    budget = int(max_macs // (3.0 * macs)) if max_macs > 0 else None  # images
    net.train()
    if bn == "identity":
        for _, m in _bn_layers(net):
            m.eval()
    total_loss, seen = 0.0, 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            if budget is not None:
                if seen >= budget:
                    break
                x, y = x[: budget - seen], y[: budget - seen]
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
            "client_macs": 3.0 * macs * seen, "images": seen}


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
                        seed=int(rc["seed"]), augment=bool(rc.get("augment", True)),
                        bn=str(rc.get("bn", "train")),
                        max_macs=float(rc.get("max-client-macs", 0.0)))
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
