"""The streaming loader: batches decoded from image files by DataLoader worker processes.

A drop-in for the in-memory `Loader` (same arguments, same `EpochBatches`
contract): the order is `epoch_order(seed, epoch, rank)`, ``set_epoch(e,
start_batch=k)`` resumes at batch k, DDP ranks read disjoint shards, ``len()``
is the full epoch. What differs is where pixels come from:

* Each DataLoader item is one whole batch, built in a worker: decode with
  Pillow, choose a box (RandomResizedCrop for training, the centre crop for
  evaluation), resample it once to ``size`` in torch (uint8, antialiased), flip.
  Sample ``i`` of the rank's epoch order is augmented with a generator seeded by
  (seed, epoch, rank, i), so batches are the same whichever worker, however
  many workers, and wherever the epoch was resumed.
* Workers return uint8 batches (4x less to pickle and copy than float); the
  training process pins them (CUDA), copies them with ``non_blocking=True``
  and normalises on the device.
* An unreadable file is replaced by the next readable one in the epoch order
  (deterministic) and reported once as a `DataWarning` naming it; ``max_bad``
  unreadable files in a row fail the batch with a `DatasetError` naming them.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

try:  # the faster JPEG decoder (a dependency; Pillow remains the fallback for all else)
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover
    _simplejpeg = None

from .containers import Dataset, DatasetError, DataWarning, FileSet, StreamSettings
from .loader import EpochBatches
from .seeds import TAG_AUGMENT, mix
from .transforms import (
    Box,
    center_crop_box,
    crop_resize,
    normalize,
    random_resized_crop_box,
    resize,
)

# What decodes JPEGs here, for reports ("simplejpeg 1.9.0" or "Pillow 13.0.0").
JPEG_DECODER = (f"simplejpeg {_simplejpeg.__version__}" if _simplejpeg is not None
                else f"Pillow {Image.__version__}")

__all__ = ["JPEG_DECODER", "READ_ERRORS", "DataWarning", "StreamingLoader", "load_eval_image",
           "load_image", "read_image"]

# What Pillow raises for a missing, truncated or non-image file (DecompressionBombError
# is an Exception of its own; ValueError/SyntaxError come from some broken headers).
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError,
                Image.DecompressionBombError)


def read_image(path: str, channels: int) -> Tensor:
    """Decode ``path`` to uint8 (H, W, channels); raises the underlying Pillow/OS error."""
    with Image.open(path) as img:
        return _pixels(img, channels)


def _pixels(img: Image.Image, channels: int) -> Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays
    return torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], channels))


def _dct_scale(box: Box, size: int) -> int:
    """The largest libjpeg DCT scale denominator (1, 2, 4 or 8) that keeps ``box`` >= ``size``."""
    _, _, bh, bw = box
    room = min(bh, bw) / size
    return max((d for d in (1, 2, 4, 8) if d <= room), default=1)


def _scale_box(box: Box, full: tuple[int, int], reduced: tuple[int, int]) -> Box:
    """``box`` (top, left, h, w) in a (w, h) image, moved into the same image decoded at
    (w', h'), never below 1 px and never outside it."""
    (w, h), (nw, nh) = full, reduced
    if (nw, nh) == (w, h):
        return box
    _, _, bh, bw = box
    sx, sy = nw / w, nh / h
    top, left = min(nh - 1, int(box[0] * sy)), min(nw - 1, int(box[1] * sx))
    return top, left, max(1, min(nh - top, round(bh * sy))), max(1, min(nw - left, round(bw * sx)))


def _draft(img: Image.Image, box: Box, size: int, channels: int) -> Box:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the box is still >= ``size`` there.

    DCT-domain downscaling skips most of the decoding work for large photos (a
    12 MP phone picture cropped to 224 px decodes ~5x faster) and the box is
    only ever shrunk towards ``size``, never below it, so no detail the output
    could show is lost. Returns the box in the reduced image's pixels.
    """
    d = _dct_scale(box, size)
    if img.format != "JPEG" or d == 1:
        return box
    w, h = img.size
    img.draft("L" if channels == 1 else "RGB", (math.ceil(w / d), math.ceil(h / d)))
    return _scale_box(box, (w, h), img.size)


