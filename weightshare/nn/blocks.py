"""Elastic blocks (MBConv with squeeze-excite, ResNet bottleneck) and their static twins.

An elastic block's forward takes its choice (expand ratio, kernel, width) as
arguments; `extract` returns the static twin holding copied weights, which runs
the same function as an ordinary torch module (and exports to ONNX).
`reorder_channels_` sorts hidden channels by importance (OFA): the largest
choice computes the same function before and after.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .layers import (
    DEFAULT_NORM,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    NormContext,
    act_fn,
    make_divisible,
)

__all__ = [
    "ElasticSE",
    "ElasticMBConv",
    "ElasticBottleneck",
    "StaticSE",
    "StaticMBConv",
    "StaticBottleneck",
    "ConvBNAct",
    "Permuter",
    "permute_tensor_",
]


def _importance(weight: Tensor, dim: int) -> Tensor:
    """L1 norm of each slice along `dim`, the channel-importance score of OFA."""
    dims = [d for d in range(weight.dim()) if d != dim]
    return weight.detach().abs().sum(dim=dims)


def _sort_perm(importance: Tensor) -> Tensor:
    # stable, so equal importances keep their order (deterministic reordering)
    return torch.sort(importance, descending=True, stable=True).indices


Permuter = Callable[[Tensor, int, Tensor], None]


@torch.no_grad()
def permute_tensor_(t: Tensor, dim: int, perm: Tensor) -> None:
    """Reorder `t` along `dim` in place (the default way reordering touches a tensor)."""
    t.copy_(t.index_select(dim, perm))


# ------------------------------------------------------------------ static twins
class ConvBNAct(nn.Sequential):
    """conv -> optional BN -> activation, as an ordinary torch module."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None, act: str) -> None:
        layers = [conv] + ([bn] if bn is not None else [])
        if act != "identity":
            layers.append(_ACT_MODULES[act]())
        super().__init__(*layers)


_ACT_MODULES = {"relu": nn.ReLU, "hswish": nn.Hardswish, "hsigmoid": nn.Hardsigmoid}


class StaticSE(nn.Module):
    def __init__(self, reduce: nn.Conv2d, expand: nn.Conv2d) -> None:
        super().__init__()
        self.reduce, self.expand = reduce, expand
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(y))))


class StaticMBConv(nn.Module):
    def __init__(self, expand: nn.Module | None, depthwise: nn.Module, se: nn.Module | None,
                 project: nn.Module, residual: bool) -> None:
        super().__init__()
        self.expand = expand if expand is not None else nn.Identity()
        self.depthwise = depthwise
        self.se = se if se is not None else nn.Identity()
        self.project = project
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        h = self.project(self.se(self.depthwise(self.expand(x))))
        return x + h if self.residual else h


