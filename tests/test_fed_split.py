"""Tests for weightshare.fed.split: Dirichlet non-IID client splits (moved from test_data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightshare.fed.split import dirichlet_split


def _max_class_fraction(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_dirichlet_split_properties() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    skewed = dirichlet_split(labels, 20, alpha=0.1, seed=1)
    iid = dirichlet_split(torch.from_numpy(labels), 20, alpha=100.0, seed=1)
    for parts in (skewed, iid):
        assert len(parts) == 20 and all(len(p) >= 1 for p in parts)
        flat = np.concatenate(parts)
        assert len(flat) == len(set(flat.tolist())) == 5000
        assert all(p.dtype == np.int64 for p in parts)
    again = dirichlet_split(labels, 20, alpha=0.1, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))
    other = dirichlet_split(labels, 20, alpha=0.1, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(skewed, other, strict=True))
    assert _max_class_fraction(labels, skewed) > 0.5
    assert _max_class_fraction(labels, iid) < 0.2


def test_dirichlet_split_min_size() -> None:
    labels = np.repeat(np.arange(5), 40)
    parts = dirichlet_split(labels, 10, alpha=0.3, seed=0, min_size=10)
    assert min(len(p) for p in parts) >= 10
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet_split(labels, 30, alpha=1.0, min_size=10)
    with pytest.raises(ValueError, match="tries"):
        dirichlet_split(labels, 10, alpha=0.01, min_size=19, max_tries=5)


def test_dirichlet_split_balance_caps_clients_at_an_even_share() -> None:
    # The reference (FedML noniid_partition.py): a client holding N / K samples gets no
    # share of later classes, so it ends below N / K + one class.
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    per_class = np.bincount(labels).max()
    for seed in range(3):
        parts = dirichlet_split(labels, 20, alpha=0.1, seed=seed)
        assert max(len(p) for p in parts) < 5000 / 20 + per_class
        assert len(np.concatenate(parts)) == 5000
    unbalanced = dirichlet_split(labels, 20, alpha=0.1, seed=0, balance=False)
    assert max(len(p) for p in unbalanced) > max(len(p) for p in
                                                 dirichlet_split(labels, 20, 0.1, seed=0))