def _decode_jpeg(data: bytes, choose_box: Callable[[int, int], Box], size: int,
                 channels: int) -> tuple[Tensor, Box] | None:
    """Decode JPEG bytes with simplejpeg (libjpeg-turbo straight into an array), at the
    same power-of-two DCT scale `_draft` would use; None when simplejpeg is not installed
    or cannot read the file (CMYK, a broken stream), so Pillow decides what it is.

    benchmarks/results/jpeg_decoders.md: 1.6x Pillow's speed on ImageNet-sized JPEGs
    (the same pixels at full scale) and at least as fast as Pillow's draft mode on
    12 MP photos (1.0x-1.4x over two runs).
    """
    if _simplejpeg is None or data[:2] != b"\xff\xd8":
        return None
    try:
        h, w, _, _ = _simplejpeg.decode_jpeg_header(data)
        box = choose_box(h, w)
        d = _dct_scale(box, size)
        # min sizes of exactly 1/d make libjpeg pick scale 1/d (the fast power-of-two IDCT)
        arr = _simplejpeg.decode_jpeg(data, colorspace="GRAY" if channels == 1 else "RGB",
                                      min_height=math.ceil(h / d), min_width=math.ceil(w / d))
    except ValueError:
        return None
    arr = np.ascontiguousarray(arr).reshape(arr.shape[0], arr.shape[1], channels)
    return torch.from_numpy(arr), _scale_box(box, (w, h), (arr.shape[1], arr.shape[0]))


def load_image(path: str, size: int, channels: int, settings: StreamSettings, *,
               train: bool, flip: bool, generator: torch.Generator | None) -> Tensor:
    """One decoded, cropped, resampled (and maybe flipped) uint8 (C, size, size) image.

    The box is chosen from the header's size, before decoding, so a JPEG can be
    decoded at reduced scale (`_draft`); the random draws are the same either way.
    """
    chosen: list[Box] = []

    def choose_box(h: int, w: int) -> Box:
        # drawn once, even when simplejpeg read the header and Pillow then decodes the file
        if not chosen:
            if not train:
                chosen.append(center_crop_box(h, w, settings.eval_crop))
            elif generator is None:
                raise ValueError("training crops need a generator")
            else:
                chosen.append(random_resized_crop_box(
                    h, w, generator, (settings.min_scale, settings.max_scale)))
        return chosen[0]

    with open(path, "rb") as f:
        data = f.read()
    fast = _decode_jpeg(data, choose_box, size, channels)
    if fast is not None:
        image, box = fast
    else:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            box = _draft(img, choose_box(h, w), size, channels)
            image = _pixels(img, channels)
    out = crop_resize(image, box, size)
    # Drawn even when flips are off, so turning them on does not move later draws.
    coin = float(torch.rand(1, generator=generator)) if generator is not None else 1.0
    return out.flip(-1) if flip and coin < 0.5 else out


def load_eval_image(path: str, size: int, channels: int, eval_crop: float = 0.875) -> Tensor:
    """The evaluation view of ``path`` (resize + centre crop), or a DatasetError naming it."""
    try:
        return load_image(path, size, channels, StreamSettings(eval_crop=eval_crop),
                          train=False, flip=False, generator=None)
    except READ_ERRORS as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from e


class _EpochFiles(TorchDataset):
    """One epoch of one rank as a map-style dataset whose item k is batch start_batch + k.

    Holds only plain arrays and numbers, so it pickles cheaply to spawned workers.
    """

    def __init__(self, files: FileSet, order: np.ndarray, batch_size: int, start_batch: int,
                 n_batches: int, *, train: bool, augment: bool, flip: bool, seed: int,
                 epoch: int, rank: int) -> None:
        self.paths, self.labels = files.paths, files.labels.numpy()
        self.size, self.channels, self.settings = files.size, files.channels, files.settings
        self.order, self.batch_size = order, batch_size
        self.start_batch, self.n_batches = start_batch, n_batches
        self.train, self.augment, self.flip = train, augment, flip
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __len__(self) -> int:
        return self.n_batches - self.start_batch

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor, list[tuple[str, str]]]:
        b = self.start_batch + k
        positions = range(b * self.batch_size, min((b + 1) * self.batch_size, len(self.order)))
        x = torch.empty(len(positions), self.channels, self.size, self.size, dtype=torch.uint8)
        y = torch.empty(len(positions), dtype=torch.int64)
        bad: list[tuple[str, str]] = []
        for j, pos in enumerate(positions):
            x[j], y[j] = self._sample(pos, bad)
        return x, y, bad

    def _sample(self, pos: int, bad: list[tuple[str, str]]) -> tuple[Tensor, int]:
        failed: list[str] = []
        for attempt in range(self.settings.max_bad):
            # The replacement for an unreadable file is the next one in the epoch order.
            idx = int(self.order[(pos + attempt) % len(self.order)])
            path = str(self.paths[idx])
            gen = None
            if self.augment:
                gen = torch.Generator().manual_seed(
                    mix(self.seed, TAG_AUGMENT, self.epoch, self.rank, pos))
            try:
                image = load_image(path, self.size, self.channels, self.settings,
                                   train=self.augment, flip=self.flip, generator=gen)
            except READ_ERRORS as e:
                bad.append((path, f"{type(e).__name__}: {e}"))
                failed.append(path)
                continue
            return image, int(self.labels[idx])
        raise DatasetError(
            f"{len(failed)} unreadable images in a row: {', '.join(failed)}. Is the folder "
            "intact? (one bad file is replaced and warned about; this many looks like a "
            "broken copy or mount)"
        )


