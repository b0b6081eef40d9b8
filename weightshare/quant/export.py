"""Export a derived quantized network to ONNX with QuantizeLinear/DequantizeLinear nodes.

The graph is written node by node from the `DerivedNetwork` (not traced), so
each quantizer becomes the standard QDQ pattern an integer runtime fuses:

* activations at 2/4 bits: ``Clip(0, (2**b - 1) * step)`` (the ReLU and the
  clip level) -> ``QuantizeLinear(step, uint8 0)`` -> ``DequantizeLinear``;
  8 bits (per-channel range measured on the batch, as in training):
  ``Relu`` -> ``ReduceMax`` over (N, H, W) / 255 -> per-axis ``QuantizeLinear``
  / ``DequantizeLinear`` (axis 1) with that scale; 32 bits: ``Relu``.
* weights at b < 32 bits: integer codes stored as an initializer ->
  ``DequantizeLinear``. The weight grid is mid-rise, levels ``(k + 0.5) * step``,
  so codes are the odd integers ``2k + 1`` with scale ``step / 2``: int8 at 2/4
  bits, int16 at 8 bits (``2k + 1`` reaches +-255; one scale per output channel,
  axis 0), hence opset 21.
* BatchNorm stays a BatchNormalization node (inference statistics), so the
  graph computes exactly what the PyTorch fake-quant model computes.

`export_quant_onnx` checks the file with onnx.checker and compares onnxruntime
with the PyTorch model on random inputs (max |logit difference| <= atol,
1e-3 by default: both sides round the same float32 values to the same grid,
so differences come from summation order in the convolutions only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..export import ExportError, ExportReport, verify_onnx
from ..io import atomic_path
from .derived import DerivedCell, DerivedNetwork
from .ops import ConvBN, FactorizedReduce, QConv, Zero
from .quantizers import ACT_STEPS, FLOAT_BITS, PER_CHANNEL_BITS, act_clip, weight_codes

__all__ = ["OPSET", "export_quant_onnx", "quant_onnx_model"]

OPSET = 21


class _Graph:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, value: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: object) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _act(g: _Graph, x: str, bits: int, channels: int) -> str:
    if bits == FLOAT_BITS:
        return g.op("Relu", [x])
    if bits in PER_CHANNEL_BITS:
        y = g.op("Relu", [x])
        m = g.op("ReduceMax", [y, g.const(np.array([0, 2, 3], np.int64), "axes")],
                 keepdims=0)
        scale = g.op("Max", [g.op("Div", [m, g.const(np.float32(2**bits - 1), "levels")]),
                             g.const(np.float32(1e-12), "tiny")], "act_scale")
        zp = g.const(np.zeros(channels, np.uint8), "act_zp")
        q = g.op("QuantizeLinear", [y, scale, zp], "act_q", axis=1)
        return g.op("DequantizeLinear", [q, scale, zp], "act_dq", axis=1)
    step = np.float32(ACT_STEPS[bits])
    lo, hi = g.const(np.float32(0.0), "zero"), g.const(np.float32(act_clip(bits)), "clip")
    clipped = g.op("Clip", [x, lo, hi])
    scale, zp = g.const(step, "act_scale"), g.const(np.uint8(0), "act_zp")
    q = g.op("QuantizeLinear", [clipped, scale, zp], "act_q")
    return g.op("DequantizeLinear", [q, scale, zp], "act_dq")


def _weight(g: _Graph, conv: QConv) -> str:
    w = conv.conv.weight.detach().float()
    bits = conv.w_bits[0]
    if bits == FLOAT_BITS:
        return g.const(w.numpy(), "w")
    k, step = weight_codes(w, bits)
    dtype = np.int8 if bits < 8 else np.int16
    codes = g.const((2 * k + 1).numpy().astype(dtype), "w_codes")
    if bits in PER_CHANNEL_BITS:  # one scale per output channel
        half = (step.reshape(-1) / 2).numpy().astype(np.float32)
        scale = g.const(half, "w_scale")
        zp = g.const(np.zeros(half.shape, dtype), "w_zp")
        return g.op("DequantizeLinear", [codes, scale, zp], "w_dq", axis=0)
    scale = g.const(np.float32(float(step) / 2), "w_scale")
    return g.op("DequantizeLinear", [codes, scale, g.const(dtype(0), "w_zp")], "w_dq")


def _qconv(g: _Graph, x: str, conv: QConv) -> str:
    if len(conv.w_bits) != 1 or len(conv.a_bits) != 1:
        raise ExportError("only networks with one bit width per layer can be exported")
    c = conv.conv
    inp = _act(g, x, conv.a_bits[0], c.in_channels) if conv.quantize_input else x
    ins = [inp, _weight(g, conv)]
    if c.bias is not None:
        ins.append(g.const(c.bias.detach().numpy(), "b"))
    p, d, s = c.padding, c.dilation, c.stride
    return g.op("Conv", ins, kernel_shape=list(c.kernel_size), strides=list(s),
                pads=[p[0], p[1], p[0], p[1]], dilations=list(d), group=c.groups)


def _bn(g: _Graph, x: str, bn: nn.BatchNorm2d) -> str:
    n = bn.num_features
    scale = bn.weight.detach().numpy() if bn.affine else np.ones(n, np.float32)
    bias = bn.bias.detach().numpy() if bn.affine else np.zeros(n, np.float32)
    return g.op("BatchNormalization", [
        x, g.const(scale, "bn_scale"), g.const(bias, "bn_bias"),
        g.const(bn.running_mean.numpy(), "bn_mean"), g.const(bn.running_var.numpy(), "bn_var"),
    ], epsilon=float(bn.eps))


def _module(g: _Graph, x: str, m: nn.Module) -> str:
    if isinstance(m, ConvBN):
        return _bn(g, _qconv(g, x, m.qconv), m.bn)
    if isinstance(m, nn.Sequential):
        for sub in m:
            x = _module(g, x, sub)
        return x
    if isinstance(m, FactorizedReduce):
        shifted = g.op("Slice", [x, g.const(np.array([1, 1], np.int64), "starts"),
                                 g.const(np.array([2**62, 2**62], np.int64), "ends"),
                                 g.const(np.array([2, 3], np.int64), "axes")])
        cat = g.op("Concat", [_qconv(g, x, m.conv_1), _qconv(g, shifted, m.conv_2)], axis=1)
        return _bn(g, cat, m.bn)
    if isinstance(m, nn.Identity):
        return x
    if isinstance(m, nn.MaxPool2d):
        return g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[m.stride] * 2, pads=[1] * 4)
    if isinstance(m, nn.AvgPool2d):
        return g.op("AveragePool", [x], kernel_shape=[3, 3], strides=[m.stride] * 2,
                    pads=[1] * 4, count_include_pad=int(m.count_include_pad))
    if isinstance(m, Zero):
        raise ExportError("the 'none' op never appears in a derived network")
    raise ExportError(f"cannot export module {type(m).__name__}")


def _cell(g: _Graph, s0: str, s1: str, cell: DerivedCell) -> str:
    states = [_module(g, s0, cell.pre0), _module(g, s1, cell.pre1)]
    for i, inputs in enumerate(cell.inputs):
        outs = [_module(g, states[j], cell.edges[f"{i}_{j}"]) for j in inputs]
        acc = outs[0]
        for o in outs[1:]:
            acc = g.op("Add", [acc, o])
        states.append(acc)
    return g.op("Concat", states[2:], axis=1)


def quant_onnx_model(model: DerivedNetwork):  # -> onnx.ModelProto
    """The ONNX graph of `model` (eval mode, float32 input (N, C, H, W), output logits)."""
    from onnx import TensorProto, helper

    model = model.eval().cpu()
    spec = model.spec
    g = _Graph()
    with torch.no_grad():
        s0 = s1 = _module(g, "input", model.stem)
        for cell in model.cells:
            s0, s1 = s1, _cell(g, s0, s1, cell)
        pooled = g.op("GlobalAveragePool", [s1])
        logits = _qconv(g, pooled, model.classifier)
    g.nodes.append(helper.make_node("Flatten", [logits], ["logits"], axis=1))
    graph = helper.make_graph(
        g.nodes, "weightshare_quant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", spec.in_channels, spec.image_size,
                                        spec.image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["batch", spec.num_classes])],
        g.inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="weightshare.quant")
    onnx_model.ir_version = 10  # opset 21's IR; onnxruntime reads it
    return onnx_model


def export_quant_onnx(model: DerivedNetwork, path: str | os.PathLike, *, atol: float = 1e-3,
                      seed: int = 0) -> ExportReport:
    """Write `model` to `path` with QDQ nodes, verify it with onnxruntime, return the report."""
    import onnx

    path = Path(path)
    spec = model.spec
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    try:
        proto = quant_onnx_model(model)
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed))
        diff = verify_onnx(tmp, model.eval().cpu(), x, atol)
    return ExportReport(path, diff, OPSET, path.stat().st_size, shape)
