"""Batches for the training loop: the in-memory `Loader`, the order both loaders share,
and `make_loader`, which picks the loader a split needs.

Order: shuffled training order is a function of (seed, epoch); rank r of
world_size takes every world_size-th index of it (`epoch_order`). The streaming
loader (`weightshare.data.stream`) uses the same function, so switching a data
set between memory and streaming changes how images are decoded, never which
images a step sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .containers import Dataset, FileSet, ImageSet
from .seeds import TAG_AUGMENT, TAG_SHUFFLE, mix
from .transforms import normalize, random_crop, random_hflip, resize

__all__ = ["EpochBatches", "Loader", "epoch_order", "make_loader", "shard_size"]


def epoch_order(n: int, *, train: bool, seed: int, epoch: int, rank: int,
                world_size: int) -> Tensor:
    """Rank ``rank``'s sample order (indices into a split of ``n``) for ``epoch``.

    Training shuffles by (seed, epoch) and first cuts the order to a multiple of
    world_size, so every rank runs the same number of steps (the dropped few
    differ each epoch); evaluation keeps the natural order and every sample.
    """
    if train:
        gen = torch.Generator().manual_seed(mix(seed, TAG_SHUFFLE, epoch))
        order = torch.randperm(n, generator=gen)
        order = order[: (n // world_size) * world_size]
    else:
        order = torch.arange(n)
    return order[rank::world_size]


def shard_size(n: int, *, train: bool, rank: int, world_size: int) -> int:
    """len(epoch_order(...)) without building it."""
    if train:
        return n // world_size
    return len(range(rank, n, world_size))


def check_loader_args(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}"
        )


class EpochBatches:
    """What both loaders share: arguments, ``set_epoch``, ``len()`` and this rank's order.

    Subclasses implement ``__iter__``; see `Loader` for the contract.
    """

    def __init__(
        self,
        data: ImageSet | FileSet,
        dataset: Dataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        augment: bool | None = None,
        drop_last: bool | None = None,
        resolution: int | None = None,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_loader_args(batch_size, rank, world_size)
        self.data = data
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.augment = train if augment is None else augment
        self.drop_last = train if drop_last is None else drop_last
        self.resolution = resolution
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        if self.drop_last and len(self) == 0:
            raise ConfigError(
                f"{self._shard_size()} samples per rank is less than batch_size={batch_size} "
                "with drop_last: the loader would yield nothing"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (and so the shuffle and augmentation) and where iteration starts."""
        if epoch < 0 or start_batch < 0:
            raise ConfigError(f"epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def _shard_size(self) -> int:
        return shard_size(len(self.data), train=self.train, rank=self.rank,
                          world_size=self.world_size)

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_indices(self) -> Tensor:
        """This rank's sample order (indices into ``data``) for the current epoch."""
        return epoch_order(len(self.data), train=self.train, seed=self.seed, epoch=self.epoch,
                           rank=self.rank, world_size=self.world_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError


class Loader(EpochBatches):
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
        if not isinstance(data, ImageSet):
            raise TypeError(
                f"Loader holds an in-memory ImageSet, got {type(data).__name__}; "
                "use weightshare.data.make_loader, which streams FileSets"
            )
        super().__init__(data, dataset, batch_size, train=train, seed=seed, augment=augment,
                         drop_last=drop_last, resolution=resolution, device=device, rank=rank,
                         world_size=world_size)
        self.data: ImageSet = data
        size = data.images.shape[-1]
        self.padding = max(1, size // 8) if padding is None else padding
        self._on_device: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

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
                    mix(self.seed, TAG_AUGMENT, self.epoch, self.rank, b)
                )
                x = random_crop(x, self.padding, gen)
                if flip:
                    x = random_hflip(x, gen)
            x = normalize(x, mean, std)
            if self.resolution is not None:
                x = resize(x, self.resolution)
            yield x, y


def make_loader(data: ImageSet | FileSet, dataset: Dataset, batch_size: int,
                **options: Any) -> Any:
    """The loader for ``data``: `Loader` for an in-memory split, `StreamingLoader` for files.

    Both take the same arguments and keep the same guarantees (order, resume,
    shards, ``len()``), so the training loop and evaluation need not know which
    one a data set chose.
    """
    from .stream import StreamingLoader  # imports the DataLoader machinery only when needed

    kinds: tuple[tuple[type, Any], ...] = ((ImageSet, Loader), (FileSet, StreamingLoader))
    for kind, loader in kinds:
        if isinstance(data, kind):
            return loader(data, dataset, batch_size, **options)
    raise TypeError(f"no loader for a split of type {type(data).__name__}")
