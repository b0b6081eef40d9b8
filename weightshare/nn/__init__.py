"""Elastic building blocks: each forward takes the SubNet's choice as an argument."""

from .blocks import (
    ConvBNAct,
    ElasticBottleneck,
    ElasticMBConv,
    ElasticSE,
    StaticBottleneck,
    StaticMBConv,
    StaticSE,
)
from .layers import (
    ACTIVATIONS,
    DEFAULT_NORM,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticLinear,
    NormContext,
    StatsRecorder,
    make_divisible,
)

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_NORM",
    "ConvBNAct",
    "ElasticBatchNorm2d",
    "ElasticBottleneck",
    "ElasticConv2d",
    "ElasticDepthwiseConv2d",
    "ElasticLinear",
    "ElasticMBConv",
    "ElasticSE",
    "NormContext",
    "StaticBottleneck",
    "StaticMBConv",
    "StaticSE",
    "StatsRecorder",
    "make_divisible",
]
