"""Ordinary torch CNNs (no weightshare layers) that the conversion tests turn into SuperNets.

Also imported by the subprocess test as `MODULE:CALLABLE` for `weightshare convert`.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn_act(c: int, act: type[nn.Module] = nn.ReLU) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), act()]


class PlainStack(nn.Module):
    """conv-bn-relu x4 with a max pool, global pool, hidden linear, classifier."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), *_bn_act(16),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), *_bn_act(32),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), *_bn_act(64),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2),
                                nn.Linear(32, classes))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)))


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.short is None else self.short(x)))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), *_bn_act(mid),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), *_bn_act(mid),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.body(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Basic-block ResNet: stem, stages of (blocks) with widths, global pool, linear."""

    def __init__(self, widths=(16, 32, 64), blocks=(2, 2, 2), classes: int = 10,
                 in_ch: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for s, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(n):
                layers.append(Basic(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class BottleneckResNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), *_bn_act(32),
                                  nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(
            Bottleneck(32, 16, 64), Bottleneck(64, 16, 64),
            Bottleneck(64, 32, 128, 2), Bottleneck(128, 32, 128),
        )
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class SE(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, mid, 1)
        self.fc2 = nn.Conv2d(mid, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int = 1, k: int = 3,
                 se: bool = False, act: type[nn.Module] = nn.ReLU6) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), act()]
        if se:
            layers.append(SE(hidden, max(8, hidden // 4)))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNet(nn.Module):
    """MobileNetV2/V3-style: stem, stages of inverted residuals (optional SE), 1x1, pool, fc."""

    def __init__(self, stages=((16, 2, 1), (24, 3, 2), (32, 3, 2)), expand: int = 4,
                 se: bool = False, k: int = 3, classes: int = 10, in_ch: int = 1,
                 stem: int = 16, last: int = 128, act: type[nn.Module] = nn.ReLU6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem), act())
        blocks, cin = [], stem
        for c, n, s in stages:
            for b in range(n):
                blocks.append(InvertedResidual(cin, c, expand, s if b == 0 else 1, k, se, act))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), act())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(last, classes))

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random but non-trivial BN statistics and affine weights, so equality checks bite."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def resnet_small() -> nn.Module:
    """For `weightshare convert tests.convert_models:resnet_small` (1 x 28 x 28 input)."""
    return trained_like(ResNet())


def resnet_tiny() -> nn.Module:
    """A fast ResNet for training tests (28 x 28 x 1 input, 10 classes)."""
    return trained_like(ResNet(widths=(8, 16, 16)))
