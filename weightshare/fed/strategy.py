"""The SuperFedNAS Flower Strategy (Message API): assign SubNets, send slices, aggregate.

`configure_train` samples `per_round` nodes, assigns each a SubNet (tracking
sandwich, or one fixed SubNet for the FedAvg baselines) and sends each node
only that SubNet's slice of the global SuperNet, with the round's settings in
its ConfigRecord. `aggregate_train` checks every reply against the mask it was
sent, then applies overlap-aware aggregation with the largest SubNet's cosine
decaying share. The strategy owns the global SuperNet (`self.net`); the
`arrays` argument Flower passes is not used, because no message ever carries
the whole SuperNet.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..checkpoint import plain
from ..models import SuperNet
from ..space import SubnetConfig
from .algorithm import (
    LARGEST,
    RANDOM,
    Assignment,
    ClientUpdate,
    aggregate,
    client_weights,
    count_held,
    largest_weight,
    tracking_sandwich,
)
from .config import FedConfig
from .masks import subnet_masks, take

__all__ = ["SuperFedNAS", "wait_for_nodes", "exchange"]


def wait_for_nodes(grid: Grid, want: int, need: int | None = None, wait: float = 120.0, *,
                   give_up: float = 3600.0, poll: float = 1.0,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> list[int]:
    """Ids of the connected nodes, once `want` are connected, or `need` after `wait` s.

    Deployment nodes join late and may die: a round waits up to `wait` seconds
    for `want` nodes, then runs with the `need` (<= want) or more that are
    connected; with fewer it keeps waiting (saying so) and raises TimeoutError
    after `give_up` seconds.
    """
    need = want if need is None else min(need, want)
    start = last_log = clock()
    while True:
        nodes = sorted(grid.get_node_ids())
        waited = clock() - start
        if len(nodes) >= want or (len(nodes) >= need and waited >= wait):
            if len(nodes) < want:
                log(WARNING, "only %s of %s nodes connected after %.0f s; this round uses them",
                    len(nodes), want, waited)
            return nodes
        if waited > give_up:
            raise TimeoutError(f"only {len(nodes)} nodes connected within {give_up:.0f} s "
                               f"(a round needs at least {need})")
        if clock() - last_log >= 10.0 or waited == 0:
            last_log = clock()
            log(INFO, "waiting for nodes: %s of %s connected (a round starts with at least %s "
                "after %.0f s)", len(nodes), want, need, wait)
        sleep(poll)


def exchange(grid: Grid, messages: list[Message], timeout: float, *, poll: float = 1.0,
             clock: Callable[[], float] = time.time,
             sleep: Callable[[float], None] = time.sleep) -> tuple[list[Message], list[int]]:
    """Send `messages`, collect replies until all are in, `timeout` s pass, or the
    nodes still owing one have disconnected.

    Like `Grid.send_and_receive`, but a node that leaves the Grid's connected
    nodes (a dead SuperNode) is given up on within a few polls instead of at the
    timeout. Returns (replies, ids of the nodes given up on).
    """
    ids = list(grid.push_messages(messages))
    # Grids return the ids in message order, None (or nothing) for a message not pushed.
    owed = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=False) if mid}
    lost = [m.metadata.dst_node_id for mid, m in
            zip(ids + [None] * (len(messages) - len(ids)), messages, strict=True) if not mid]
    if lost:
        log(WARNING, "could not send to node(s) %s", lost)
    end = clock() + timeout
    replies: list[Message] = []
    gone: dict[int, int] = {}  # node -> consecutive polls it was missing
    while owed:
        got = list(grid.pull_messages(list(owed)))
        replies.extend(got)
        for msg in got:
            owed.pop(msg.metadata.reply_to_message_id, None)
        if not owed or clock() >= end:
            break
        connected = set(grid.get_node_ids())
        for mid, node in list(owed.items()):
            gone[node] = 0 if node in connected else gone.get(node, 0) + 1
            if gone[node] >= 2:  # twice in a row: not a transient listing gap
                log(WARNING, "node %s disconnected before replying; not waiting for it", node)
                lost.append(node)
                owed.pop(mid)
        if owed:
            sleep(poll)
    if owed:
        log(WARNING, "no reply from %s node(s) within %.0f s: %s", len(owed), timeout,
            sorted(owed.values()))
        lost.extend(owed.values())
    return replies, lost


class SuperFedNAS(Strategy):
    """Weight-shared federated training of `net` (mode superfednas), or FedAvg of one SubNet."""

    def __init__(self, cfg: FedConfig, net: SuperNet, *, threads: int = 1) -> None:
        self.cfg = cfg
        self.net = net
        self.threads = threads
        self.rng = random.Random(cfg.seed)
        self.held: dict[str, dict[int, int]] = {LARGEST: {}, "smallest": {}}
        self.pending: dict[int, Assignment] = {}
        self.client_budget = 0.0  # MACs each client may spend this round (0: no cap)
        self.sent: list[Message] = []
        self.fixed = (SubnetConfig.from_json(cfg.subnet) if cfg.subnet else net.space.largest())
        if cfg.mode == "fedavg":
            net.space.validate(self.fixed)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """What resuming needs besides the weights (counts and RNG), weights_only-safe."""
        return {"held": {r: {str(k): v for k, v in c.items()} for r, c in self.held.items()},
                "rng": json.dumps(self.rng.getstate())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.held = {r: {int(k): int(v) for k, v in c.items()} for r, c in state["held"].items()}
        s = json.loads(state["rng"])
        self.rng.setstate((s[0], tuple(s[1]), s[2]))

    # --------------------------------------------------------------- training
    def assign(self, nodes: list[int]) -> list[Assignment]:
        if self.cfg.mode == "fedavg":
            return [Assignment(n, RANDOM, self.fixed) for n in nodes]
        out = tracking_sandwich(nodes, self.net.space, self.held, self.rng)
        count_held(self.held, out, self.net.space)
        return out

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = wait_for_nodes(grid, self.cfg.per_round, self.cfg.needed_nodes,
                               self.cfg.node_wait)
        chosen = self.rng.sample(nodes, min(self.cfg.per_round, len(nodes)))
        state = self.net.state_dict()
        messages = []
        self.pending = {}
        for a in self.assign(chosen):
            self.pending[a.node] = a
            masks = subnet_masks(self.net, a.subnet)
            settings = ConfigRecord({
                **dict(config),
                "server-round": server_round,
                "subnet": a.subnet.to_json(),
                "role": a.role,
                "supernet": self.net.name,
                "supernet-args": json.dumps(plain(self.net.config)),
                "local-epochs": self.cfg.local_epochs,
                "batch-size": self.cfg.batch_size,
                "lr": self.cfg.lr,
                "momentum": self.cfg.momentum,
                "weight-decay": self.cfg.weight_decay,
                "clip": self.cfg.clip,
                "bn": self.cfg.bn,
                "max-client-macs": float(self.client_budget),
                "augment": self.cfg.augment,
                "threads": self.threads,
                "seed": self.cfg.seed * 100_003 + server_round,
            })
            content = RecordDict({"arrays": ArrayRecord(take(state, masks)), "config": settings})
            messages.append(Message(content=content, message_type=MessageType.TRAIN,
                                    dst_node_id=a.node))
        self.sent = messages  # their ids (set when pushed) map error replies to nodes
        log(INFO, "configure_train: round %s, %s nodes: %s", server_round, len(messages),
            ", ".join(f"{a.role}" for a in self.pending.values()))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates: list[ClientUpdate] = []
        losses, macs, failures = [], 0.0, 0
        answered: set[int] = set()
        # An error the SuperLink sends for a dead node ("Node Unavailable") comes from the
        # link, not the node: find the node by the message it answers.
        by_id = {m.metadata.message_id: m.metadata.dst_node_id for m in self.sent
                 if m.metadata.message_id}
        for reply in replies:
            node = by_id.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            a = self.pending.get(node)
            if reply.has_error() or a is None:
                failures += 1
                reason = reply.error.reason if reply.has_error() else "unexpected node"
                log(WARNING, "round %s: node %s failed: %s", server_round, node, reason)
                continue
            masks = subnet_masks(self.net, a.subnet)
            values = reply.content["arrays"].to_torch_state_dict()
            bad = [n for n, m in masks.items()
                   if n not in values or values[n].numel() != int(m.sum())]
            if bad or set(values) - set(masks):
                failures += 1
                log(WARNING, "round %s: node %s sent a slice that does not match its SubNet "
                    "(%s); ignored", server_round, node, (bad or sorted(set(values) - set(masks)))[:3])
                continue
            m = reply.content["metrics"]
            updates.append(ClientUpdate(masks, values, int(m["num-examples"]), a.role))
            losses.append((float(m["train_loss"]), int(m["num-examples"])))
            macs += float(m["client_macs"])
        silent = sorted(set(self.pending) - answered)  # dead or timed out: no reply at all
        if silent:
            log(WARNING, "round %s: no reply from node(s) %s", server_round, silent)
        failures += len(silent)
        self.pending, self.sent = {}, []
        if not updates:
            return None, MetricRecord({"failures": failures, "clients": 0,
                                       "no_reply": len(silent)})
        share = (largest_weight(server_round, self.cfg.rounds, self.cfg.per_round,
                                start=self.cfg.largest_start,
                                decay_fraction=self.cfg.decay_fraction)
                 if self.cfg.mode == "superfednas" else None)
        state = self.net.state_dict()
        shared = {n: state[n] for u in updates for n in u.masks}
        new = aggregate(shared, updates, client_weights(updates, share, self.cfg.weighting,
                                                        self.cfg.per_round))
        self.net.load_state_dict(new, strict=False)
        n_total = sum(n for _, n in losses)
        metrics = {"train_loss": sum(loss * n for loss, n in losses) / max(1, n_total),
                   "client_macs": macs, "clients": len(updates), "failures": failures,
                   "no_reply": len(silent), "num-examples": n_total}
        if share is not None:
            metrics["largest_share"] = share
        return None, MetricRecord(metrics)

    # ------------------------------------------------- evaluation (server side)
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []  # evaluation happens on the server, after BN recalibration

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log(INFO, "SuperFedNAS: mode=%s, %s of %s clients per round, largest share %.2f -> 1/%s "
            "over %.0f%% of %s rounds, %s client weights, BN %s, %s local epochs", self.cfg.mode,
            self.cfg.per_round, self.cfg.clients, self.cfg.largest_start, self.cfg.per_round,
            100 * self.cfg.decay_fraction, self.cfg.rounds, self.cfg.weighting, self.cfg.bn,
            self.cfg.local_epochs)
