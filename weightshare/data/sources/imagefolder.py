"""Image folders: ``root/train/<class>/*`` plus ``root/test/`` or ImageNet's ``root/val/``.

Small folders are decoded once into memory (squashed to ``image_size``, the
default). Folders whose decoded size would pass ``memory_limit_gb`` (ImageNet:
~190 GB at 224 px) are streamed instead: the splits are `FileSet`s and
`weightshare.data.stream.StreamingLoader` decodes them in worker processes, with
RandomResizedCrop + flip for training and resize + centre crop for evaluation.
``stream=True``/``False`` forces either.

Validation layouts: ``val/<class>/*`` (ImageNet after the usual valprep
script), or a flat ``val/*.JPEG`` labelled by ``LOC_val_solution.csv`` in the
root (the Kaggle ImageNet layout).
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ...errors import ConfigError
from ..catalog import DATA_ENV_VAR, channel_stats, env_dir, register_dataset
from ..containers import DatasetError, DataWarning, FileSet, ImageSet, RawDataset, StreamSettings
from ..seeds import TAG_HOLDOUT, TAG_STATS, mix
from ..stream import load_eval_image

__all__ = ["IMAGE_SUFFIXES", "list_class_files"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_GRAY_MODES = {"1", "L", "LA"}
_EVAL_SPLITS = ("test", "val")  # first found wins
_VAL_SOLUTION = "LOC_val_solution.csv"
_STATS_SAMPLE = 256  # files decoded to estimate a streamed folder's mean/std
_MODE_SAMPLE = 64  # file headers read to decide RGB vs gray for a streamed folder


def _image_files(folder: Path) -> list[Path]:
    # os.scandir: the entry type comes with the listing, no stat per file (ImageNet: 1.28M).
    with os.scandir(folder) as it:
        return sorted(
            Path(e.path) for e in it
            if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
            and e.is_file()
        )


def list_class_files(split_dir: Path) -> dict[str, list[Path]]:
    """Class folder name -> sorted image files, for every non-hidden subfolder of ``split_dir``."""
    with os.scandir(split_dir) as it:
        classes = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    return {c: _image_files(split_dir / c) for c in classes}


def _flat_val_items(base: Path, val_dir: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """``val/*.JPEG`` labelled by ``LOC_val_solution.csv`` (ImageId, "wnid x y x y ...")."""
    files = _image_files(val_dir)
    solution = base / _VAL_SOLUTION
    if not solution.is_file():
        raise DatasetError(
            f"{val_dir}: {len(files)} images but no class folders and no {solution}. Sort "
            f"them into {val_dir}/<class>/ (as ImageNet's valprep script does) or put "
            f"{_VAL_SOLUTION} in {base}."
        )
    labels: dict[str, str] = {}
    try:
        with solution.open(newline="") as f:
            for row in csv.DictReader(f):
                labels[row["ImageId"]] = row["PredictionString"].split()[0]
    except (OSError, KeyError, IndexError, csv.Error) as e:
        raise DatasetError(f"{solution}: expected columns ImageId,PredictionString ({e})") from e
    items = []
    for p in files:
        wnid = labels.get(p.stem)
        if wnid is None:
            raise DatasetError(f"{p}: no row for {p.stem!r} in {solution}")
        if wnid not in index:
            raise DatasetError(f"{p}: class {wnid!r} (from {solution}) has no train folder")
        items.append((p, index[wnid]))
    return items


def _split_items(base: Path, seed: int, holdout: float
                 ) -> tuple[tuple[str, ...], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(classes, train items, test items) of the folder, holding out a test split if none."""
    train_files = list_class_files(base / "train")
    classes = tuple(train_files)
    if not classes or not any(train_files.values()):
        raise DatasetError(f"{base / 'train'}: no class folders with images")
    index = {c: i for i, c in enumerate(classes)}
    train_items = [(p, index[c]) for c, ps in train_files.items() for p in ps]
    for name in _EVAL_SPLITS:
        eval_dir = base / name
        if not eval_dir.is_dir():
            continue
        eval_files = list_class_files(eval_dir)
        if not any(eval_files.values()):
            return classes, train_items, _flat_val_items(base, eval_dir, index)
        unknown = sorted(set(eval_files) - set(index))
        if unknown:
            raise DatasetError(f"{eval_dir}: classes {unknown} have no train folder")
        return classes, train_items, [(p, index[c]) for c, ps in eval_files.items() for p in ps]
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    rng = np.random.default_rng(mix(seed, TAG_HOLDOUT))
    train_items, test_items = [], []
    # Per class, so every class with >= 2 images is represented in both splits.
    for c, paths in train_files.items():
        n_test = round(holdout * len(paths))
        if len(paths) >= 2:
            n_test = min(max(n_test, 1), len(paths) - 1)
        chosen = set(rng.permutation(len(paths))[:n_test].tolist())
        for i, p in enumerate(paths):
            (test_items if i in chosen else train_items).append((p, index[c]))
    return classes, train_items, test_items


@register_dataset("imagefolder")
def _build_imagefolder(
    root: Path | None,
    *,
    seed: int,
    image_size: int = 32,
    holdout: float = 0.2,
    hflip: bool = True,
    stream: bool | None = None,
    memory_limit_gb: float = 4.0,
    workers: int | None = None,
    min_scale: float = 0.08,
    eval_crop: float = 0.875,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    max_bad: int = 16,
) -> RawDataset:
    """``root/train/<class>/*`` and optionally ``root/test/<class>/*`` (or ``root/val``).

    In memory, images are squashed (not cropped) to ``image_size`` squared so
    nothing at the edges is lost; they load as RGB, or as one channel when every
    image is grayscale. Without a test/val folder, ``holdout`` of each class is
    held out (seeded) as the test split.

    stream: None streams when the decoded training set would exceed
        ``memory_limit_gb``; then ``image_size`` is the crop size.
    workers: streaming decoder processes (None: one per usable core but one, at most 8).
    min_scale: smallest RandomResizedCrop area fraction (streaming training).
    eval_crop: centre-crop fraction for streamed evaluation (0.875: 256 -> 224).
    mean, std: per-channel statistics; None computes them (in memory: exactly;
        streaming: from a fixed sample of training images).
    max_bad: streaming: unreadable files in a row that fail a batch (one is
        replaced by the next file and warned about).
    """
    base = root if root is not None else env_dir()
    if base is None or not (base / "train").is_dir():
        where = (
            f"{base / 'train'} (does not exist)" if base else f"no root, ${DATA_ENV_VAR} not set"
        )
        raise DatasetError(
            f"image folder not found: {where}. Expected root/train/<class>/*.png|jpg|jpeg|bmp "
            "and optionally root/test/<class>/... or root/val/<class>/...; pass the root as "
            f"--data-dir / set {DATA_ENV_VAR}."
        )
    if image_size < 1:
        raise ConfigError(f"image_size must be >= 1, got {image_size}")
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std, or neither")
    classes, train_items, test_items = _split_items(base, seed, holdout)
    if stream is None:
        # An upper bound (3 channels): deciding must not read a million headers.
        decoded = len(train_items) * 3 * image_size**2
        stream = decoded > memory_limit_gb * 2**30
    stats = (tuple(mean), tuple(std)) if mean is not None and std is not None else (None, None)
    if not stream:
        all_paths = [p for p, _ in train_items + test_items]
        gray = all(_image_mode(p) in _GRAY_MODES for p in all_paths)
        mode = "L" if gray else "RGB"
        return RawDataset(
            train=_load_images(train_items, mode, image_size, 1 if gray else 3),
            test=_load_images(test_items, mode, image_size, 1 if gray else 3),
            classes=classes, hflip=hflip, mean=stats[0], std=stats[1],
        )
    if workers is None:
        workers = max(1, min(8, len(os.sched_getaffinity(0)) - 1))
    settings = StreamSettings(workers=workers, min_scale=min_scale, eval_crop=eval_crop,
                              max_bad=max_bad)
    # A fixed sample, not the run's seed: the statistics are a property of the folder.
    rng = np.random.default_rng(mix(0, TAG_STATS))
    probe = rng.permutation(len(train_items))
    readable = _readable_sample(train_items, probe)
    gray = all(_image_mode(train_items[i][0]) in _GRAY_MODES for i in readable[:_MODE_SAMPLE])
    channels = 1 if gray else 3
    train = FileSet.from_items(train_items, image_size, channels, settings)
    test = FileSet.from_items(test_items, image_size, channels, settings)
    if stats[0] is None:
        stats = _sample_stats(train, readable[:_STATS_SAMPLE])
    return RawDataset(train=train, test=test, classes=classes, hflip=hflip, mean=stats[0],
                      std=stats[1])


def _readable_sample(items: list[tuple[Path, int]], probe: np.ndarray) -> list[int]:
    """The first ``_STATS_SAMPLE`` indices of ``probe`` whose files open, warning about the rest.

    One bad file among a million must not stop a streamed run before it starts
    (the loader replaces it later); a sample with nothing readable is an error.
    """
    good: list[int] = []
    bad: list[str] = []
    for i in probe:
        if len(good) >= _STATS_SAMPLE or len(bad) >= _STATS_SAMPLE:
            break
        path = items[int(i)][0]
        try:
            load_eval_image(str(path), 1, 1)  # decodes the whole file: catches truncation
            good.append(int(i))
        except DatasetError as e:
            bad.append(str(path))
            warnings.warn(f"{e}; skipped", DataWarning, stacklevel=4)
    if not good:
        raise DatasetError(f"none of {len(bad)} sampled training images is readable: "
                           f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    return good


def _sample_stats(files: FileSet, indices: np.ndarray
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel mean/std of evaluation crops of a sample of ``files`` (exact over the sample)."""
    crops = torch.stack([load_eval_image(files.paths[i], files.size, files.channels,
                                         files.settings.eval_crop) for i in indices])
    return channel_stats(crops)


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
