"""CIFAR-10 from the python-pickle batches (``cifar-10-batches-py``). Nothing is downloaded."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..catalog import DATA_ENV_VAR, env_dir, register_dataset
from ..containers import DatasetError, ImageSet, RawDataset

__all__: list[str] = []


_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
# Per-channel statistics of the 50000 training images (the true pixel std, not the
# often-copied 0.2023/0.1994/0.2010, which is a mean of per-image stds).
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


@register_dataset("cifar10")
def _build_cifar10(root: Path | None, *, seed: int) -> RawDataset:
    """CIFAR-10 from the pickle layout. Pickle runs code on load: use only trusted files."""
    del seed
    bases: list[Path] = [b for b in (root, env_dir()) if b is not None]
    looked: list[str] = [] if env_dir() is not None else [f"${DATA_ENV_VAR} (not set)"]
    for base in bases:
        subs = (_CIFAR_DIR, "cifar10", f"cifar10/{_CIFAR_DIR}") if base.is_dir() else ()
        for folder in (base, *(base / sub for sub in subs)):
            if not folder.is_dir():
                looked.append(f"{folder} (does not exist)")
                continue
            missing = [f for f in _CIFAR_FILES if not (folder / f).is_file()]
            if missing:
                looked.append(f"{folder} (missing {', '.join(missing)})")
                continue
            train_parts = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
            train = ImageSet(
                torch.cat([p.images for p in train_parts]),
                torch.cat([p.labels for p in train_parts]),
            )
            test = _read_cifar_batch(folder / "test_batch")
            meta = _unpickle(folder / "batches.meta")
            names = meta.get(b"label_names")
            if not isinstance(names, list) or not names:
                raise DatasetError(f"{folder / 'batches.meta'}: no b'label_names' list")
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            for split, part in (("train", train), ("test", test)):
                if len(part) and int(part.labels.max()) >= len(classes):
                    raise DatasetError(f"{folder}: {split} label out of range for {classes}")
            return RawDataset(
                train=train,
                test=test,
                classes=classes,
                hflip=True,
                mean=_CIFAR_MEAN,
                std=_CIFAR_STD,
            )
    raise DatasetError(
        "CIFAR-10 not found. Looked in:\n  "
        + "\n  ".join(looked or ["(no folder given)"])
        + f"\nGet the python version (cifar-10-python.tar.gz) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it, and pass the "
        f"{_CIFAR_DIR} folder (or its parent) as --data-dir / set {DATA_ENV_VAR}. "
        "Nothing is downloaded."
    )


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def _read_cifar_batch(path: Path) -> ImageSet:
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: expected keys b'data' and b'labels', got {list(batch)}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),) or (len(labels) and labels.min() < 0):
        raise DatasetError(f"{path}: {labels.shape} labels for {len(data)} images")
    # Rows are channel-major (1024 R, then G, then B), each channel row-major.
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return ImageSet(images, torch.from_numpy(labels))
