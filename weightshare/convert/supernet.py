"""The converted SuperNet: a user's network run op by op with elastic widths, depth, kernels.

Built from a `Structure` (plain data) alone, so a checkpoint rebuilds it without
the user's class. Weights live in `layers` (one module per conv, BN and linear,
keyed by op index); a SubNet picks a ratio per slot (its block's expand ratio or
its unit's width), the blocks it skips and the depthwise kernels. The largest
SubNet runs every op at its original size: the original model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import Cost, StaticNet, SuperNet, optimizer_permuter, register_supernet
from ..nn import ElasticBatchNorm2d, ElasticLinear, NormContext
from ..space import SubnetConfig
from .patterns import channels
from .structure import Structure
from .trace import ConvertError

__all__ = ["ConvertedSuperNet", "ElasticConv", "StaticChunk"]

_ACTS = {
    "relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish, "hsigmoid": F.hardsigmoid,
    "silu": F.silu, "sigmoid": torch.sigmoid, "gelu": F.gelu, "tanh": torch.tanh,
    "identity": lambda x: x,
}


class ElasticConv(nn.Module):
    """A conv with elastic output width (dense) or channels (depthwise) and elastic kernel.

    A depthwise kernel k smaller than the original K is the centre k x k of the
    next larger one times a learned (k*k, k*k) transform, initialised to identity
    (OFA's kernel transformation), so the original kernel is untouched.
    """

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.a = attrs
        cin = 1 if attrs["depthwise"] else attrs["in"]
        k = attrs["k"]
        self.weight = nn.Parameter(torch.zeros(attrs["out"], cin, k, k))
        self.bias = nn.Parameter(torch.zeros(attrs["out"])) if attrs["bias"] else None
        self.choices = sorted(attrs.get("kernel_choices", [k]))
        self.transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.choices[::-1], self.choices[-2::-1], strict=False)
        })

    def kernel_weight(self, out: int, cin: int, kernel: int) -> Tensor:
        w = self.weight[:out, :cin]
        for big, small in zip(self.choices[::-1], self.choices[-2::-1], strict=False):
            if big <= kernel:
                break
            s = (big - small) // 2
            flat = w[:, :, s:s + small, s:s + small].reshape(-1, small * small)
            w = F.linear(flat, self.transforms[f"{big}to{small}"]).view(out, cin, small, small)
        return w

    def effective_kernel(self, kernel: int | None) -> int:
        if kernel is None:
            return self.a["k"]
        fits = [c for c in self.choices if c <= kernel]
        return fits[-1] if fits else self.choices[0]

    def padding(self, k: int) -> int:
        return self.a["padding"] if k == self.a["k"] else k // 2

    def forward(self, x: Tensor, out: int | None, kernel: int | None) -> Tensor:
        k = self.effective_kernel(kernel)
        if self.a["depthwise"]:
            c = x.shape[1]
            w, b, groups = self.kernel_weight(c, 1, k), self.bias, c
            b = b[:c] if b is not None else None
        else:
            o = out or self.a["out"]
            w, groups = self.kernel_weight(o, x.shape[1], k), 1
            b = self.bias[:o] if self.bias is not None else None
        return F.conv2d(x, w, b, self.a["stride"], self.padding(k), self.a["dilation"], groups)

    @torch.no_grad()
    def extract(self, cin: int, out: int, kernel: int | None) -> nn.Conv2d:
        k = self.effective_kernel(kernel)
        dw = self.a["depthwise"]
        conv = nn.Conv2d(cin, out, k, self.a["stride"], self.padding(k), self.a["dilation"],
                         groups=cin if dw else 1, bias=self.bias is not None)
        conv.weight.copy_(self.kernel_weight(out, 1 if dw else cin, k))
        if self.bias is not None:
            conv.bias.copy_(self.bias[:out])
        return conv


@dataclass(frozen=True)
class _Plan:
    """What one SubNet runs: width per channel group, kernel per op, skipped segments."""

    widths: tuple[int, ...]
    kernels: dict[int, int]
    skipped: frozenset[int]
    blocks: tuple[int, ...]  # active block slots, in order


def _run_op(op: dict[str, Any], x: Tensor, y: Tensor | None, layer: nn.Module | None,
            training: bool, call) -> Tensor:
    kind, a = op["kind"], op["attrs"]
    if kind in ("conv", "bn", "linear"):
        return call(layer, x)
    if kind == "act":
        return _ACTS[a["fn"]](x)
    if kind == "add":
        return x + y
    if kind == "mul":
        return x * y
    if kind == "gap":
        return x.mean(dim=(2, 3), keepdim=a["keepdim"])
    if kind == "flatten":
        return torch.flatten(x, 1)
    if kind == "pool":
        fn = F.max_pool2d if a["type"] == "max" else F.avg_pool2d
        return fn(x, a["k"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])
    if kind == "dropout":
        return F.dropout(x, a["p"], training)
    raise ConvertError(f"unknown op kind {kind!r} in a converted structure")


def _run_segment(ops: list[dict[str, Any]], seg: list[int], x: Tensor, run) -> Tensor:
    """Run one segment's ops on its input `x`: a reference outside the segment is `x`."""
    values: dict[int, Tensor] = {}
    for i in seg:
        op = ops[i]
        args = [values.get(j, x) for j in op["inputs"]]
        values[i] = run(i, op, args)
    return values[seg[-1]]


class StaticChunk(nn.Module):
    """Some consecutive segments of an extracted SubNet as an ordinary torch module."""

    def __init__(self, ops: list[dict[str, Any]], segments: list[list[int]],
                 layers: dict[int, nn.Module]) -> None:
        super().__init__()
        self.ops = {i: ops[i] for seg in segments for i in seg}
        self.segs = [list(s) for s in segments]
        self.layers = nn.ModuleDict({str(i): m for i, m in layers.items()})

    def forward(self, x: Tensor) -> Tensor:
        def run(i: int, op: dict[str, Any], args: list[Tensor]) -> Tensor:
            layer = self.layers[str(i)] if op["kind"] in ("conv", "bn", "linear") else None
            return _run_op(op, args[0], args[1] if len(args) > 1 else None, layer, self.training,
                           lambda m, t: m(t))

        for seg in self.segs:
            x = _run_segment(self.ops, seg, x, run)
        return x


class ConvertedSuperNet(SuperNet):
    """A SuperNet made from a user's CNN by `weightshare.convert` (see the package docs)."""

    fixed_prefix_layers = 1  # everything before the first block (may be empty)
    fixed_suffix_layers = 1  # everything after the last block, before the head

    def __init__(self, structure: dict[str, Any] | None = None, num_classes: int | None = None,
                 in_channels: int | None = None, resolution: int | None = None) -> None:
        super().__init__()
        if structure is None:
            raise ConvertError("a 'converted' SuperNet is made by weightshare.convert(model, x) or "
                               "`weightshare convert`, or loaded from its checkpoint")
        s = Structure.from_dict(structure)
        for what, given, have in (("num_classes", num_classes, s.num_classes),
                                  ("in_channels", in_channels, s.in_channels),
                                  ("resolution", resolution, s.resolution)):
            if given is not None and given != have:
                raise ConvertError(f"this converted SuperNet has {what}={have}, the data needs "
                                   f"{given}; convert a model made for this data")
        self.structure = s
        self.num_classes, self.in_channels = s.num_classes, s.in_channels
        self.space = s.space()
        self.layers = nn.ModuleDict()
        for i, op in enumerate(s.ops):
            a = op["attrs"]
            if op["kind"] == "conv":
                self.layers[str(i)] = ElasticConv(a)
            elif op["kind"] == "bn":
                self.layers[str(i)] = ElasticBatchNorm2d(a["c"], a["eps"], a["momentum"])
            elif op["kind"] == "linear":
                self.layers[str(i)] = ElasticLinear(a["in"], a["out"], a["bias"])
        self.classifier_op = len(s.ops) - 1 if s.ops[-1]["kind"] == "linear" else None
        self.block_slots = {k for unit in s.units for k in unit}
        self._plans: dict[SubnetConfig, _Plan] = {}
        # Per slot: its kernel-elastic convs; per conv/BN/linear: what its cost needs.
        # Precomputed, so cost() is a short loop (searches call it ~100k times).
        self._slot_kernel_ops = [
            [i for seg in slot["segments"] for i in s.segments[seg]
             if s.ops[i]["kind"] == "conv" and s.ops[i]["attrs"].get("kernel_choices")]
            for slot in s.slots]
        seg_of = {i: n for n, seg in enumerate(s.segments) for i in seg}
        self._cost_ops = []
        for i, op in enumerate(s.ops):
            if op["kind"] in ("conv", "bn", "linear"):
                src = op["inputs"][0]
                a = op["attrs"]
                self._cost_ops.append((
                    seg_of[i], op["kind"], i, op["group"], s.ops[src]["group"] if src >= 0 else -1,
                    op["shape"][1] * op["shape"][2] if op["kind"] == "conv" else 1,
                    a.get("depthwise", False), a.get("bias", False), a.get("k", 1)))
        # Where each block's chunk of an extracted net starts: at the block, or for a unit's
        # first block at the width-scaled layers before it (a stage's downsampling block),
        # so a latency table's per-block entry covers the layers its width choice scales.
        self._block_start = {k: s.slots[k]["segments"][0] for k in self.block_slots}
        for unit, slots in enumerate(s.width_slots):
            first = s.units[unit][0]
            before = [s.slots[k]["segments"][0] for k in slots
                      if s.slots[k]["segments"][0] < self._block_start[first]]
            if before and (unit == 0 or min(before) > max(
                    seg for k in s.units[unit - 1] for seg in s.slots[k]["segments"])):
                self._block_start[first] = min(before)
        self._finish_init()

    # ------------------------------------------------------------------- plans
    def _plan(self, subnet: SubnetConfig) -> _Plan:
        hit = self._plans.get(subnet)
        if hit is not None:
            return hit
        s = self.structure
        ratio: dict[int, float] = {}   # slot -> width ratio
        kernel: dict[int, int] = {}    # slot -> kernel choice
        active: list[int] = []
        for unit, i, expand, k in subnet.unit_blocks():
            slot = s.units[unit][i]
            ratio[slot], kernel[slot] = expand, k
            active.append(slot)
        if subnet.widths:
            for unit, slots in enumerate(s.width_slots):
                for slot in slots:
                    ratio[slot] = subnet.widths[unit]
        widths = [grp["size"] for grp in s.groups]
        for slot, r in ratio.items():
            for gid in s.slots[slot]["groups"]:
                widths[gid] = channels(s.groups[gid]["size"], r)
        skipped = {seg for slot in self.block_slots - set(active)
                   for seg in s.slots[slot]["segments"]}
        kernels = {i: self.layers[str(i)].effective_kernel(k) for slot, k in kernel.items()
                   for i in self._slot_kernel_ops[slot]}
        plan = _Plan(tuple(widths), kernels, frozenset(skipped), tuple(active))
        if len(self._plans) > 4096:  # random SubNets in training: keep the cache bounded
            self._plans.clear()
        self._plans[subnet] = plan
        return plan

    def _in_width(self, plan: _Plan, op: dict[str, Any]) -> int:
        src = op["inputs"][0]
        return plan.widths[self.structure.ops[src]["group"]] if src >= 0 else self.in_channels

    # ----------------------------------------------------------------- forward
    def _forward(self, x: Tensor, subnet: SubnetConfig, dropout: float,
                 norm: NormContext) -> Tensor:
        plan = self._plan(subnet)
        ops = self.structure.ops

        def run(i: int, op: dict[str, Any], args: list[Tensor]) -> Tensor:
            kind, inp = op["kind"], args[0]
            if kind == "conv":
                return self.layers[str(i)](inp, plan.widths[op["group"]], plan.kernels.get(i))
            if kind == "bn":
                return self.layers[str(i)](inp, norm)
            if kind == "linear":
                if i == self.classifier_op and dropout > 0:
                    inp = F.dropout(inp, dropout, self.training)
                return self.layers[str(i)](inp, plan.widths[op["group"]])
            return _run_op(op, inp, args[1] if len(args) > 1 else None, None, self.training, None)

        for n, seg in enumerate(self.structure.segments):
            if n not in plan.skipped:
                x = _run_segment(ops, seg, x, run)
        return x

    # ----------------------------------------------------------------- extract
    def _static_layers(self, plan: _Plan, seg_ids: list[int], norm: NormContext) -> StaticChunk:
        s = self.structure
        layers: dict[int, nn.Module] = {}
        for seg in seg_ids:
            for i in s.segments[seg]:
                op = s.ops[i]
                out = plan.widths[op["group"]]
                if op["kind"] == "conv":
                    cin = self._in_width(plan, op)
                    layers[i] = self.layers[str(i)].extract(cin, out, plan.kernels.get(i))
                elif op["kind"] == "bn":
                    layers[i] = self.layers[str(i)].extract(out, norm)
                elif op["kind"] == "linear":
                    layers[i] = self.layers[str(i)].extract(self._in_width(plan, op), out)
        return StaticChunk(s.ops, [s.segments[n] for n in seg_ids], layers)

    def chunks(self, plan: _Plan) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        """Segments of the extracted net: prefix, one chunk per active block, suffix, head."""
        s = self.structure
        block_segs = [seg for k in self.block_slots for seg in s.slots[k]["segments"]]
        first, last = min(self._block_start.values()), max(block_segs)
        starts = {self._block_start[k] for k in plan.blocks}
        prefix, middle, suffix = list(range(first)), [], list(range(last + 1, s.head_start))
        for n in range(first, last + 1):
            if n in plan.skipped:
                continue
            if n in starts or not middle:
                middle.append([n])
            else:
                middle[-1].append(n)
        return prefix, middle, suffix, list(range(s.head_start, len(s.segments)))

    def _extract(self, subnet: SubnetConfig, norm: NormContext) -> StaticNet:
        plan = self._plan(subnet)
        prefix, middle, suffix, head = self.chunks(plan)
        features = [self._static_layers(plan, prefix, norm),
                    *(self._static_layers(plan, m, norm) for m in middle),
                    self._static_layers(plan, suffix, norm)]
        return StaticNet(nn.Sequential(*features),
                         nn.Sequential(self._static_layers(plan, head, norm)), subnet)

    # -------------------------------------------------------------------- cost
    def _cost(self, subnet: SubnetConfig, resolution: int) -> Cost:
        plan = self._plan(subnet)
        widths, skipped, cin0 = plan.widths, plan.skipped, self.in_channels
        macs = params = 0
        for seg, kind, i, group, in_group, hw, depthwise, bias, k0 in self._cost_ops:
            if seg in skipped:
                continue
            out = widths[group]
            if kind == "bn":
                params += 2 * out
                continue
            cin = 1 if depthwise else (widths[in_group] if in_group >= 0 else cin0)
            if kind == "conv":
                k = plan.kernels.get(i, k0)
                w = out * cin * k * k
            else:
                w = out * cin
            macs += w * hw
            params += w + (out if bias else 0)
        return Cost(int(macs), int(params))

    # -------------------------------------------------------------- reordering
    def reorder_channels(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Sort every elastic channel group by importance (L1 of the weights that read it)."""
        apply = optimizer_permuter(optimizer)
        s = self.structure
        with torch.no_grad():
            for gid, grp in enumerate(s.groups):
                if not grp["elastic"]:
                    continue
                makes, reads = [], []
                for i, op in enumerate(s.ops):
                    src = op["inputs"][0] if op["inputs"] else -1
                    if op["group"] == gid and op["kind"] in ("conv", "bn", "linear"):
                        makes.append(i)
                    elif src >= 0 and s.ops[src]["group"] == gid \
                            and op["kind"] in ("conv", "linear"):
                        reads.append(i)
                if not reads:
                    continue
                score = sum(self.layers[str(i)].weight.detach().abs().transpose(0, 1)
                            .reshape(grp["size"], -1).sum(1) for i in reads)
                perm = torch.sort(score, descending=True, stable=True).indices
                for i in reads:
                    apply(self.layers[str(i)].weight, 1, perm)
                for i in makes:
                    layer = self.layers[str(i)]
                    tensors = [layer.weight, layer.bias]
                    if s.ops[i]["kind"] == "bn":
                        tensors += [layer.running_mean, layer.running_var]
                    for t in tensors:
                        if t is not None:
                            apply(t, 0, perm)
        self.subnet_norms.clear()


register_supernet(
    "converted",
    {},
    "A user's own CNN made elastic by `weightshare convert` (structure stored in the checkpoint)",
)(ConvertedSuperNet)
