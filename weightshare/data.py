"""Datasets held in memory as uint8 tensors, batch transforms, and non-IID client splits.

Everything here is deliberately small and torch-only (no torchvision):

* `load_dataset(name, root, ...)` looks the name up in a registry filled by
  `@register_dataset` and returns a `Dataset` with three splits: ``train``,
  ``calib`` (a seeded slice held out of the official training set, for BN
  recalibration and predictor fitting) and ``test``. Built in: ``fashion-mnist``
  (the default; IDX files from a folder, ``$WEIGHTSHARE_DATA`` or Debian's
  ``dataset-fashion-mnist`` package), ``cifar10`` (python-pickle batches),
  ``imagefolder`` (``root/train/<class>/*.png``) and ``synthetic`` (generated,
  for fast tests). Nothing is ever downloaded: missing data raises `DatasetError`
  saying where the loader looked and how to get the files.
* `normalize`, `random_crop`, `random_hflip`, `resize` work on whole batches on
  any device.
* `Loader` turns a split into (normalized float32 images, int64 labels) batches.
  Its shuffle order is a function of (seed, epoch) and its augmentation of
  (seed, epoch, rank, batch index), so a run resumed mid-epoch sees exactly the
  batches an uninterrupted run would have seen.
* `dirichlet_split` partitions sample indices among federated clients.
"""

from __future__ import annotations

import gzip
import inspect
import math
import os
import pickle
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "DATA_ENV_VAR",
    "Dataset",
    "DatasetError",
    "ImageSet",
    "Loader",
    "RawDataset",
    "dirichlet_split",
    "list_datasets",
    "load_dataset",
    "normalize",
    "random_crop",
    "random_hflip",
    "register_dataset",
    "resize",
]

DATA_ENV_VAR = "WEIGHTSHARE_DATA"

# A module attribute rather than a literal inside the loader so tests can point
# it elsewhere and check the "not found" path on machines that have the package.
_FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

_DEFAULT_CALIB_SIZE = 2000

# Distinct streams for each use of the seed, so that e.g. changing train_subset
# never changes which images land in the calib split.
_TAG_CALIB = 1
_TAG_TRAIN_SUBSET = 2
_TAG_TEST_SUBSET = 3
_TAG_SHUFFLE = 4
_TAG_AUGMENT = 5
_TAG_HOLDOUT = 6
_TAG_SYNTHETIC = 7


class DatasetError(RuntimeError):
    """Data is missing, truncated or malformed. The message says which file and what to do."""


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------


# eq=False: a generated __eq__ would compare tensors and raise on truth-testing the result.
@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor | np.ndarray | Sequence[int]) -> ImageSet:
        """The samples at ``indices``, in that order (copies)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSet(self.images[idx], self.labels[idx])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: three in-memory splits plus what models and transforms need."""

    name: str
    train: ImageSet  # official training split minus `calib`
    calib: ImageSet  # held-out slice of the official training split
    test: ImageSet
    num_classes: int
    in_channels: int
    image_size: int  # H (== W)
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    hflip: bool  # whether horizontal flip preserves the label
    classes: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class RawDataset:
    """What a registered builder returns: the official splits before calib/subset handling.

    ``mean``/``std`` of None means "compute them from ``train``".
    """

    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    hflip: bool
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


