"""Image transforms in plain torch (no torchvision).

Batch transforms (``normalize``, ``random_crop``, ``random_hflip``, ``resize``)
work on whole (B, C, H, W) batches on any device; the in-memory `Loader` uses
them. Per-image geometry for decoded files (``random_resized_crop_box``,
``center_crop_box``, ``crop_resize``) is what the streaming loader's workers run:
a box is chosen in the source image's own pixels and resampled once to the
output size, so the crop-then-resize of RandomResizedCrop and the
resize-then-centre-crop of evaluation each cost a single antialiased resample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "Box",
    "center_crop_box",
    "crop_resize",
    "normalize",
    "random_crop",
    "random_hflip",
    "random_resized_crop_box",
    "resize",
]

Box = tuple[int, int, int, int]  # (top, left, height, width) in source pixels


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
        raise ConfigError(f"padding must be >= 0, got {padding}")
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


def random_resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Box:
    """Inception-style RandomResizedCrop box for a ``height`` x ``width`` image.

    Up to ``attempts`` times, draw an area fraction uniformly from ``scale`` and
    an aspect ratio log-uniformly from ``ratio``; the first box that fits is
    placed uniformly at random. If none fits, fall back to the largest centred
    box whose aspect ratio is clamped into ``ratio`` (the whole image for
    ordinary photos). The same algorithm as the reference ImageNet recipes.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, crop_fraction: float = 0.875) -> Box:
    """The box that "resize the shorter side to S / crop_fraction, take the centre S x S"
    cuts out of a ``height`` x ``width`` image, in its own pixels: a centred square of
    side ``crop_fraction * min(height, width)``."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ConfigError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    side = max(1, round(min(height, width) * crop_fraction))
    return (height - side) // 2, (width - side) // 2, side, side


def crop_resize(image: Tensor, box: Box, size: int) -> Tensor:
    """Cut ``box`` out of a uint8 (H, W, C) image and resample it to uint8 (C, size, size).

    Bilinear with antialiasing (as PIL and torchvision's tensor path), straight
    on uint8: torch has a vectorised uint8 kernel for channels-last input that
    is ~5x faster than converting to float, and it rounds like PIL does.
    """
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise TypeError(f"crop_resize expects uint8 (H, W, C), got {image.dtype} "
                        f"{tuple(image.shape)}")
    top, left, h, w = box
    if h < 1 or w < 1 or top < 0 or left < 0 or top + h > image.shape[0] \
            or left + w > image.shape[1]:
        raise ConfigError(f"box {box} outside a {tuple(image.shape[:2])} image")
    # (1, C, h, w) as a channels-last view of the HWC pixels: no copy before the kernel.
    crop = image[top : top + h, left : left + w].permute(2, 0, 1).unsqueeze(0)
    if (h, w) == (size, size):
        return crop[0].contiguous()
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0].contiguous()
