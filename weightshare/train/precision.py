"""How a training step runs on its device: memory format and mixed precision.

Measured on this project's 2-core AVX-512 CPU: oneDNN's depthwise-convolution
backward is several times slower on NCHW tensors than on channels_last ones
(1.7x on a whole sandwich step, 2.2x on the largest alone, for 1-channel
batches made contiguous NCHW). The in-memory loader's 1-channel batches already
have strides oneDNN reads as channels_last, so on Fashion-MNIST the old loop
was NHWC by accident; `channels_last=True` makes it so for every data set
(3-channel CIFAR or ImageNet batches are NCHW otherwise). bf16 autocast makes
a step *slower* there (oneDNN has no fast bf16 depthwise backward without AMX),
so `amp="auto"` stays fp32 on CPU and picks bf16 on CUDA devices that support
it, else fp16 with a gradient scaler. Both settings change only how the
arithmetic is laid out, not what is computed: forward and gradients agree with
the NCHW fp32 path within float tolerance (tests/test_train_speed.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["AMP_MODES", "Precision", "resolve_precision", "to_memory_format"]

AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """What `resolve_precision` decided for one device; pass it to the step."""

    device_type: str
    dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool

    @property
    def needs_scaler(self) -> bool:
        return self.dtype is torch.float16

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def input(self, x: Tensor) -> Tensor:
        """A batch in the step's memory format (4-D images only)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None


def resolve_precision(device: torch.device, amp: str = "auto",
                      channels_last: bool = True) -> Precision:
    """The autocast dtype and memory format for `device` (see the module docstring)."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp={amp!r}; choose from {list(AMP_MODES)}")
    kind = device.type
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if kind == "cuda" else "off"
    if amp == "fp16" and kind == "cpu":
        raise ConfigError("amp=fp16 needs a CUDA device; use amp=bf16 or amp=off on CPU")
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return Precision(kind, dtype, channels_last)


def to_memory_format(net: nn.Module, precision: Precision) -> nn.Module:
    """Lay out `net`'s 4-D weights as `precision` asks (in place; returns `net`)."""
    if precision.channels_last:
        net.to(memory_format=torch.channels_last)
    return net
