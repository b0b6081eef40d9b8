"""Fashion-MNIST from its four IDX files (gzip'd or not): a user folder, ``$WEIGHTSHARE_DATA``
or Debian's ``dataset-fashion-mnist`` package. Nothing is downloaded."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ..catalog import DATA_ENV_VAR, env_dir, register_dataset
from ..containers import DatasetError, ImageSet, RawDataset

__all__ = ["SYSTEM_DIRS"]

# Where Debian's package puts the files. `weightshare.data` re-exports it as
# `_FASHION_MNIST_SYSTEM_DIRS`, the name tests patch to check the "not found" path
# on machines that have the package; the builder reads that name at call time.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)


def _system_dirs() -> tuple[Path, ...]:
    from .. import _FASHION_MNIST_SYSTEM_DIRS  # at call time, so a patch of it is honoured

    return _FASHION_MNIST_SYSTEM_DIRS


_FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
# Subfolders tried under a user or $WEIGHTSHARE_DATA folder; "FashionMNIST/raw" is
# where torchvision leaves the files, so an existing copy is found without moving it.
_FMNIST_SUBDIRS = ("", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw")


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    # Uncompressed first: no decompression cost when both are present.
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fmnist_candidates(root: Path | None) -> list[tuple[str, Path | None]]:
    """(label, folder) pairs in search order; a None folder records an unset source."""
    out: list[tuple[str, Path | None]] = []
    env = env_dir()
    for label, base in (("root", root), (f"${DATA_ENV_VAR}", env)):
        if base is None:
            if label != "root":
                out.append((label, None))
            continue
        # Subfolders of a missing folder would only pad the error message.
        subs = _FMNIST_SUBDIRS if base.is_dir() else ("",)
        out += [(label, base / sub if sub else base) for sub in subs]
    out += [("system", d) for d in _system_dirs()]
    return out


@register_dataset("fashion-mnist")
def _build_fashion_mnist(root: Path | None, *, seed: int) -> RawDataset:
    del seed  # the files fix the data; the seed only drives the calib split
    looked: list[str] = []
    for label, folder in _fmnist_candidates(root):
        if folder is None:
            looked.append(f"{label} (not set)")
            continue
        if not folder.is_dir():
            looked.append(f"{folder} (does not exist)")
            continue
        found = {stem: _find_idx_file(folder, stem) for stem in _FMNIST_FILES}
        missing = [f"{stem}[.gz]" for stem, path in found.items() if path is None]
        if missing:
            looked.append(f"{folder} (missing {', '.join(missing)})")
            continue
        # A folder holding all four files is the one the user meant: a corrupt file
        # there is an error, not a reason to quietly fall through to another copy.
        paths = [p for p in found.values() if p is not None]
        train = _read_idx_pair(paths[0], paths[1])
        test = _read_idx_pair(paths[2], paths[3])
        return RawDataset(train=train, test=test, classes=_FMNIST_CLASSES, hflip=True)
    raise DatasetError(
        "Fashion-MNIST not found. Looked in:\n  "
        + "\n  ".join(looked)
        + "\nInstall Debian's package: apt-get install dataset-fashion-mnist, or put the four "
        "IDX files (" + ", ".join(f"{s}.gz" for s in _FMNIST_FILES) + ", gzip'd or not) "
        f"in a folder and pass --data-dir / set {DATA_ENV_VAR}. Nothing is downloaded."
    )


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    # By magic bytes, not by name: files get renamed, unpacked and re-packed.
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return raw


def _parse_idx(path: Path, magic: int) -> np.ndarray:
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: IDX magic number {found}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: {len(raw)} bytes, expected {expected} for an IDX array of shape {dims} "
            "(truncated or corrupt file)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_pair(images_path: Path, labels_path: Path) -> ImageSet:
    images = _parse_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _parse_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DatasetError(f"{images_path}: expected (N, H, H) images, got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(
            f"{labels_path}: {labels.shape} labels do not match {len(images)} images "
            f"in {images_path}"
        )
    if len(labels) and labels.max() >= len(_FMNIST_CLASSES):
        raise DatasetError(f"{labels_path}: label {labels.max()} out of range")
    # Copies: np.frombuffer views are read-only, which torch warns about and cannot write.
    return ImageSet(
        torch.from_numpy(images[:, None].copy()),
        torch.from_numpy(labels.astype(np.int64)),
    )
