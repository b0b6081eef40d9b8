"""Mixed-precision convolutions and the 8 PC-DARTS candidate operations built from them.

`QConv` is the one quantized layer: its input activations go through the HWGQ
quantizer (which is also the ReLU) and its weights through the uniform weight
quantizer. Given several bit widths it holds two softmax mixtures, ``gamma_wt``
and ``gamma_act``, and computes ``conv(sum_i q_i Qa_i(x), sum_j p_j Qw_j(W))``:
by linearity of the convolution that is the mixture of the single-precision
convolutions' inputs and weights at the cost of one convolution (the EdMIPS
"composite" form). Given one bit width per side it is a plain QAT layer.

Every conv here is preceded by its own activation quantizer, so the ops differ
from float DARTS in one place: a ReLU (the quantizer) also sits between a
depthwise conv and its pointwise conv, with a BatchNorm after the depthwise
conv so the quantizer sees the unit-variance input HWGQ assumes. An integer
accelerator needs every conv input quantized, and this keeps the structure
identical at every bit width, 32 (float) included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantizers import (
    FLOAT_BITS,
    check_bits,
    mixed_quantize_act,
    quantize_act,
    quantize_weight,
)

__all__ = [
    "OPS",
    "PRIMITIVES",
    "ConvBN",
    "FactorizedReduce",
    "QConv",
    "Zero",
    "channel_shuffle",
    "make_op",
]

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

Bits = Sequence[int]


class QConv(nn.Module):
    """A conv with fake-quantized input activations and weights, mixing bit widths by softmax.

    quantize_input: False for the stem, whose input is the (already 8-bit) image;
        its ``a_bits`` then only enter the BitOps count.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, *, w_bits: Bits = (FLOAT_BITS,),
                 a_bits: Bits = (FLOAT_BITS,), quantize_input: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=bias)
        self.quantize_input = quantize_input
        self.set_bits(w_bits, a_bits)

    def set_bits(self, w_bits: Bits, a_bits: Bits) -> None:
        """Choose the candidate bit widths; several on a side make that side a searched mixture."""
        self.w_bits = tuple(check_bits(int(b), "weight bit width") for b in w_bits)
        self.a_bits = tuple(check_bits(int(b), "activation bit width") for b in a_bits)
        if not self.w_bits or not self.a_bits:
            raise ValueError("a QConv needs at least one weight and one activation bit width")
        # zeros: every bit width starts equally likely, as alphas do in DARTS
        self.gamma_wt = nn.Parameter(torch.zeros(len(self.w_bits))) if len(self.w_bits) > 1 else None
        self.gamma_act = nn.Parameter(torch.zeros(len(self.a_bits))) if len(self.a_bits) > 1 else None

    @staticmethod
    def _probs(gamma: Tensor | None, ref: Tensor) -> Tensor:
        if gamma is None:
            return torch.ones(1, device=ref.device)
        return F.softmax(gamma, dim=0)

    def w_probs(self) -> Tensor:
        return self._probs(self.gamma_wt, self.conv.weight)

    def a_probs(self) -> Tensor:
        return self._probs(self.gamma_act, self.conv.weight)

    def expected_bits(self) -> tuple[Tensor, Tensor]:
        """(E[weight bits], E[activation bits]) under the gamma softmaxes (differentiable)."""
        dev = self.conv.weight.device
        wb = torch.tensor(self.w_bits, dtype=torch.float32, device=dev)
        ab = torch.tensor(self.a_bits, dtype=torch.float32, device=dev)
        return (self.w_probs() * wb).sum(), (self.a_probs() * ab).sum()

    def chosen_bits(self) -> tuple[int, int]:
        """The argmax bit widths (weights, activations): what derivation keeps."""
        w = self.w_bits[int(self.w_probs().argmax())]
        a = self.a_bits[int(self.a_probs().argmax())]
        return w, a

    def quantized_input(self, x: Tensor) -> Tensor:
        if not self.quantize_input:
            return x
        if len(self.a_bits) == 1:
            return quantize_act(x, self.a_bits[0])
        return mixed_quantize_act(x, self.a_probs(), self.a_bits)

    def quantized_weight(self) -> Tensor:
        w = self.conv.weight
        if len(self.w_bits) == 1:
            return quantize_weight(w, self.w_bits[0])
        probs = self.w_probs()
        return sum(p * quantize_weight(w, b) for p, b in zip(probs, self.w_bits, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        return F.conv2d(self.quantized_input(x), self.quantized_weight(), c.bias, c.stride,
                        c.padding, c.dilation, c.groups)

    def extra_repr(self) -> str:
        return f"w_bits={self.w_bits}, a_bits={self.a_bits}, quantize_input={self.quantize_input}"


class ConvBN(nn.Module):
    """QConv then BatchNorm: the unit every candidate op is made of."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, *, affine: bool = True,
                 bits: tuple[Bits, Bits] = ((FLOAT_BITS,), (FLOAT_BITS,)),
                 quantize_input: bool = True) -> None:
        super().__init__()
        self.qconv = QConv(cin, cout, kernel, stride, padding, dilation, groups, w_bits=bits[0],
                           a_bits=bits[1], quantize_input=quantize_input)
        self.bn = nn.BatchNorm2d(cout, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.qconv(x))


class FactorizedReduce(nn.Module):
    """Halve H and W with two offset 1x1 stride-2 convs, concatenated (DARTS)."""

    def __init__(self, cin: int, cout: int, *, affine: bool = True,
                 bits: tuple[Bits, Bits] = ((FLOAT_BITS,), (FLOAT_BITS,))) -> None:
        super().__init__()
        if cout % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {cout}")
        self.conv_1 = QConv(cin, cout // 2, 1, 2, w_bits=bits[0], a_bits=bits[1])
        self.conv_2 = QConv(cin, cout // 2, 1, 2, w_bits=bits[0], a_bits=bits[1])
        self.bn = nn.BatchNorm2d(cout, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def _sep(C: int, k: int, stride: int, affine: bool, bits: tuple[Bits, Bits]) -> nn.Module:
    p = k // 2
    return nn.Sequential(
        ConvBN(C, C, k, stride, p, groups=C, affine=affine, bits=bits),
        ConvBN(C, C, 1, affine=affine, bits=bits),
        ConvBN(C, C, k, 1, p, groups=C, affine=affine, bits=bits),
        ConvBN(C, C, 1, affine=affine, bits=bits),
    )


def _dil(C: int, k: int, stride: int, affine: bool, bits: tuple[Bits, Bits]) -> nn.Module:
    return nn.Sequential(
        ConvBN(C, C, k, stride, k - 1, dilation=2, groups=C, affine=affine, bits=bits),
        ConvBN(C, C, 1, affine=affine, bits=bits),
    )


OpBuilder = Callable[[int, int, bool, tuple[Bits, Bits]], nn.Module]

OPS: dict[str, OpBuilder] = {
    "none": lambda C, s, affine, bits: Zero(s),
    "max_pool_3x3": lambda C, s, affine, bits: nn.MaxPool2d(3, s, 1),
    "avg_pool_3x3": lambda C, s, affine, bits: nn.AvgPool2d(3, s, 1, count_include_pad=False),
    "skip_connect": lambda C, s, affine, bits: (
        nn.Identity() if s == 1 else FactorizedReduce(C, C, affine=affine, bits=bits)),
    "sep_conv_3x3": lambda C, s, affine, bits: _sep(C, 3, s, affine, bits),
    "sep_conv_5x5": lambda C, s, affine, bits: _sep(C, 5, s, affine, bits),
    "dil_conv_3x3": lambda C, s, affine, bits: _dil(C, 3, s, affine, bits),
    "dil_conv_5x5": lambda C, s, affine, bits: _dil(C, 5, s, affine, bits),
}


def make_op(name: str, C: int, stride: int, *, affine: bool,
            bits: tuple[Bits, Bits] = ((FLOAT_BITS,), (FLOAT_BITS,))) -> nn.Module:
    """Candidate op `name` on C channels (stride 2 in reduction cells)."""
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}; choose from {', '.join(PRIMITIVES)}")
    return OPS[name](C, stride, affine, bits)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave `groups` channel groups (PC-DARTS mixes the sampled and bypassed channels)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
