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

__all__ = ["Assignment", "ClientUpdate", "tracking_sandwich", "largest_weight", "aggregate"]

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
    caller updates it); ties go to the earlier node in `nodes`, so the order the
    caller passes (already randomly sampled) breaks them.
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


def largest_weight(server_round: int, total_rounds: int, clients_per_round: int, *,
                   start: float = 0.9, decay_fraction: float = 0.8) -> float:
    """Share of the total aggregation weight given to the largest SubNet's client.

    Cosine from `start` at round 1 to 1/K (K clients per round: an equal share)
    at `decay_fraction` of the rounds, then 1/K. Rounds count from 1.
    """
    if clients_per_round < 1 or total_rounds < 1:
        raise ValueError("clients_per_round and total_rounds must be >= 1")
    end = 1.0 / clients_per_round
    horizon = max(1.0, decay_fraction * total_rounds)
    t = min(1.0, max(0, server_round - 1) / max(1.0, horizon - 1)) if horizon > 1 else 1.0
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class ClientUpdate:
    """One client's reply: its SubNet's masks and values (flat, over the masks)."""

    masks: Mapping[str, Tensor]
    values: Mapping[str, Tensor]
    num_examples: int
    role: str = RANDOM


def client_weights(updates: Sequence[ClientUpdate], largest_share: float | None) -> list[float]:
    """Relative weights: sample counts, with the largest client's share set to `largest_share`.

    Other clients' weights are their sample counts normalised to sum to 1; the
    largest client's is share / (1 - share), so it holds `largest_share` of the
    total where all clients overlap (at share 1/K with equal counts, all equal).
    """
    others = [u.num_examples for u in updates if u.role != LARGEST]
    total = float(sum(others))
    weights = []
    for u in updates:
        if u.role == LARGEST and largest_share is not None and others:
            weights.append(largest_share / max(1e-12, 1.0 - largest_share))
        else:
            weights.append(u.num_examples / total if total > 0 and u.role != LARGEST
                           else float(max(1, u.num_examples)))
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
