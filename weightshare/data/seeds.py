"""Seed mixing for every random choice the data layer makes.

Each use of the user's seed (the calib split, a subset, the shuffle, the
augmentation, ...) draws from its own stream, tagged below, so that changing
one option (say ``train_subset``) never changes which images another choice
(the calib split) lands on.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TAG_AUGMENT",
    "TAG_CALIB",
    "TAG_HOLDOUT",
    "TAG_SHUFFLE",
    "TAG_STATS",
    "TAG_SYNTHETIC",
    "TAG_TEST_SUBSET",
    "TAG_TRAIN_SUBSET",
    "mix",
]

TAG_CALIB = 1
TAG_TRAIN_SUBSET = 2
TAG_TEST_SUBSET = 3
TAG_SHUFFLE = 4
TAG_AUGMENT = 5
TAG_HOLDOUT = 6
TAG_SYNTHETIC = 7
TAG_STATS = 8  # which files a streaming source samples to estimate mean/std


def mix(*values: int) -> int:
    """A 64-bit seed that depends on every value (SeedSequence mixes well; sums would collide)."""
    entropy = [v & 0xFFFF_FFFF_FFFF_FFFF for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