class StreamingLoader(EpochBatches):
    """Batches of (float32 normalized images, int64 labels) decoded from a `FileSet`.

    Same arguments and guarantees as `weightshare.data.Loader` (``padding`` is
    accepted and ignored: training uses RandomResizedCrop instead), plus
    ``workers`` (default: the FileSet's settings) and ``worker_cpus`` (cores the
    workers may run on; default: the training process's own affinity, which they
    inherit). On CUDA, batches come through pinned memory and are copied
    asynchronously.
    """

    def __init__(self, data: FileSet, dataset: Dataset, batch_size: int, *, train: bool,
                 seed: int = 0, augment: bool | None = None, padding: int | None = None,
                 drop_last: bool | None = None, resolution: int | None = None,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                 workers: int | None = None, worker_cpus: set[int] | None = None) -> None:
        del padding  # a RandomResizedCrop recipe has no padded crop
        if not isinstance(data, FileSet):
            raise TypeError(f"StreamingLoader reads a FileSet, got {type(data).__name__}")
        super().__init__(data, dataset, batch_size, train=train, seed=seed, augment=augment,
                         drop_last=drop_last, resolution=resolution, device=device, rank=rank,
                         world_size=world_size)
        self.data: FileSet = data
        self.workers = data.settings.workers if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        self.worker_cpus = set(worker_cpus) if worker_cpus else None
        self._reported: set[str] = set()
        self._stats: tuple[Tensor, Tensor] | None = None

    def _epoch_files(self) -> _EpochFiles:
        return _EpochFiles(
            self.data, self.epoch_indices().numpy(), self.batch_size, self.start_batch, len(self),
            train=self.train, augment=self.augment, flip=self.augment and self.dataset.hflip,
            seed=self.seed, epoch=self.epoch, rank=self.rank)

    def _mean_std(self) -> tuple[Tensor, Tensor]:
        if self._stats is None:
            self._stats = tuple(torch.tensor(v, dtype=torch.float32, device=self.device)
                                for v in (self.dataset.mean, self.dataset.std))  # type: ignore[assignment]
        return self._stats  # type: ignore[return-value]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        cuda = self.device.type == "cuda"
        options: dict[str, Any] = {}
        if self.workers > 0:
            options = {"prefetch_factor": self.data.settings.prefetch,
                       "worker_init_fn": functools.partial(_worker_init, cpus=self.worker_cpus)}
        # batch_size=None: each item already is a batch, built by one worker. Workers
        # are started per epoch (not persistent) because each epoch's order is baked
        # into the dataset they receive.
        batches = DataLoader(self._epoch_files(), batch_size=None, shuffle=False,
                             num_workers=self.workers, pin_memory=cuda, **options)
        mean, std = self._mean_std()
        for x, y, bad in batches:
            self._report(bad)
            x = x.to(self.device, non_blocking=cuda)
            y = y.to(self.device, non_blocking=cuda)
            x = normalize(x, mean, std)
            if self.resolution is not None:
                x = resize(x, self.resolution)
            yield x, y

    def _report(self, bad: list[tuple[str, str]]) -> None:
        for path, err in bad:
            if path not in self._reported:
                self._reported.add(path)
                warnings.warn(f"{path}: unreadable image, replaced by the next file in the "
                              f"epoch order ({err})", DataWarning, stacklevel=3)


def _worker_init(worker_id: int, cpus: set[int] | None = None) -> None:
    # One decode thread per worker: the parallelism is the workers themselves, and
    # oversubscribed intra-op threads only contend with the training process.
    del worker_id
    torch.set_num_threads(1)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
