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

from ..registry import Registry
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
    "BitGammas",
    "QConv",
    "Zero",
    "channel_shuffle",
    "make_op",
    "share_gammas",
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


class BitGammas(nn.Module):
    """One (weight, activation) pair of bit-width logits, shared by every QConv of one op.

    The reference (QDARTS/model_search.py, `Network._initialize_gammas`) holds one
    ``gamma_weight`` / ``gamma_activ`` row per cell, edge and conv operation (plus one
    per cell for each preprocessing conv) and passes it to all of that op's convs, so a
    sep_conv's four convs always get the same bits; it initialises them as
    ``1e-3 * randn`` (as DARTS' alphas: near-uniform, ties broken).
    """

    def __init__(self, n_w: int, n_a: int, init_std: float = 1e-3) -> None:
        super().__init__()
        self.gamma_wt = nn.Parameter(init_std * torch.randn(n_w)) if n_w > 1 else None
        self.gamma_act = nn.Parameter(init_std * torch.randn(n_a)) if n_a > 1 else None


class QConv(nn.Module):
    """A conv with fake-quantized input activations and weights, mixing bit widths by softmax.

    quantize_input: False for the stem, whose input is the image itself;
        its ``a_bits`` then only enter the BitOps count.

    The mixture logits live in a `BitGammas`: its own (``self.gammas``, a submodule) or
    one shared with the other convs of its op (`share_gammas`), then held as a plain
    reference so the shared parameters are stored once, under the op that owns them.
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
        self.__dict__.pop("_shared", None)
        self.gammas = BitGammas(len(self.w_bits), len(self.a_bits))

    def use_gammas(self, shared: BitGammas) -> None:
        """Take this conv's bit mixture from `shared` (owned and registered elsewhere)."""
        if "gammas" in self._modules:
            del self._modules["gammas"]
        # a plain attribute, not a submodule: the parameters belong to the op that owns them
        self.__dict__["_shared"] = shared

    @property
    def bit_gammas(self) -> BitGammas:
        return self.__dict__.get("_shared") or self._modules["gammas"]

    @property
    def gamma_wt(self) -> nn.Parameter | None:
        return self.bit_gammas.gamma_wt

    @property
    def gamma_act(self) -> nn.Parameter | None:
        return self.bit_gammas.gamma_act

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

# in PRIMITIVES order (sort=False), so an error lists the ops as the search space does
OPS: Registry[OpBuilder] = Registry("operation", sort=False)
for _name, _builder in (
    ("none", lambda C, s, affine, bits: Zero(s)),
    ("max_pool_3x3", lambda C, s, affine, bits: nn.MaxPool2d(3, s, 1)),
    ("avg_pool_3x3", lambda C, s, affine, bits: nn.AvgPool2d(3, s, 1, count_include_pad=False)),
    ("skip_connect", lambda C, s, affine, bits: (
        nn.Identity() if s == 1 else FactorizedReduce(C, C, affine=affine, bits=bits))),
    ("sep_conv_3x3", lambda C, s, affine, bits: _sep(C, 3, s, affine, bits)),
    ("sep_conv_5x5", lambda C, s, affine, bits: _sep(C, 5, s, affine, bits)),
    ("dil_conv_3x3", lambda C, s, affine, bits: _dil(C, 3, s, affine, bits)),
    ("dil_conv_5x5", lambda C, s, affine, bits: _dil(C, 5, s, affine, bits)),
):
    OPS.add(_name, _builder)
assert tuple(OPS) == PRIMITIVES, "every primitive has exactly one builder"


def make_op(name: str, C: int, stride: int, *, affine: bool,
            bits: tuple[Bits, Bits] = ((FLOAT_BITS,), (FLOAT_BITS,))) -> nn.Module:
    """Candidate op `name` on C channels (stride 2 in reduction cells)."""
    return OPS.get(name)(C, stride, affine, bits)


def share_gammas(module: nn.Module) -> BitGammas | None:
    """One `BitGammas` for every QConv inside `module` (None if it has no searched conv).

    The caller registers the returned module (it owns the parameters); the QConvs then
    read their mixtures from it. All convs of `module` must search the same bit widths.
    """
    convs = [m for m in module.modules() if isinstance(m, QConv)]
    if not convs:
        return None
    w_bits, a_bits = convs[0].w_bits, convs[0].a_bits
    if any((c.w_bits, c.a_bits) != (w_bits, a_bits) for c in convs):
        raise ValueError("share_gammas: the convs of one op must search the same bit widths")
    if len(w_bits) == 1 and len(a_bits) == 1:
        return None
    shared = BitGammas(len(w_bits), len(a_bits))
    for c in convs:
        c.use_gammas(shared)
    return shared


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave `groups` channel groups (PC-DARTS mixes the sampled and bypassed channels)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