class StaticBottleneck(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


# --------------------------------------------------------------------- elastic
class ElasticSE(nn.Module):
    """Squeeze-excite over the first C channels; its mid width follows C (OFA DynamicSE)."""

    def __init__(self, max_channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduction = reduction
        max_mid = self.mid_channels(max_channels)
        self.reduce = ElasticConv2d(max_channels, max_mid, 1, bias=True)
        self.expand = ElasticConv2d(max_mid, max_channels, 1, bias=True)

    def mid_channels(self, channels: int) -> int:
        return make_divisible(channels // self.reduction, 8)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        y = x.mean(dim=(2, 3), keepdim=True)
        y = torch.relu(self.reduce(y, self.mid_channels(c)))
        return x * act_fn("hsigmoid")(self.expand(y, c))

    def extract(self, channels: int) -> StaticSE:
        mid = self.mid_channels(channels)
        return StaticSE(self.reduce.extract(channels, mid), self.expand.extract(mid, channels))

    @torch.no_grad()
    def permute_channels_(self, perm: Tensor, apply: Permuter = permute_tensor_) -> None:
        """Follow a permutation of the block's hidden channels, then sort its own mid channels."""
        apply(self.reduce.weight, 1, perm)
        apply(self.expand.weight, 0, perm)
        apply(self.expand.bias, 0, perm)
        mid = _sort_perm(_importance(self.expand.weight, 1))
        apply(self.reduce.weight, 0, mid)
        apply(self.reduce.bias, 0, mid)
        apply(self.expand.weight, 1, mid)


class ElasticMBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise k x k -> [SE] -> 1x1 project.

    Elastic expand ratio (hidden width = make_divisible(in * expand)) and kernel.
    Input and output widths are fixed (OFA MobileNetV3); with expand choices of
    just (1,) the block has no expand conv, as MobileNetV3's first block.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_choices: tuple[float, ...],
                 kernel_choices: tuple[int, ...], stride: int = 1, act: str = "relu",
                 use_se: bool = False, kernel_transform: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.act, self.use_se = stride, act, use_se
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.has_expand = max(expand_choices) != 1
        hidden_max = self.hidden_channels(max(expand_choices))
        if self.has_expand:
            self.expand_conv = ElasticConv2d(in_channels, hidden_max, 1)
            self.expand_bn = ElasticBatchNorm2d(hidden_max)
        self.dw = ElasticDepthwiseConv2d(hidden_max, self.kernel_choices, stride,
                                         transform=kernel_transform)
        self.dw_bn = ElasticBatchNorm2d(hidden_max)
        self.se = ElasticSE(hidden_max) if use_se else None
        self.project = ElasticConv2d(hidden_max, out_channels, 1)
        self.project_bn = ElasticBatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def hidden_channels(self, expand: float) -> int:
        if not self.has_expand:
            return self.in_channels
        return make_divisible(round(self.in_channels * expand), 8)

    def forward(self, x: Tensor, expand: float, kernel: int,
                norm: NormContext = DEFAULT_NORM) -> Tensor:
        act = act_fn(self.act)
        h = x
        if self.has_expand:
            h = act(self.expand_bn(self.expand_conv(x, self.hidden_channels(expand)), norm))
        h = act(self.dw_bn(self.dw(h, kernel), norm))
        if self.se is not None:
            h = self.se(h)
        h = self.project_bn(self.project(h), norm)
        return x + h if self.residual else h

    def extract(self, expand: float, kernel: int, norm: NormContext = DEFAULT_NORM) -> StaticMBConv:
        hidden = self.hidden_channels(expand)
        expand_part = None
        if self.has_expand:
            expand_part = ConvBNAct(self.expand_conv.extract(self.in_channels, hidden),
                                    self.expand_bn.extract(hidden, norm), self.act)
        dw = ConvBNAct(self.dw.extract(hidden, kernel), self.dw_bn.extract(hidden, norm), self.act)
        se = self.se.extract(hidden) if self.se is not None else None
        project = ConvBNAct(self.project.extract(hidden, self.out_channels),
                            self.project_bn.extract(self.out_channels, norm), "identity")
        return StaticMBConv(expand_part, dw, se, project, self.residual)

    @torch.no_grad()
    def reorder_channels_(self, apply: Permuter = permute_tensor_) -> None:
        """Sort hidden channels by the L1 norm of the project conv's weights (descending).

        `apply(tensor, dim, perm)` performs each permutation, so a trainer can
        permute optimizer state (momentum) along with the weights.
        """
        if not self.has_expand:
            return  # hidden width is the input width: not elastic, nothing to sort
        perm = _sort_perm(_importance(self.project.weight, 1))
        apply(self.project.weight, 1, perm)
        if self.se is not None:
            self.se.permute_channels_(perm, apply)
        apply(self.dw.weight, 0, perm)
        _permute_bn(self.dw_bn, perm, apply)
        apply(self.expand_conv.weight, 0, perm)
        _permute_bn(self.expand_bn, perm, apply)


class ElasticBottleneck(nn.Module):
    """ResNet bottleneck with elastic output width (argument) and expand ratio.

    mid = make_divisible(round(out * expand)), as OFA's ResNets. The first block
    of a stage has a 1x1 conv shortcut (widths are elastic, so in != out).
    """

    def __init__(self, max_in: int, max_out: int, expand_choices: tuple[float, ...],
                 stride: int = 1, downsample: bool = False) -> None:
        super().__init__()
        self.max_in, self.max_out, self.stride = max_in, max_out, stride
        mid_max = self.mid_channels(max_out, max(expand_choices))
        self.conv1 = ElasticConv2d(max_in, mid_max, 1)
        self.bn1 = ElasticBatchNorm2d(mid_max)
        self.conv2 = ElasticConv2d(mid_max, mid_max, 3, stride)
        self.bn2 = ElasticBatchNorm2d(mid_max)
        self.conv3 = ElasticConv2d(mid_max, max_out, 1)
        self.bn3 = ElasticBatchNorm2d(max_out)
        self.downsample = downsample
        if downsample:
            self.ds_conv = ElasticConv2d(max_in, max_out, 1, stride)
            self.ds_bn = ElasticBatchNorm2d(max_out)

    @staticmethod
    def mid_channels(out_channels: int, expand: float) -> int:
        return make_divisible(round(out_channels * expand), 8)

    def forward(self, x: Tensor, out_channels: int, expand: float,
                norm: NormContext = DEFAULT_NORM) -> Tensor:
        mid = self.mid_channels(out_channels, expand)
        h = torch.relu(self.bn1(self.conv1(x, mid), norm))
        h = torch.relu(self.bn2(self.conv2(h, mid), norm))
        h = self.bn3(self.conv3(h, out_channels), norm)
        s = self.ds_bn(self.ds_conv(x, out_channels), norm) if self.downsample else x
        return torch.relu(h + s)

    def extract(self, in_channels: int, out_channels: int, expand: float,
                norm: NormContext = DEFAULT_NORM) -> StaticBottleneck:
        mid = self.mid_channels(out_channels, expand)
        body = nn.Sequential(
            ConvBNAct(self.conv1.extract(in_channels, mid), self.bn1.extract(mid, norm), "relu"),
            ConvBNAct(self.conv2.extract(mid, mid), self.bn2.extract(mid, norm), "relu"),
            ConvBNAct(self.conv3.extract(mid, out_channels),
                      self.bn3.extract(out_channels, norm), "identity"),
        )
        shortcut = None
        if self.downsample:
            shortcut = ConvBNAct(self.ds_conv.extract(in_channels, out_channels),
                                 self.ds_bn.extract(out_channels, norm), "identity")
        return StaticBottleneck(body, shortcut)

    @torch.no_grad()
    def reorder_channels_(self, apply: Permuter = permute_tensor_) -> None:
        """Sort both mid layers by importance: conv2's outputs by conv3, conv1's by conv2."""
        perm2 = _sort_perm(_importance(self.conv3.weight, 1))
        apply(self.conv3.weight, 1, perm2)
        apply(self.conv2.weight, 0, perm2)
        _permute_bn(self.bn2, perm2, apply)
        perm1 = _sort_perm(_importance(self.conv2.weight, 1))
        apply(self.conv2.weight, 1, perm1)
        apply(self.conv1.weight, 0, perm1)
        _permute_bn(self.bn1, perm1, apply)


def _permute_bn(bn: ElasticBatchNorm2d, perm: Tensor, apply: Permuter) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        apply(t, 0, perm)
