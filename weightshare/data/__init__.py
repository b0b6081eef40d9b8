"""Datasets, transforms and loaders: everything between files on disk and training batches.

* `load_dataset(name, root, ...)` looks the name up in the dataset registry
  (`register_dataset`, on the shared `weightshare.registry.Registry`) and
  returns a `Dataset` with three splits: ``train``, ``calib`` (a seeded slice
  held out of the official training set, for BN recalibration and predictor
  fitting) and ``test``. Built in (`weightshare.data.sources`): ``fashion-mnist``
  (the default; IDX files from a folder, ``$WEIGHTSHARE_DATA`` or Debian's
  ``dataset-fashion-mnist`` package), ``cifar10`` (python-pickle batches),
  ``imagefolder`` (``root/train/<class>/*``, in memory or streamed from disk when
  it does not fit) and ``synthetic`` (generated, for fast tests). Nothing is ever
  downloaded: missing data raises `DatasetError` saying where the loader looked.
* Splits are `ImageSet`s (uint8 tensors in memory) or `FileSet`s (file lists).
  `make_loader` picks `Loader` (in memory) or `StreamingLoader` (DataLoader
  workers decoding files); both yield (normalized float32 images, int64 labels)
  with an order that is a function of (seed, epoch, rank) and augmentation
  seeded per (seed, epoch, rank, batch or sample), so a run resumed mid-epoch sees
  exactly the batches an uninterrupted run would have seen.
* `normalize`, `random_crop`, `random_hflip`, `resize` work on whole batches on
  any device (`weightshare.data.transforms`).

Modules: ``containers`` (the split and dataset types), ``catalog`` (registry,
``load_dataset``), ``sources/`` (one reader each), ``transforms``, ``loader``
(in-memory), ``stream`` (files), ``seeds``. Non-IID client splits live in
`weightshare.fed.split`.
"""

from __future__ import annotations

from typing import Any

from . import sources
from .catalog import DATA_ENV_VAR, DATASETS, list_datasets, load_dataset, register_dataset
from .containers import (
    Dataset,
    DatasetError,
    DataWarning,
    FileSet,
    ImageSet,
    RawDataset,
    StreamSettings,
)
from .loader import EpochBatches, Loader, make_loader
from .transforms import normalize, random_crop, random_hflip, resize

__all__ = [
    "DATASETS",
    "DATA_ENV_VAR",
    "Dataset",
    "DatasetError",
    "DataWarning",
    "EpochBatches",
    "FileSet",
    "ImageSet",
    "Loader",
    "RawDataset",
    "StreamSettings",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "normalize",
    "random_crop",
    "random_hflip",
    "register_dataset",
    "resize",
]

# The name this tuple had before data became a package; the Fashion-MNIST reader
# reads it here at call time, so patching it (tests do) still takes effect.
_FASHION_MNIST_SYSTEM_DIRS = sources.fashion_mnist.SYSTEM_DIRS


def __getattr__(name: str) -> Any:
    # Kept for one release: the Dirichlet split moved to weightshare.fed.split, the
    # only place that uses it; imported lazily so data never loads fed on its own.
    if name == "dirichlet_split":
        import warnings

        from ..fed.split import dirichlet_split

        warnings.warn("weightshare.data.dirichlet_split moved to weightshare.fed.split",
                      DeprecationWarning, stacklevel=2)
        return dirichlet_split
    if name == "StreamingLoader":
        from .stream import StreamingLoader

        return StreamingLoader
    raise AttributeError(f"module 'weightshare.data' has no attribute {name!r}")
