"""Measured costs of real modules: counted MACs/params and wall-clock latency.

The analytic `SuperNet.cost(subnet)` is what search calls 100k times; the counts
here run the actual extracted model and are what the analytic numbers are
tested against. `measure_latency` and `Latency` live in `weightshare.timing` (the one
timing loop and its statistics) and are re-exported here for existing callers.
"""

from __future__ import annotations

import torch
from torch import nn

from .timing import Latency, measure_latency

__all__ = ["count_macs_params", "measure_latency", "Latency"]


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs of every Conv2d / Linear in one forward of a batch of 1, and all parameters."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp, out) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs, sum(p.numel() for p in model.parameters())
