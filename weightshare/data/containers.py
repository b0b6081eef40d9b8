"""What a loaded data set is: splits held in memory (`ImageSet`) or streamed from files
(`FileSet`), the three-split `Dataset`, and what a registered builder returns (`RawDataset`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, WeightshareError

__all__ = ["DataWarning", "Dataset", "DatasetError", "FileSet", "ImageSet", "RawDataset", "StreamSettings"]


class DatasetError(WeightshareError, RuntimeError):
    """Data is missing, truncated or malformed. The message says which file and what to do."""

    # Its public home: the CLI recognises user errors by dotted name, and pickles
    # (DataLoader workers) look it up here.
    __module__ = "weightshare.data"


class DataWarning(UserWarning):
    """A file was unreadable and skipped or replaced; the message names it."""

    __module__ = "weightshare.data"


def _as_index(indices: Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    return np.asarray(indices, dtype=np.int64)


# eq=False: a generated __eq__ would compare tensors and raise on truth-testing the result.
@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split held in memory: ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ConfigError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ConfigError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ConfigError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def shape_hw(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: Tensor | np.ndarray | Sequence[int]) -> ImageSet:
        """The samples at ``indices``, in that order (copies)."""
        idx = torch.as_tensor(_as_index(indices))
        return ImageSet(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class StreamSettings:
    """How a streamed split is decoded and augmented (see `weightshare.data.stream`).

    workers: DataLoader worker processes (0 decodes in the training process).
    prefetch: batches each worker prepares ahead.
    min_scale, max_scale: RandomResizedCrop's range of crop area, as a fraction
        of the image (0.08-1 is the ImageNet recipe of OFA, BigNAS and DepS).
    eval_crop: evaluation resizes the shorter side to ``size / eval_crop`` and
        takes the centre ``size`` square (0.875: 256 -> 224).
    max_bad: consecutive unreadable files tolerated before a batch fails.
    """

    workers: int = 4
    prefetch: int = 2
    min_scale: float = 0.08
    max_scale: float = 1.0
    eval_crop: float = 0.875
    max_bad: int = 16

    def __post_init__(self) -> None:
        if self.workers < 0 or self.prefetch < 1 or self.max_bad < 1:
            raise ConfigError(
                f"need workers >= 0, prefetch >= 1, max_bad >= 1; got {self.workers}, "
                f"{self.prefetch}, {self.max_bad}"
            )
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ConfigError(
                f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}"
            )
        if not 0.0 < self.eval_crop <= 1.0:
            raise ConfigError(f"eval_crop must be in (0, 1], got {self.eval_crop}")


# eq=False: the path and label arrays make a generated __eq__ ambiguous.
@dataclass(frozen=True, eq=False)
class FileSet:
    """One split streamed from image files: ``paths`` (N,) and int64 ``labels`` (N,).

    Images are decoded on demand (by `StreamingLoader`'s workers) to ``channels``
    x ``size`` x ``size``; nothing but the file list is held in memory.
    """

    paths: np.ndarray  # str objects; an array so subsets and worker pickles stay cheap
    labels: Tensor
    size: int
    channels: int
    settings: StreamSettings = field(default_factory=StreamSettings)

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ConfigError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.paths) != len(self.labels):
            raise ConfigError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        if self.channels not in (1, 3) or self.size < 1:
            raise ConfigError(f"need channels in (1, 3) and size >= 1, got {self.channels}, "
                             f"{self.size}")

    @classmethod
    def from_items(cls, items: Sequence[tuple[Path, int]], size: int, channels: int,
                   settings: StreamSettings | None = None) -> FileSet:
        paths = np.array([str(p) for p, _ in items], dtype=object)
        labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        return cls(paths, labels, size, channels, settings or StreamSettings())

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape_hw(self) -> tuple[int, int]:
        return self.size, self.size

    def subset(self, indices: Tensor | np.ndarray | Sequence[int]) -> FileSet:
        """The files at ``indices``, in that order."""
        idx = _as_index(indices)
        return FileSet(self.paths[idx], self.labels[torch.as_tensor(idx)], self.size,
                       self.channels, self.settings)


Split = ImageSet | FileSet


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: three splits plus what models and transforms need.

    The splits are `ImageSet`s (in memory, the default) or `FileSet`s (streamed,
    for data that does not fit); `weightshare.data.make_loader` picks the loader.
    """

    name: str
    train: Split  # official training split minus `calib`
    calib: Split  # held-out slice of the official training split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int  # H (== W)
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    hflip: bool  # whether horizontal flip preserves the label
    classes: tuple[str, ...]

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, FileSet)


@dataclass(frozen=True, eq=False)
class RawDataset:
    """What a registered builder returns: the official splits before calib/subset handling.

    ``mean``/``std`` of None means "compute them from ``train``" (in-memory splits only).
    """

    train: Split
    test: Split
    classes: tuple[str, ...]
    hflip: bool
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
