"""Bring your own model: turn a trained CNN into an elastic SuperNet.

    net = weightshare.convert(model, torch.randn(1, 1, 28, 28), width=(0.5, 0.75, 1.0))
    net(x, net.space.largest())   # == model(x) in eval mode
    save_checkpoint("mine.pt", net)  # rebuilds without the user's class

The model is traced with torch.fx (`trace`), its elastic parts found by
pattern (`patterns`: inner widths of residual / inverted-residual / plain conv
blocks, skippable residual blocks for depth, depthwise kernels), described as
plain data (`structure`) and run by `ConvertedSuperNet` (`supernet`), a
SuperNet like the built-in ones: forward(x, subnet), space, extract, cost,
reorder_channels, per-SubNet BN statistics, ONNX export, checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .patterns import analyze, channels
from .structure import Structure
from .supernet import ConvertedSuperNet
from .trace import ConvertError, trace_ops

__all__ = ["convert", "ConvertError", "ConvertedSuperNet", "Structure", "channels",
           "max_output_diff"]


@torch.no_grad()
def max_output_diff(net: ConvertedSuperNet, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |original - largest SubNet| over `x`, both in eval mode."""
    net_mode, model_mode = net.training, model.training
    net.eval()
    model.eval()
    try:
        return float((net(x, net.space.largest()) - model(x)).abs().max())
    finally:
        net.train(net_mode)
        model.train(model_mode)


def convert(model: nn.Module, example_input: torch.Tensor, *,
            width: tuple[float, ...] = (0.5, 0.75, 1.0), depth: bool | tuple[int, ...] = True,
            kernel: tuple[int, ...] | None = None, atol: float = 1e-5) -> ConvertedSuperNet:
    """Make `model` an elastic SuperNet whose largest SubNet is `model` (checked to `atol`).

    width: ratios of each inner width to offer (must include 1.0); depth: make
    skippable residual blocks elastic (True, False, or the depth choices);
    kernel: elastic depthwise kernel sizes (e.g. (3, 5)), None to keep kernels.
    Raises ConvertError naming the layer when the model has parts it cannot handle.
    """
    from ..models import create_supernet

    if not isinstance(model, nn.Module):
        raise ConvertError(f"convert() needs a torch.nn.Module, got {type(model).__name__}")
    x = example_input.detach().float().cpu()
    if x.shape[-1] != x.shape[-2]:
        raise ConvertError(f"example_input must be square images, got {tuple(x.shape)}")
    model = model.cpu()
    ops = trace_ops(model, x)
    structure = analyze(ops, in_channels=x.shape[1], resolution=x.shape[-1],
                        ratios=tuple(width), depth=depth if isinstance(depth, bool) else tuple(depth),
                        kernels=tuple(kernel) if kernel else None)
    net = create_supernet("converted", structure=_plain(structure.to_dict()))
    _copy_weights(net, ops)
    diff = max_output_diff(net, model, x)
    if not diff <= atol:
        raise ConvertError(f"the converted network's largest SubNet differs from the model by "
                           f"{diff:.3g} (> {atol:g}); please report this model")
    net.conversion_maxdiff = diff
    return net


def _plain(value):
    """JSON-safe copy (tuples -> lists), the form checkpoints store."""
    import json

    return json.loads(json.dumps(value))


@torch.no_grad()
def _copy_weights(net: ConvertedSuperNet, ops) -> None:
    for i, op in enumerate(ops):
        if op.module is None or op.kind not in ("conv", "bn", "linear"):
            continue
        layer = net.layers[str(i)]
        layer.weight.copy_(op.module.weight)
        if getattr(op.module, "bias", None) is not None:
            layer.bias.copy_(op.module.bias)
        if op.kind == "bn":
            layer.running_mean.copy_(op.module.running_mean)
            layer.running_var.copy_(op.module.running_var)


class _CallableModule(type(torch)):
    """`weightshare.convert(model, x)` calls `convert`: the package name is the function's."""

    def __call__(self, *args, **kwargs) -> ConvertedSuperNet:
        return convert(*args, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
