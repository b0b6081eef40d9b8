"""Generated data for fast tests: a random smooth template per class plus noise."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..catalog import register_dataset
from ..containers import ImageSet, RawDataset
from ..seeds import TAG_SYNTHETIC, mix

__all__: list[str] = []


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
        raise ConfigError(
            "synthetic needs n_train, n_test, image_size, in_channels >= 1 and num_classes >= 2"
        )
    gen = torch.Generator().manual_seed(mix(seed, TAG_SYNTHETIC))
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
