"""The statistics behind benchmarks/predictor_labels.py: label noise, true spread, the tau ceiling."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from predictor_labels import ceiling_tau, images_for, label_statistics  # noqa: E402


def test_label_statistics_recover_binomial_noise_and_true_spread():
    rng = np.random.default_rng(0)
    k, n = 300, 10000
    truth = rng.normal(0.92, 0.004, k).clip(0, 1)  # true top-1 per SubNet, spread 0.4 pt
    hits = rng.random((k, n)) < truth[:, None]
    holdout = 100.0 * (rng.random((k, 1000)) < truth[:, None]).mean(1)
    st = label_statistics(hits.astype(np.float64), holdout)
    binomial = 100.0 * math.sqrt(0.92 * 0.08 / n)  # std of a top-1 on n images
    assert st["noise_test"] == pytest.approx(binomial, rel=0.15)
    assert st["noise_holdout"] == pytest.approx(binomial * math.sqrt(n / 1000), rel=0.15)
    assert st["true_spread"] == pytest.approx(100.0 * float(np.std(truth)), rel=0.15)


def test_ceiling_falls_with_noise_and_is_one_without():
    assert ceiling_tau(0.3, 0.0, 40, draws=5) == pytest.approx(1.0)
    taus = [ceiling_tau(0.3, noise, 40, draws=200) for noise in (0.03, 0.3, 3.0)]
    assert taus[0] > taus[1] > taus[2]
    assert abs(taus[2]) < 0.15  # noise 10x the spread: next to nothing left to rank
    assert ceiling_tau(0.0, 0.3, 40, draws=5) == 0.0


def test_images_for_interpolates_on_a_log_scale():
    curve = [{"images": 1000, "ceiling_tau": 0.5}, {"images": 100000, "ceiling_tau": 0.9}]
    assert images_for(curve, 0.7) == 10000
    assert images_for(curve, 0.95) is None
    assert images_for(curve, 0.4) == 1000
