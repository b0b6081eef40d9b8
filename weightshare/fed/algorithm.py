"""SuperFedNAS's three rules as pure functions: who trains which SubNet, how much the
largest SubNet's update weighs, and overlap-aware aggregation.

Nothing here knows about Flower; the strategy (`strategy.py`) calls these, and
the unit tests check them on hand-made inputs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..space import SearchSpace, SubnetConfig
from .config import WEIGHTINGS

__all__ = ["Assignment", "ClientUpdate", "tracking_sandwich", "count_held", "largest_weight",
           "client_weights", "aggregate", "WEIGHTINGS"]

LARGEST, SMALLEST, RANDOM = "largest", "smallest", "random"


@dataclass(frozen=True)
class Assignment:
    node: int
    role: str  # largest | smallest | random
    subnet: SubnetConfig


def tracking_sandwich(nodes: Sequence[int], space: SearchSpace, held: Mapping[str, Mapping[int, int]],
                      rng: random.Random) -> list[Assignment]:
    """Assign a SubNet to each sampled node (the reference's "tracking sandwich").

    The node that has held the largest SubNet the fewest times gets it; of the
    rest, the node that has held the smallest the fewest times gets that; every
    other node a random SubNet. `held[role][node]` counts past assignments (the
    caller updates it with `count_held`); ties go to the earlier node in `nodes`,
    so the order the caller passes (already randomly sampled) breaks them.
    """
    if not nodes:
        return []
    rest = list(nodes)
    out: list[Assignment] = []
    for role, subnet in ((LARGEST, space.largest()), (SMALLEST, space.smallest())):
        if not rest:
            break
        counts = held.get(role, {})
        node = min(rest, key=lambda n: counts.get(n, 0))  # min keeps the first of ties
        rest.remove(node)
        out.append(Assignment(node, role, subnet))
    out.extend(Assignment(n, RANDOM, space.sample(rng)) for n in rest)
    return out


def count_held(held: dict[str, dict[int, int]], assignments: Sequence[Assignment],
               space: SearchSpace) -> None:
    """Add this round's assignments to the tracking counts, in place.

    As the reference (base_server_model.py, tracking_sandwich_all_subnet_sample),
    a node counts as having held the largest (smallest) SubNet whenever it trained
    it, also when a random draw happened to be that SubNet.
    """
    largest, smallest = space.largest(), space.smallest()
    for a in assignments:
        for role, corner in ((LARGEST, largest), (SMALLEST, smallest)):
            if a.role == role or a.subnet == corner:
                counts = held.setdefault(role, {})
                counts[a.node] = counts.get(a.node, 0) + 1
                break


def largest_weight(server_round: int, total_rounds: int, clients_per_round: int, *,
                   start: float = 0.9, decay_fraction: float = 0.8) -> float:
    """Share of the total aggregation weight given to the largest SubNet's client (beta).

    The reference's `maxnet_cos_all_subnet` (superfednas_trainer.py): with
    r = server_round - 1 (its rounds count from 0) and N = decay_fraction x
    total_rounds steps, beta = 1/K + (start - 1/K) x (1 + cos(pi min(r, N) / N)) / 2,
    i.e. `start` at the first round, 1/K (K clients per round: an equal share)
    from round N + 1 on.
    """
    if clients_per_round < 1 or total_rounds < 1:
        raise ValueError("clients_per_round and total_rounds must be >= 1")
    end = 1.0 / clients_per_round
    steps = decay_fraction * total_rounds
    r = max(0, server_round - 1)
    t = min(1.0, r / steps) if steps > 0 else 1.0
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class ClientUpdate:
    """One client's reply: its SubNet's masks and values (flat, over the masks)."""

    masks: Mapping[str, Tensor]
    values: Mapping[str, Tensor]
    num_examples: int
    role: str = RANDOM


def client_weights(updates: Sequence[ClientUpdate], largest_share: float | None,
                   weighting: str = "equal", clients_per_round: int | None = None) -> list[float]:
    """Aggregation weight of each reply (the reference's `avg_weight`).

    With `largest_share` beta (SuperFedNAS), the largest SubNet's client gets beta
    and every other client (1 - beta) / (K - 1), K = `clients_per_round` (default:
    the number of replies), as the reference's `maxnet_cos_all_subnet`; without it
    (FedAvg) every client gets 1 (the reference's `uniform_avg`). `weighting=
    "samples"` (the reference's --weight_dataset) then multiplies each weight by
    the client's share of this round's training examples. Weights are relative:
    `aggregate` divides each element by the weights of the clients that sent it.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    k = clients_per_round or len(updates)
    has_largest = largest_share is not None and any(u.role == LARGEST for u in updates)
    weights = []
    for u in updates:
        if not has_largest:
            weights.append(1.0)
        elif u.role == LARGEST:
            weights.append(float(largest_share))
        else:
            weights.append((1.0 - float(largest_share)) / max(1, k - 1))
    if weighting == "samples":
        total = float(sum(u.num_examples for u in updates))
        weights = [w * (u.num_examples / total if total > 0 else 1.0)
                   for w, u in zip(weights, updates, strict=True)]
    return weights


@torch.no_grad()
def aggregate(state: Mapping[str, Tensor], updates: Sequence[ClientUpdate],
              weights: Sequence[float]) -> dict[str, Tensor]:
    """Overlap-aware weighted mean, element by element.

    Each element of each tensor becomes the weighted mean of the values sent by
    exactly the clients whose mask contains it; an element no client sent keeps
    its value in `state`. Returns new tensors; `state` is not modified.
    """
    if len(weights) != len(updates):
        raise ValueError("one weight per update")
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        contributors = [(u, w) for u, w in zip(updates, weights, strict=True) if name in u.masks]
        if not contributors or not tensor.is_floating_point():
            out[name] = tensor.clone()
            continue
        acc = torch.zeros(tensor.numel(), dtype=torch.float64)
        wsum = torch.zeros(tensor.numel(), dtype=torch.float64)
        for u, w in contributors:
            m = u.masks[name].reshape(-1).to(tensor.device)
            if m.numel() != tensor.numel():
                raise ValueError(f"mask of {name} has {m.numel()} elements, tensor {tensor.numel()}")
            v = u.values[name].reshape(-1).to(torch.float64)
            acc[m] += w * v
            wsum[m] += w
        flat = tensor.reshape(-1).to(torch.float64).clone()
        touched = wsum > 0
        flat[touched] = acc[touched] / wsum[touched]
        out[name] = flat.to(tensor.dtype).view(tensor.shape)
    return out
