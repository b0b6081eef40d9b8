"""Trace a user's torch model into a flat list of supported ops (the converter's IR).

torch.fx follows the model's Python `forward` through user classes down to
standard torch layers; ShapeProp runs the example input through the graph so
every op knows its output shape. Each node becomes an `Op` with plain-data
attributes; anything outside the supported set is refused with a
`ConvertError` naming the layer (its qualified module name or fx node).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightshareError

__all__ = ["ConvertError", "Op", "trace_ops", "ACT_MODULES", "SUPPORTED"]


class ConvertError(WeightshareError, ValueError):
    """The model cannot be converted into an elastic SuperNet (names the layer and why)."""


@dataclass
class Op:
    """One traced op. `inputs` are indices of earlier ops (-1: the network input)."""

    kind: str                      # conv | bn | linear | act | add | mul | gap | flatten | pool | dropout
    inputs: list[int]
    name: str                      # the user's module path or fx node name, for messages
    attrs: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()    # output shape without the batch dimension
    module: nn.Module | None = None  # the user's layer holding the weights (conv, bn, linear)


# Activation layers by class and by function, mapped to the converter's names.
ACT_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish", nn.Hardsigmoid: "hsigmoid",
    nn.SiLU: "silu", nn.Sigmoid: "sigmoid", nn.GELU: "gelu", nn.Tanh: "tanh",
    nn.Identity: "identity",
}
_ACT_FUNCS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.hardswish: "hswish",
    F.hardsigmoid: "hsigmoid", F.silu: "silu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    F.gelu: "gelu", torch.tanh: "tanh", F.tanh: "tanh",
}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}

SUPPORTED = ("Conv2d (dense or depthwise), BatchNorm2d, Linear, ReLU/ReLU6/Hardswish/Hardsigmoid/"
             "SiLU/Sigmoid/GELU/Tanh/Identity, Dropout, MaxPool2d, AvgPool2d, "
             "AdaptiveAvgPool2d(1), Flatten, tensor + tensor (residual), tensor * gate (SE), "
             "mean over (2, 3), torch.flatten")


def _refuse(name: str, what: str) -> ConvertError:
    return ConvertError(f"cannot convert layer {name!r}: {what}. Supported: {SUPPORTED}")


def _conv_attrs(m: nn.Conv2d, name: str) -> dict[str, Any]:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise _refuse(name, f"Conv2d padding {m.padding!r} / padding_mode {m.padding_mode!r} "
                      "(use integer zero padding)")
    if m.kernel_size[0] != m.kernel_size[1] or m.stride[0] != m.stride[1] \
            or m.padding[0] != m.padding[1] or m.dilation[0] != m.dilation[1]:
        raise _refuse(name, f"non-square Conv2d (kernel {m.kernel_size}, stride {m.stride})")
    depthwise = m.groups > 1
    if depthwise and not (m.groups == m.in_channels == m.out_channels):
        raise _refuse(name, f"grouped Conv2d with groups={m.groups} (only dense or "
                      "depthwise convolutions)")
    return {"in": m.in_channels, "out": m.out_channels, "k": m.kernel_size[0],
            "stride": m.stride[0], "padding": m.padding[0], "dilation": m.dilation[0],
            "depthwise": depthwise, "bias": m.bias is not None}


def _module_op(m: nn.Module, name: str) -> tuple[str, dict[str, Any]]:
    if isinstance(m, nn.Conv2d):
        return "conv", _conv_attrs(m, name)
    if isinstance(m, nn.BatchNorm2d):
        if not m.affine or not m.track_running_stats:
            raise _refuse(name, "BatchNorm2d without affine parameters or running statistics")
        return "bn", {"c": m.num_features, "eps": m.eps, "momentum": m.momentum or 0.1}
    if isinstance(m, nn.Linear):
        return "linear", {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
    for cls, act in ACT_MODULES.items():
        if type(m) is cls:
            return "act", {"fn": act}
    if isinstance(m, nn.Dropout):
        return "dropout", {"p": float(m.p)}
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if m.output_size not in (1, (1, 1)):
            raise _refuse(name, f"AdaptiveAvgPool2d({m.output_size}) (only global pooling to 1)")
        return "gap", {"keepdim": True}
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        k, s, p = (m.kernel_size, m.stride, m.padding)
        if any(isinstance(v, tuple) for v in (k, s, p)) or getattr(m, "dilation", 1) != 1:
            raise _refuse(name, f"{type(m).__name__} with tuple sizes or dilation")
        return "pool", {"type": "max" if isinstance(m, nn.MaxPool2d) else "avg", "k": int(k),
                        "stride": int(s if s is not None else k), "padding": int(p),
                        "ceil_mode": bool(m.ceil_mode)}
    if isinstance(m, nn.Flatten):
        if m.end_dim != -1 or m.start_dim != 1:
            raise _refuse(name, "Flatten other than Flatten(1)")
        return "flatten", {}
    raise _refuse(name, f"{type(m).__name__} is not a supported layer")


def _function_op(node: torch.fx.Node) -> tuple[str, dict[str, Any]]:
    target, name = node.target, node.name
    if target in _ADD:
        return "add", {}
    if target in _MUL:
        return "mul", {}
    if target in _ACT_FUNCS:
        return "act", {"fn": _ACT_FUNCS[target]}
    if target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1 or len(node.args) > 2 or "end_dim" in node.kwargs:
            raise _refuse(name, "torch.flatten other than torch.flatten(x, 1)")
        return "flatten", {}
    if target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        if size not in (1, (1, 1)):
            raise _refuse(name, f"adaptive_avg_pool2d to {size} (only global pooling to 1)")
        return "gap", {"keepdim": True}
    if target is torch.mean:
        return _mean_op(node, node.args[1:], node.kwargs)
    if target is F.dropout:
        return "dropout", {"p": float(node.kwargs.get("p", node.args[1] if len(node.args) > 1
                                                       else 0.5))}
    raise _refuse(name, f"function {getattr(target, '__name__', target)!r} is not supported")


def _mean_op(node: torch.fx.Node, args, kwargs) -> tuple[str, dict[str, Any]]:
    dims = args[0] if args else kwargs.get("dim")
    keep = args[1] if len(args) > 1 else kwargs.get("keepdim", False)
    if dims is None or sorted(d % 4 for d in (dims if isinstance(dims, list | tuple) else [dims])) \
            != [2, 3]:
        raise _refuse(node.name, f"mean over dims {dims} (only global pooling, dims (2, 3))")
    return "gap", {"keepdim": bool(keep)}


def _method_op(node: torch.fx.Node) -> tuple[str, dict[str, Any]]:
    method = node.target
    if method in _ACT_METHODS:
        return "act", {"fn": _ACT_METHODS[method]}
    if method in ("add", "add_"):
        return "add", {}
    if method in ("mul", "mul_"):
        return "mul", {}
    if method == "mean":
        return _mean_op(node, node.args[1:], node.kwargs)
    if method == "flatten" and tuple(node.args[1:]) == (1,) and not node.kwargs:
        return "flatten", {}
    raise _refuse(node.name, f"tensor method .{method}() is not supported "
                  "(write torch.flatten(x, 1) instead of view/reshape)")


def trace_ops(model: nn.Module, example_input: torch.Tensor) -> list[Op]:
    """The model as a topologically ordered op list with output shapes (eval mode)."""
    from torch.fx.passes.shape_prop import ShapeProp

    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise ConvertError("example_input must be one image batch tensor of shape (N, C, H, W)")
    was_training = model.training
    model.eval()
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for data-dependent Python
        raise ConvertError(
            f"torch.fx cannot trace {type(model).__name__}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''} (control flow that depends on "
            "tensor values is not traceable)"
        ) from None
    finally:
        model.train(was_training)
    with torch.no_grad():
        ShapeProp(gm).propagate(example_input)
    modules = dict(gm.named_modules())
    index: dict[torch.fx.Node, int] = {}
    ops: list[Op] = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConvertError(f"the model's forward takes {len(placeholders)} inputs; it must take "
                           "exactly one image tensor")
    index[placeholders[0]] = -1
    output = None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr") and node.op == "get_attr":
            raise _refuse(node.name, f"reads parameter/buffer {node.target!r} directly in forward")
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output = node.args[0]
            continue
        if node.op == "call_module":
            module = modules[node.target]
            kind, attrs = _module_op(module, str(node.target))
            name = str(node.target)
        elif node.op == "call_function":
            kind, attrs = _function_op(node)
            module, name = None, node.name
        else:  # call_method
            kind, attrs = _method_op(node)
            module, name = None, node.name
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        extra = [a for a in node.args if not isinstance(a, torch.fx.Node)]
        if kind in ("add", "mul"):
            if len(tensor_args) != 2 or extra or node.kwargs:
                raise _refuse(name, f"{kind} of a tensor and a constant (only tensor {kind} tensor)")
        elif len(tensor_args) != 1:
            raise _refuse(name, f"{kind} with {len(tensor_args)} tensor inputs")
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise _refuse(name, "an op whose output is not a single tensor")
        index[node] = len(ops)
        ops.append(Op(kind, [index[a] for a in tensor_args], name, attrs,
                      tuple(int(s) for s in meta.shape[1:]), module))
    if not isinstance(output, torch.fx.Node) or output not in index or index[output] != len(ops) - 1:
        raise ConvertError("the model must return one tensor of logits, computed last in forward")
    if len(ops[-1].shape) != 1:
        raise ConvertError(f"the model's output has shape {ops[-1].shape}; expected (N, classes)")
    return ops
