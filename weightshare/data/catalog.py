"""The dataset registry and `load_dataset`, the one entry point: builder, calib split, subsets.

A builder registered with `@register_dataset(name)` returns the official splits
(`RawDataset`); `load_dataset` then holds out the seeded ``calib`` slice of the
training split, applies ``train_subset``/``test_subset`` and fills in channel
statistics, identically for in-memory and streamed splits.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import Registry
from .containers import Dataset, DatasetError, ImageSet, RawDataset
from .seeds import TAG_CALIB, TAG_TEST_SUBSET, TAG_TRAIN_SUBSET, mix

__all__ = ["DATASETS", "DATA_ENV_VAR", "channel_stats", "env_dir", "list_datasets", "load_dataset",
           "register_dataset"]

DATA_ENV_VAR = "WEIGHTSHARE_DATA"
_DEFAULT_CALIB_SIZE = 2000

DatasetBuilder = Callable[..., RawDataset]
_B = TypeVar("_B", bound=DatasetBuilder)
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str) -> Callable[[_B], _B]:
    """Register ``builder(root: Path | None, *, seed: int, **options) -> RawDataset``.

    ``root`` is the user's folder (None when not given); ``seed`` is the
    `load_dataset` seed, for builders that generate or hold out data.
    """
    return DATASETS.register(_canonical(name))


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`, sorted."""
    return DATASETS.names()


def env_dir() -> Path | None:
    """The folder named by ``$WEIGHTSHARE_DATA``, or None when unset."""
    value = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def load_dataset(
    name: str = "fashion-mnist",
    root: str | os.PathLike[str] | None = None,
    *,
    calib_size: int | None = None,
    seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    **options: Any,
) -> Dataset:
    """Load dataset ``name`` and split off the calib set.

    calib_size: images moved from the official training split into ``calib``
        (a seeded random choice). None means 2000, capped at a tenth of the
        training split so tiny datasets (synthetic, small image folders) work
        with the default; an explicit value is honoured exactly.
    train_subset, test_subset: keep at most this many images (seeded random
        choice, original order kept) of ``train`` (after the calib split) and
        ``test``, for fast CPU runs. ``calib`` is unaffected.
    options: passed to the dataset's builder (e.g. ``image_size`` for
        ``imagefolder`` and ``synthetic``, ``stream`` for ``imagefolder``).
    """
    key = _canonical(name)
    builder = DATASETS.get(key)
    root_path = Path(root).expanduser() if root is not None else None
    try:
        inspect.signature(builder).bind(root_path, seed=seed, **options)
    except TypeError as e:
        raise TypeError(f"bad options {sorted(options)} for dataset {key!r}: {e}") from None
    raw = builder(root_path, seed=seed, **options)

    n = len(raw.train)
    if calib_size is None:
        calib_size = min(_DEFAULT_CALIB_SIZE, n // 10)
    if not 0 <= calib_size < n:
        raise ConfigError(
            f"calib_size={calib_size} must be in [0, {n}) for {key!r} ({n} training images)"
        )
    perm = np.random.default_rng(mix(seed, TAG_CALIB)).permutation(n)
    calib_idx = np.sort(perm[:calib_size])
    train_idx = np.sort(perm[calib_size:])
    train_idx = _subsample(train_idx, train_subset, mix(seed, TAG_TRAIN_SUBSET), "train_subset")
    test_idx = _subsample(
        np.arange(len(raw.test)), test_subset, mix(seed, TAG_TEST_SUBSET), "test_subset"
    )

    if raw.mean is not None and raw.std is not None:
        mean, std = raw.mean, raw.std
    elif isinstance(raw.train, ImageSet):
        mean, std = channel_stats(raw.train.images)
    else:
        raise DatasetError(f"{key}: a streamed dataset's builder must give mean and std")
    h, w = raw.train.shape_hw
    if h != w:
        raise DatasetError(f"{key}: images must be square, got {h}x{w}")
    return Dataset(
        name=key,
        train=raw.train.subset(train_idx),
        calib=raw.train.subset(calib_idx),
        test=raw.test.subset(test_idx),
        num_classes=len(raw.classes),
        in_channels=raw.train.channels,
        image_size=h,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        hflip=raw.hflip,
        classes=tuple(raw.classes),
    )


def _subsample(idx: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    if size is None or size >= len(idx):
        return idx
    if size < 1:
        raise ConfigError(f"{what} must be >= 1, got {size}")
    chosen = np.random.default_rng(seed).choice(len(idx), size=size, replace=False)
    return idx[np.sort(chosen)]


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std in [0, 1] units from a 256-bin histogram.

    A histogram needs no float copy of the whole set (Fashion-MNIST would need
    ~380 MB in float64) and has no accumulation error.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