DatasetBuilder = Callable[..., RawDataset]
_B = TypeVar("_B", bound=DatasetBuilder)
_REGISTRY: dict[str, DatasetBuilder] = {}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str) -> Callable[[_B], _B]:
    """Register ``builder(root: Path | None, *, seed: int, **options) -> RawDataset``.

    ``root`` is the user's folder (None when not given); ``seed`` is the
    `load_dataset` seed, for builders that generate or hold out data.
    """
    key = _canonical(name)

    def decorate(builder: _B) -> _B:
        if key in _REGISTRY:
            raise ValueError(f"dataset {key!r} is already registered")
        _REGISTRY[key] = builder
        return builder

    return decorate


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`, sorted."""
    return sorted(_REGISTRY)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


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
    """Load dataset ``name`` into memory and split off the calib set.

    calib_size: images moved from the official training split into ``calib``
        (a seeded random choice). None means 2000, capped at a tenth of the
        training split so tiny datasets (synthetic, small image folders) work
        with the default; an explicit value is honoured exactly.
    train_subset, test_subset: keep at most this many images (seeded random
        choice, original order kept) of ``train`` (after the calib split) and
        ``test``, for fast CPU runs. ``calib`` is unaffected.
    options: passed to the dataset's builder (e.g. ``image_size`` for
        ``imagefolder`` and ``synthetic``).
    """
    key = _canonical(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    builder = _REGISTRY[key]
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
        raise ValueError(
            f"calib_size={calib_size} must be in [0, {n}) for {key!r} ({n} training images)"
        )
    perm = np.random.default_rng(_mix(seed, _TAG_CALIB)).permutation(n)
    calib_idx = np.sort(perm[:calib_size])
    train_idx = np.sort(perm[calib_size:])
    train_idx = _subsample(train_idx, train_subset, _mix(seed, _TAG_TRAIN_SUBSET), "train_subset")
    test_idx = _subsample(
        np.arange(len(raw.test)), test_subset, _mix(seed, _TAG_TEST_SUBSET), "test_subset"
    )

    if raw.mean is None or raw.std is None:
        mean, std = _channel_stats(raw.train.images)
    else:
        mean, std = raw.mean, raw.std
    _, c, h, w = raw.train.images.shape
    if h != w:
        raise DatasetError(f"{key}: images must be square, got {h}x{w}")
    return Dataset(
        name=key,
        train=raw.train.subset(train_idx),
        calib=raw.train.subset(calib_idx),
        test=raw.test.subset(test_idx),
        num_classes=len(raw.classes),
        in_channels=c,
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
        raise ValueError(f"{what} must be >= 1, got {size}")
    chosen = np.random.default_rng(seed).choice(len(idx), size=size, replace=False)
    return idx[np.sort(chosen)]


def _mix(*values: int) -> int:
    """A 64-bit seed that depends on every value (SeedSequence mixes well; sums would collide)."""
    entropy = [v & 0xFFFF_FFFF_FFFF_FFFF for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def _env_dir() -> Path | None:
    value = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# ---------------------------------------------------------------------------------------------

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
    env = _env_dir()
    for label, base in (("root", root), (f"${DATA_ENV_VAR}", env)):
        if base is None:
            if label != "root":
                out.append((label, None))
            continue
        # Subfolders of a missing folder would only pad the error message.
        subs = _FMNIST_SUBDIRS if base.is_dir() else ("",)
        out += [(label, base / sub if sub else base) for sub in subs]
    out += [("system", d) for d in _FASHION_MNIST_SYSTEM_DIRS]
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


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)
# ---------------------------------------------------------------------------------------------

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
    bases: list[Path] = [b for b in (root, _env_dir()) if b is not None]
    looked: list[str] = [] if _env_dir() is not None else [f"${DATA_ENV_VAR} (not set)"]
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


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_GRAY_MODES = {"1", "L", "LA"}


def _list_class_files(split_dir: Path) -> dict[str, list[Path]]:
    classes = sorted(
        d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    return {
        c: sorted(
            p
            for p in (split_dir / c).iterdir()
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        for c in classes
    }


@register_dataset("imagefolder")
def _build_imagefolder(
    root: Path | None,
    *,
    seed: int,
    image_size: int = 32,
    holdout: float = 0.2,
    hflip: bool = True,
) -> RawDataset:
    """``root/train/<class>/*`` and optionally ``root/test/<class>/*``.

    Images are squashed (not cropped) to ``image_size`` squared so nothing at the
    edges is lost. They load as RGB, or as one channel when every image is
    grayscale. Without a ``test`` folder, ``holdout`` of each class is held out
    (seeded) as the test split.
    """
    base = root if root is not None else _env_dir()
    if base is None or not (base / "train").is_dir():
        where = (
            f"{base / 'train'} (does not exist)" if base else f"no root, ${DATA_ENV_VAR} not set"
        )
        raise DatasetError(
            f"image folder not found: {where}. Expected root/train/<class>/*.png|jpg|jpeg|bmp "
            "and optionally root/test/<class>/...; pass the root as --data-dir / set "
            f"{DATA_ENV_VAR}."
        )
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    train_files = _list_class_files(base / "train")
    classes = tuple(train_files)
    if not classes or not any(train_files.values()):
        raise DatasetError(f"{base / 'train'}: no class folders with images")
    index = {c: i for i, c in enumerate(classes)}

    if (base / "test").is_dir():
        test_files = _list_class_files(base / "test")
        unknown = sorted(set(test_files) - set(index))
        if unknown:
            raise DatasetError(f"{base / 'test'}: classes {unknown} have no train folder")
        train_items = [(p, index[c]) for c, ps in train_files.items() for p in ps]
        test_items = [(p, index[c]) for c, ps in test_files.items() for p in ps]
    else:
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        rng = np.random.default_rng(_mix(seed, _TAG_HOLDOUT))
        train_items, test_items = [], []
        # Per class, so every class with >= 2 images is represented in both splits.
        for c, paths in train_files.items():
            n_test = round(holdout * len(paths))
            if len(paths) >= 2:
                n_test = min(max(n_test, 1), len(paths) - 1)
            chosen = set(rng.permutation(len(paths))[:n_test].tolist())
            for i, p in enumerate(paths):
                (test_items if i in chosen else train_items).append((p, index[c]))

    all_paths = [p for p, _ in train_items + test_items]
    gray = all(_image_mode(p) in _GRAY_MODES for p in all_paths)
    mode = "L" if gray else "RGB"
    return RawDataset(
        train=_load_images(train_items, mode, image_size, 1 if gray else 3),
        test=_load_images(test_items, mode, image_size, 1 if gray else 3),
        classes=classes,
        hflip=hflip,
    )


def _image_mode(path: Path) -> str:
    try:
        # Opening reads only the header, so this pass is cheap.
        with Image.open(path) as img:
            return img.mode
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from e


def _load_images(items: list[tuple[Path, int]], mode: str, size: int, channels: int) -> ImageSet:
    images = np.empty((len(items), size, size, channels), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        try:
            with Image.open(path) as img:
                img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                images[i] = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"{path}: not a readable image ({e})") from e
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels)


# ---------------------------------------------------------------------------------------------
# Synthetic
# ---------------------------------------------------------------------------------------------


@register_dataset("synthetic")
def _build_synthetic(
    root: Path | None,
    *,
    seed: int,
    n_train: int = 512,
    n_test: int = 256,
    image_size: int = 28,
    in_channels: int = 1,
    num_classes: int = 10,
) -> RawDataset:
    """Each class is a fixed random smooth template; a sample is its template plus noise.

    Templates are upsampled from a 4x4 random grid, so classes differ in coarse
    structure that a small CNN learns in a few steps, while per-pixel noise keeps
    it from being trivial. hflip is False: mirroring a template makes a pattern
    that belongs to no class. Never touches the disk (``root`` is ignored).
    """
    del root
    if min(n_train, n_test, image_size, in_channels) < 1 or num_classes < 2:
        raise ValueError(
            "synthetic needs n_train, n_test, image_size, in_channels >= 1 and num_classes >= 2"
        )
    gen = torch.Generator().manual_seed(_mix(seed, _TAG_SYNTHETIC))
    grid = torch.randn(num_classes, in_channels, 4, 4, generator=gen)
    templates = F.interpolate(
        grid, size=(image_size, image_size), mode="bicubic", align_corners=True
    )
    templates = templates / templates.flatten(1).std(dim=1).view(-1, 1, 1, 1)

    def split(n: int) -> ImageSet:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
        noise = torch.randn(n, in_channels, image_size, image_size, generator=gen)
        pixels = 128.0 + 40.0 * templates[labels] + 25.0 * noise
        return ImageSet(pixels.round().clamp(0, 255).to(torch.uint8), labels)

    train = split(n_train)
    test = split(n_test)
    return RawDataset(
        train=train, test=test, classes=tuple(f"class{i}" for i in range(num_classes)), hflip=False
    )


# ---------------------------------------------------------------------------------------------
# Transforms (whole batches, any device)
# ---------------------------------------------------------------------------------------------


def _channel_tensor(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=like.device)
    return t.view(-1, 1, 1)


def normalize(
    x_uint8: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """uint8 (B, C, H, W) or (C, H, W) -> float32 ``(x / 255 - mean) / std`` per channel.

    Only uint8 is accepted so an already-normalized batch cannot be normalized twice.
    """
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {x_uint8.dtype}")
    m = _channel_tensor(mean, x_uint8)
    s = _channel_tensor(std, x_uint8)
    # One scale-and-shift on the fresh float copy instead of three full-size temporaries.
    return x_uint8.to(torch.float32).mul_(1.0 / (255.0 * s)).sub_(m / s)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad (B, C, H, W) by ``padding`` on each side, then crop each sample back to H x W
    at its own random offset. ``padding == 0`` returns ``x`` unchanged.

    Offsets are drawn on the generator's device and moved to ``x``'s, so a CPU
    generator gives the same crops whatever device the batch is on.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(
        0, 2 * padding + 1, (2, b), generator=generator, device=_gen_device(generator)
    ).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Channels last so the three index tensors are adjacent and gather (B, H, W, C) at once.
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each sample of (B, C, H, W) left-right with probability ``p``.

    Sample i is flipped exactly when ``torch.rand(B, generator=generator)[i] < p``.
    """
    mask = torch.rand(x.shape[0], generator=generator, device=_gen_device(generator)) < p
    mask = mask.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x.flip(-1), x)


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of (B, C, H, W) to size x size; ``x`` itself if already so.

    Integer input is resized in float and rounded back, since not every device
    implements antialiased interpolation for integers.
    """
    if x.shape[-2:] == (size, size):
        return x
    if x.is_floating_point():
        return F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    y = F.interpolate(
        x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    info = torch.iinfo(x.dtype)
    return y.round_().clamp_(info.min, info.max).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


class Loader:
    """Batches of (float32 normalized images, int64 labels) from an in-memory `ImageSet`.

    train=True: shuffles (order = f(seed, epoch)), augments (random crop with
    zero padding, plus horizontal flip when ``dataset.hflip``) and drops the last
    partial batch. train=False: fixed order, no augmentation, keeps every sample.

    padding: crop padding in pixels; default ``max(1, image_size // 8)`` (4 for
    32x32, 3 for 28x28), the usual 1/8 of the side.

    Distributed: rank r of world_size takes every world_size-th index of the
    (shuffled) order. For training the order is first cut to a multiple of
    world_size so every rank runs the same number of steps (the dropped few
    differ each epoch); for evaluation nothing is dropped, shards differ in size
    by at most one, so reduce metric sums once after the loop, not per batch.

    Resume: ``set_epoch(epoch, start_batch=k)`` makes iteration begin at batch k.
    Iteration is a pure function of (seed, epoch, start_batch, rank,
    world_size): the augmentation of batch b is seeded by (seed, epoch, rank, b),
    so skipped batches cost nothing and the rest match an uninterrupted run.
    ``len()`` is always the full epoch, so step-based LR schedules stay aligned.

    resolution: when set and different from the stored size, batches are resized
    (after normalization). It is a plain attribute and may be changed between batches.
    On a non-CPU device the split is copied there once, on first use.
    """

    def __init__(
        self,
        data: ImageSet,
        dataset: Dataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        augment: bool | None = None,
        padding: int | None = None,
        drop_last: bool | None = None,
        resolution: int | None = None,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}"
            )
        self.data = data
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.augment = train if augment is None else augment
        size = data.images.shape[-1]
        self.padding = max(1, size // 8) if padding is None else padding
        self.drop_last = train if drop_last is None else drop_last
        self.resolution = resolution
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        self._on_device: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        if self.drop_last and len(self) == 0:
            raise ValueError(
                f"{self._shard_size()} samples per rank is less than batch_size={batch_size} "
                "with drop_last: the loader would yield nothing"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (and so the shuffle and augmentation) and where iteration starts."""
        if epoch < 0 or start_batch < 0:
            raise ValueError(f"epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def _shard_size(self) -> int:
        n = len(self.data)
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_indices(self) -> Tensor:
        """This rank's sample order (indices into ``data``) for the current epoch."""
        n = len(self.data)
        if self.train:
            gen = torch.Generator().manual_seed(_mix(self.seed, _TAG_SHUFFLE, self.epoch))
            order = torch.randperm(n, generator=gen)
            order = order[: (n // self.world_size) * self.world_size]
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self._on_device is None:
            dev = self.device
            self._on_device = (
                self.data.images.to(dev),
                self.data.labels.to(dev),
                torch.tensor(self.dataset.mean, dtype=torch.float32, device=dev),
                torch.tensor(self.dataset.std, dtype=torch.float32, device=dev),
            )
        return self._on_device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels, mean, std = self._tensors()
        order = self.epoch_indices().to(images.device)
        flip = self.augment and self.dataset.hflip
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = images.index_select(0, idx)
            y = labels.index_select(0, idx)
            if self.augment:
                gen = torch.Generator().manual_seed(
                    _mix(self.seed, _TAG_AUGMENT, self.epoch, self.rank, b)
                )
                x = random_crop(x, self.padding, gen)
                if flip:
                    x = random_hflip(x, gen)
            x = normalize(x, mean, std)
            if self.resolution is not None:
                x = resize(x, self.resolution)
            yield x, y


# ---------------------------------------------------------------------------------------------
# Non-IID client splits
# ---------------------------------------------------------------------------------------------


def dirichlet_split(
    labels: Tensor | np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int = 0,
    min_size: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Partition sample indices among clients with per-class Dirichlet(alpha) proportions.

    For each class, its samples (shuffled) are cut among the clients in
    proportions drawn from Dirichlet(alpha, ..., alpha). Small alpha gives each
    client few classes; alpha=100 is close to IID. The whole draw is repeated
    until every client has at least ``min_size`` samples (at most ``max_tries``
    times, then ValueError). Returns one sorted int64 index array per client;
    together they are disjoint and cover every sample. Deterministic by ``seed``.
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or (y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0)):
        raise ValueError("labels must be a 1-D array of non-negative integers")
    if num_clients < 1 or alpha <= 0 or min_size < 0:
        raise ValueError(
            f"need num_clients >= 1, alpha > 0, min_size >= 0; got {num_clients}, {alpha}, "
            f"{min_size}"
        )
    n = len(y)
    if num_clients * min_size > n:
        raise ValueError(f"{n} samples cannot give {num_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        clients = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(c) for c in clients) >= min_size:
            return clients
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave all {num_clients} clients >= {min_size} "
        f"samples in {max_tries} tries; raise alpha, lower min_size or use fewer clients"
    )
