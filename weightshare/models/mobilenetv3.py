"""OFA's MobileNetV3 SuperNet: elastic depth per unit, expand ratio and kernel per block.

Layout (OFA): stem 3x3 conv -> fixed first MBConv (expand 1, k3) -> 5 units of up
to 4 MBConv blocks -> 1x1 final expand -> global pool -> 1x1 feature mix ->
classifier. `ofa_mbv3` is the 224 px ImageNet layout; `ofa_mbv3_small` keeps the
same units and choices with the stem and the last unit at stride 1, so 28 / 32 px
images end on a 4x4 map (the CIFAR trick of OFA's code): 13.5 M MACs for the
smallest SubNet and 59.4 M for the largest at 28 px.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import (
    ConvBNAct,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticLinear,
    ElasticMBConv,
    NormContext,
    make_divisible,
)
from ..space import SearchSpace, SubnetConfig
from .base import Cost, StaticNet, SuperNet, register_supernet

__all__ = ["OFAMobileNetV3"]

# Activation and squeeze-excite of OFA MobileNetV3's five units.
UNIT_ACTS = ("relu", "relu", "hswish", "hswish", "hswish")
UNIT_SE = (False, True, False, True, True)


def _out(size: int, stride: int) -> int:
    return -(-size // stride)  # 'same' padding: ceil(size / stride)


class OFAMobileNetV3(SuperNet):
    fixed_prefix_layers = 2  # stem, fixed first block
    fixed_suffix_layers = 1  # final expand conv
    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        resolution: int = 224,
        resolution_choices: tuple[int, ...] = (),
        width_mult: float = 1.0,
        stem_stride: int = 2,
        unit_strides: tuple[int, ...] = (2, 2, 2, 1, 2),
        unit_widths: tuple[int, ...] = (24, 40, 80, 112, 160),
        stem_width: int = 16,
        final_expand: int = 6,
        feature_dim: int = 1280,
        depth_choices: tuple[int, ...] = (2, 3, 4),
        expand_choices: tuple[float, ...] = (3, 4, 6),
        kernel_choices: tuple[int, ...] = (3, 5, 7),
        dropout: float = 0.1,
        kernel_transform: bool = True,
    ) -> None:
        super().__init__()
        if len(unit_strides) != len(unit_widths):
            raise ConfigError("unit_strides and unit_widths need one value per unit")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.stem_stride, self.unit_strides = stem_stride, tuple(unit_strides)
        self.dropout_rate = dropout
        self.space = SearchSpace(
            num_units=len(unit_widths),
            depth_choices=depth_choices,
            expand_choices=expand_choices,
            kernel_choices=kernel_choices,
            resolution_choices=resolution_choices,
            default_resolution=resolution,
        )
        stem_w = make_divisible(stem_width * width_mult, 8)
        widths = [make_divisible(w * width_mult, 8) for w in unit_widths]
        self.stem_w, self.widths = stem_w, widths
        self.final_w = widths[-1] * final_expand
        # OFA widens the feature-mix layer with the multiplier but never narrows it.
        self.feature_w = make_divisible(feature_dim * width_mult, 8) if width_mult > 1 else feature_dim
        self.acts = UNIT_ACTS[: len(widths)] if len(widths) <= 5 else ("hswish",) * len(widths)
        self.ses = UNIT_SE[: len(widths)] if len(widths) <= 5 else (True,) * len(widths)

        self.stem = ElasticConv2d(in_channels, stem_w, 3, stem_stride)
        self.stem_bn = ElasticBatchNorm2d(stem_w)
        self.first_block = ElasticMBConv(stem_w, stem_w, (1,), (3,), 1, "relu", False)
        units = []
        in_w = stem_w
        max_d = self.space.max_depth
        for u, out_w in enumerate(widths):
            blocks = []
            for i in range(max_d):
                stride = self.unit_strides[u] if i == 0 else 1
                blocks.append(ElasticMBConv(in_w if i == 0 else out_w, out_w,
                                            self.space.expand_choices, self.space.kernel_choices,
                                            stride, self.acts[u], self.ses[u],
                                            kernel_transform))
            in_w = out_w
            units.append(nn.ModuleList(blocks))
        self.units = nn.ModuleList(units)
        self.final_expand = ElasticConv2d(widths[-1], self.final_w, 1)
        self.final_bn = ElasticBatchNorm2d(self.final_w)
        self.feature_mix = ElasticConv2d(self.final_w, self.feature_w, 1)
        self.classifier = ElasticLinear(self.feature_w, num_classes)
        self._cost_cache: dict[tuple, tuple[int, int]] = {}
        self._finish_init()

    # ------------------------------------------------------------------ forward
    def _forward(self, x: Tensor, subnet: SubnetConfig, dropout: float,
                 norm: NormContext) -> Tensor:
        x = F.hardswish(self.stem_bn(self.stem(x), norm))
        x = self.first_block(x, 1, 3, norm)
        for unit, i, expand, kernel in subnet.unit_blocks():
            x = self.units[unit][i](x, expand, kernel, norm)
        x = F.hardswish(self.final_bn(self.final_expand(x), norm))
        x = x.mean(dim=(2, 3), keepdim=True)
        x = F.hardswish(self.feature_mix(x)).flatten(1)
        if dropout > 0:
            x = F.dropout(x, dropout, self.training)
        return self.classifier(x)

    # ---------------------------------------------------------------- extract
    def _extract(self, subnet: SubnetConfig, norm: NormContext) -> StaticNet:
        layers: list[nn.Module] = [
            ConvBNAct(self.stem.extract(self.in_channels), self.stem_bn.extract(self.stem_w, norm),
                      "hswish"),
            self.first_block.extract(1, 3, norm),
        ]
        for unit, i, expand, kernel in subnet.unit_blocks():
            layers.append(self.units[unit][i].extract(expand, kernel, norm))
        layers.append(ConvBNAct(self.final_expand.extract(self.widths[-1]),
                                self.final_bn.extract(self.final_w, norm), "hswish"))
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvBNAct(self.feature_mix.extract(self.final_w), None, "hswish"),
            nn.Flatten(1),
            nn.Dropout(self.dropout_rate),
            self.classifier.extract(self.feature_w),
        )
        return StaticNet(nn.Sequential(*layers), head, subnet)

    # -------------------------------------------------------------------- cost
    def _block_cost(self, unit: int, i: int, expand: float, kernel: int, size: int) -> tuple[int, int]:
        key = (unit, i, expand, kernel, size)
        hit = self._cost_cache.get(key)
        if hit is not None:
            return hit
        block = self.units[unit][i]
        out = _mbconv_cost(block, expand, kernel, size)
        self._cost_cache[key] = out
        return out

    def _cost(self, subnet: SubnetConfig, resolution: int) -> Cost:
        size = _out(resolution, self.stem_stride)
        macs = size * size * self.in_channels * self.stem_w * 9
        params = self.in_channels * self.stem_w * 9 + 2 * self.stem_w
        m, p = _mbconv_cost(self.first_block, 1, 3, size)
        macs, params = macs + m, params + p
        for unit, i, expand, kernel in subnet.unit_blocks():
            m, p = self._block_cost(unit, i, expand, kernel, size)
            macs, params = macs + m, params + p
            if i == 0:
                size = _out(size, self.unit_strides[unit])
        last, fw, fe = self.widths[-1], self.final_w, self.feature_w
        macs += size * size * last * fw + fw * fe + fe * self.num_classes
        params += last * fw + 2 * fw + fw * fe + fe * self.num_classes + self.num_classes
        return Cost(int(macs), int(params))


def _mbconv_cost(block: ElasticMBConv, expand: float, kernel: int, size: int) -> tuple[int, int]:
    """(MACs, params) of one MBConv at input side `size`: convs/linear MACs, all parameters."""
    c, o = block.in_channels, block.out_channels
    h = block.hidden_channels(expand)
    out = _out(size, block.stride)
    macs = params = 0
    if block.has_expand:
        macs += size * size * c * h
        params += c * h + 2 * h
    macs += out * out * h * kernel * kernel
    params += h * kernel * kernel + 2 * h
    if block.se is not None:
        mid = block.se.mid_channels(h)
        macs += 2 * h * mid
        params += 2 * h * mid + mid + h
    macs += out * out * h * o
    params += h * o + 2 * o
    return macs, params


register_supernet(
    "ofa_mbv3",
    {},
    "OFA MobileNetV3 for 224 px ImageNet: 5 units x up to 4 blocks, expand {3,4,6}, "
    "kernel {3,5,7}, depth {2,3,4}",
)(OFAMobileNetV3)

register_supernet(
    "ofa_mbv3_small",
    {
        "num_classes": 10,
        "in_channels": 1,
        "resolution": 28,
        "stem_stride": 1,
        "unit_strides": (2, 2, 2, 1, 1),
        "feature_dim": 512,
        "width_mult": 1.0,
    },
    "OFA MobileNetV3 space for 28/32 px images (Fashion-MNIST, CIFAR): same units and "
    "choices, stride-1 stem, the default",
)(OFAMobileNetV3)
