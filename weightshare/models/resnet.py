"""The elastic ResNet of SuperFedNAS (OFA ResNet family) for 32 px images.

Stem 3x3 conv -> 4 stages of up to `max(depth_choices)` bottleneck blocks ->
global pool -> classifier. Elastic: depth per stage, width multiplier per stage
({0.65, 0.8, 1.0} of the stage's output channels) and bottleneck expand ratio
per block ({0.2, 0.25, 0.35} of the output width). The kernel is fixed at 3, so
`kernels` in a SubnetConfig of this space are all 3.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import (
    ConvBNAct,
    ElasticBatchNorm2d,
    ElasticBottleneck,
    ElasticConv2d,
    ElasticLinear,
    NormContext,
    make_divisible,
)
from ..space import SearchSpace, SubnetConfig
from .base import Cost, StaticNet, SuperNet, register_supernet

__all__ = ["OFAResNet"]


def _out(size: int, stride: int) -> int:
    return -(-size // stride)


class OFAResNet(SuperNet):
    fixed_prefix_layers = 1  # stem
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        resolution: int = 32,
        resolution_choices: tuple[int, ...] = (),
        width_mult: float = 1.0,
        stem_width: int = 32,
        stage_widths: tuple[int, ...] = (64, 128, 256, 512),
        stage_strides: tuple[int, ...] = (1, 2, 2, 2),
        depth_choices: tuple[int, ...] = (1, 2, 3),
        expand_choices: tuple[float, ...] = (0.2, 0.25, 0.35),
        width_choices: tuple[float, ...] = (0.65, 0.8, 1.0),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(stage_widths) != len(stage_strides):
            raise ConfigError("stage_widths and stage_strides need one value per stage")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.stage_strides = tuple(stage_strides)
        self.dropout_rate = dropout
        self.space = SearchSpace(
            num_units=len(stage_widths),
            depth_choices=depth_choices,
            expand_choices=expand_choices,
            kernel_choices=(3,),
            width_choices=width_choices,
            resolution_choices=resolution_choices,
            default_resolution=resolution,
        )
        self.base_widths = [w * width_mult for w in stage_widths]
        self.stem_w = make_divisible(stem_width * width_mult, 8)
        max_w = [self.stage_channels(u, max(self.space.width_choices)) for u in range(len(stage_widths))]
        self.stem = ElasticConv2d(in_channels, self.stem_w, 3, 1)
        self.stem_bn = ElasticBatchNorm2d(self.stem_w)
        stages = []
        in_w = self.stem_w
        for u, out_w in enumerate(max_w):
            blocks = [
                ElasticBottleneck(in_w if i == 0 else out_w, out_w, self.space.expand_choices,
                                  self.stage_strides[u] if i == 0 else 1, downsample=i == 0)
                for i in range(self.space.max_depth)
            ]
            stages.append(nn.ModuleList(blocks))
            in_w = out_w
        self.stages = nn.ModuleList(stages)
        self.classifier = ElasticLinear(max_w[-1], num_classes)
        self._finish_init()

    def stage_channels(self, stage: int, width: float) -> int:
        return make_divisible(self.base_widths[stage] * width, 8)

    def _forward(self, x: Tensor, subnet: SubnetConfig, dropout: float,
                 norm: NormContext) -> Tensor:
        x = torch.relu(self.stem_bn(self.stem(x), norm))
        for unit, i, expand, _ in subnet.unit_blocks():
            x = self.stages[unit][i](x, self.stage_channels(unit, subnet.widths[unit]), expand, norm)
        x = x.mean(dim=(2, 3))
        if dropout > 0:
            x = nn.functional.dropout(x, dropout, self.training)
        return self.classifier(x)

    def _extract(self, subnet: SubnetConfig, norm: NormContext) -> StaticNet:
        layers: list[nn.Module] = [
            ConvBNAct(self.stem.extract(self.in_channels), self.stem_bn.extract(self.stem_w, norm),
                      "relu")
        ]
        in_w = self.stem_w
        for unit, i, expand, _ in subnet.unit_blocks():
            out_w = self.stage_channels(unit, subnet.widths[unit])
            layers.append(self.stages[unit][i].extract(in_w, out_w, expand, norm))
            in_w = out_w
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(self.dropout_rate),
                             self.classifier.extract(in_w))
        return StaticNet(nn.Sequential(*layers), head, subnet)

    def _cost(self, subnet: SubnetConfig, resolution: int) -> Cost:
        size = resolution
        macs = size * size * self.in_channels * self.stem_w * 9
        params = self.in_channels * self.stem_w * 9 + 2 * self.stem_w
        c = self.stem_w
        for unit, i, expand, _ in subnet.unit_blocks():
            o = self.stage_channels(unit, subnet.widths[unit])
            m = ElasticBottleneck.mid_channels(o, expand)
            out = _out(size, self.stage_strides[unit]) if i == 0 else size
            macs += size * size * c * m + out * out * (9 * m * m + m * o)
            params += c * m + 9 * m * m + m * o + 4 * m + 2 * o
            if i == 0:  # 1x1 conv shortcut
                macs += out * out * c * o
                params += c * o + 2 * o
            size, c = out, o
        macs += c * self.num_classes
        params += c * self.num_classes + self.num_classes
        return Cost(int(macs), int(params))


register_supernet(
    "ofa_resnet_small",
    {},
    "Elastic ResNet of SuperFedNAS for 32 px images: 4 stages, depth {1,2,3}, "
    "width {0.65,0.8,1.0}, bottleneck expand {0.2,0.25,0.35}",
)(OFAResNet)
