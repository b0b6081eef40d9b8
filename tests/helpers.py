"""Test helpers: SuperNets with non-trivial BN statistics and kernel transforms."""

from __future__ import annotations

import torch

import weightshare as ws
from weightshare.nn import ElasticBatchNorm2d, ElasticDepthwiseConv2d

# The ImageNet layout is real but heavy on CPU; tests run it at a reduced input size.
TEST_KWARGS = {"ofa_mbv3": {"resolution": 64}}


def randomize(net: ws.SuperNet, seed: int = 0) -> ws.SuperNet:
    """Give BN buffers/affines and kernel transforms random values, so slicing bugs show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ElasticBatchNorm2d):
                m.running_mean.copy_(torch.randn(m.max_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.max_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.max_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.max_features, generator=g) * 0.1)
            elif isinstance(m, ElasticDepthwiseConv2d):
                for p in m.transforms.values():
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def converted_net(seed: int = 0) -> ws.SuperNet:
    """The 'converted' SuperNet of a MobileNetV3-style test model (SE, elastic kernels 3/5)."""
    from convert_models import MobileNet, trained_like
    from torch import nn

    torch.manual_seed(seed)
    model = trained_like(MobileNet(se=True, k=5, act=nn.Hardswish), seed)
    net = ws.convert(model, torch.randn(2, 1, 28, 28), width=(0.5, 0.75, 1.0), kernel=(3, 5))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-identity kernel transforms, so kernel slicing bugs show
        for m in net.modules():
            if isinstance(m, ws.convert.supernet.ElasticConv):
                for p in m.transforms.values():
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def build(name: str, seed: int = 0) -> ws.SuperNet:
    if name == "converted":  # made from a model by weightshare.convert, not from defaults
        return randomize(converted_net(seed), seed)
    torch.manual_seed(seed)
    return randomize(ws.create_supernet(name, **TEST_KWARGS.get(name, {})), seed)
