"""Non-IID client splits for federated training: per-class Dirichlet proportions."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..errors import ConfigError

__all__ = ["dirichlet_split"]


def dirichlet_split(
    labels: Tensor | np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int = 0,
    min_size: int = 1,
    max_tries: int = 1000,
    balance: bool = True,
) -> list[np.ndarray]:
    """Partition sample indices among clients with per-class Dirichlet(alpha) proportions.

    For each class, its samples (shuffled) are cut among the clients in
    proportions drawn from Dirichlet(alpha, ..., alpha). Small alpha gives each
    client few classes; alpha=100 is close to IID. With `balance` (as the
    reference's FedML partition, noniid_partition.py,
    partition_class_samples_with_dirichlet_distribution), a client that already
    holds N / num_clients samples gets no share of the later classes, so no
    client ends with much more than an even share. The whole draw is repeated
    until every client has at least ``min_size`` samples (at most ``max_tries``
    times, then ValueError). Returns one sorted int64 index array per client;
    together they are disjoint and cover every sample. Deterministic by ``seed``.
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or (y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0)):
        raise ConfigError("labels must be a 1-D array of non-negative integers")
    if num_clients < 1 or alpha <= 0 or min_size < 0:
        raise ConfigError(
            f"need num_clients >= 1, alpha > 0, min_size >= 0; got {num_clients}, {alpha}, "
            f"{min_size}"
        )
    n = len(y)
    if num_clients * min_size > n:
        raise ConfigError(f"{n} samples cannot give {num_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            if balance:
                sizes = np.array([sum(len(c) for c in p) for p in parts])
                capped = props * (sizes < n / num_clients)
                props = capped / capped.sum() if capped.sum() > 0 else props
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        clients = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(c) for c in clients) >= min_size:
            return clients
    raise ConfigError(
        f"no Dirichlet(alpha={alpha}) split gave all {num_clients} clients >= {min_size} "
        f"samples in {max_tries} tries; raise alpha, lower min_size or use fewer clients"
    )
