"""Find what can be elastic in a traced model: segments, channel groups, blocks, units.

1. Segments: cut the op list wherever exactly one value is live; each segment is
   then a single-input, single-output piece (a residual block, a conv, a BN...).
   Networks whose values cross several blocks (dense or U-Net skips) have no such
   chain and are refused.
2. Channel groups (union-find): a dense conv or linear starts a group; BN,
   activations, pooling and depthwise convs keep their input's; a residual add
   and an SE gate (x * gate) join their inputs. Groups on a residual stream, the
   input, the logits, a flatten over space or the head stay fixed; all others
   (inner widths) are elastic.
3. Slots: the segment range each elastic group runs through (from the conv that
   makes it to the one that reads it), merged where ranges overlap; a residual
   segment with an identity shortcut and equal input/output shape is skippable.
4. Units: with elastic depth, runs of skippable slots are cut into units of
   equal length (the search space has one depth range for all units); the other
   slots follow their unit's width choice. Otherwise each slot is a unit of one
   block, its width chosen by the block's expand ratio.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from .structure import Structure
from .trace import ConvertError, Op

__all__ = ["analyze", "channels"]


def channels(size: int, ratio: float) -> int:
    """Width of an elastic group of `size` channels at `ratio` (1.0: the original)."""
    return size if ratio >= 1 else max(1, round(size * ratio))


class _Groups:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: set[int] = set()

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.fixed:
                self.fixed.add(ra)
        return ra

    def fix(self, g: int) -> None:
        self.fixed.add(self.find(g))


def _segments(ops: list[Op]) -> list[list[int]]:
    last_use = {i: i for i in range(-1, len(ops))}
    for i, op in enumerate(ops):
        for j in op.inputs:
            last_use[j] = max(last_use[j], i)
    for i, op in enumerate(ops[:-1]):
        if last_use[i] == i:
            raise ConvertError(f"the output of layer {op.name!r} is never used; remove it from "
                               "forward before converting")
    # p ends a segment when every earlier value is dead after p: only p's output is live.
    segments, start, reach = [], 0, last_use[-1]
    for p in range(len(ops)):
        if reach <= p:
            segments.append(list(range(start, p + 1)))
            start = p + 1
        reach = max(reach, last_use[p])
    if start < len(ops):
        segments.append(list(range(start, len(ops))))
    return segments


def _channel_groups(ops: list[Op], in_channels: int) -> tuple[_Groups, dict[int, int]]:
    g = _Groups()
    group = {-1: g.new(in_channels)}
    g.fix(group[-1])
    for i, op in enumerate(ops):
        src = op.inputs[0]
        in_shape = ops[src].shape if src >= 0 else None
        if op.kind == "conv":
            if op.attrs["depthwise"]:
                group[i] = group[src]
            else:
                group[i] = g.new(op.attrs["out"])
        elif op.kind == "linear":
            if in_shape is not None and len(in_shape) != 1:
                raise ConvertError(f"cannot convert layer {op.name!r}: Linear on a "
                                   f"{len(in_shape) + 1}-D tensor (flatten or pool first)")
            group[i] = g.new(op.attrs["out"])
        elif op.kind == "flatten":
            if in_shape is not None and len(in_shape) == 3 and in_shape[1:] != (1, 1):
                # Flattening C x H x W mixes channels into features: the channels stay fixed.
                g.fix(group[src])
                group[i] = g.new(math.prod(in_shape))
                g.fix(group[i])
            else:
                group[i] = group[src]
        elif op.kind in ("add", "mul"):
            a, b = op.inputs
            sa, sb = (ops[a].shape if a >= 0 else None), (ops[b].shape if b >= 0 else None)
            if op.kind == "add" and sa != sb:
                raise ConvertError(f"cannot convert {op.name!r}: a broadcasting add of shapes "
                                   f"{sa} and {sb}")
            if op.kind == "mul" and not (sa == sb or (sa and sb and sa[0] == sb[0]
                                                      and (sa[1:] == (1, 1) or sb[1:] == (1, 1)))):
                raise ConvertError(f"cannot convert {op.name!r}: only a per-channel gate "
                                   f"(squeeze-excite, x * gate) may multiply; shapes {sa}, {sb}")
            group[i] = g.union(group[a], group[b])
            if op.kind == "add":
                g.fix(group[i])  # a residual stream: its channels are tied across blocks
        else:
            group[i] = group[src]
    g.fix(group[len(ops) - 1])  # logits
    return g, group


def _skippable(seg: list[int], ops: list[Op], prev: int) -> bool:
    out = seg[-1]
    add = out
    if ops[out].kind == "act" and ops[out].inputs[0] in seg and len(seg) > 1:
        add = ops[out].inputs[0]
    if ops[add].kind != "add" or add not in seg:
        return False
    a, b = ops[add].inputs
    in_shape = ops[prev].shape if prev >= 0 else None
    return (prev in (a, b)) and ((a in seg) != (b in seg)) and in_shape == ops[out].shape


def analyze(ops: list[Op], *, in_channels: int, resolution: int, ratios: tuple[float, ...],
            depth: bool | tuple[int, ...], kernels: tuple[int, ...] | None) -> Structure:
    segments = _segments(ops)
    seg_of = {i: s for s, seg in enumerate(segments) for i in seg}
    # The head starts at the first pooling/flatten on the main chain (a segment's output);
    # a squeeze-excite's pooling sits inside its block's segment.
    head_start = next((seg_of[i] for i, op in enumerate(ops)
                       if op.kind in ("gap", "flatten") and segments[seg_of[i]][-1] == i), None)
    if head_start is None:
        raise ConvertError("the model has no global pooling or flatten before its classifier; "
                           "supported heads are global average pooling (+ flatten) + Linear")
    g, group = _channel_groups(ops, in_channels)
    # Widths made in the head (a hidden Linear, MobileNetV3's feature mix) stay fixed.
    for i, op in enumerate(ops):
        if seg_of[i] >= head_start and op.kind in ("conv", "linear"):
            g.fix(group[i])
    notes: list[str] = []

    # ---- elastic groups and the segment range each runs through
    elastic = sorted({g.find(group[i]) for i in range(len(ops))} - {g.find(x) for x in g.fixed})
    ranges: list[tuple[int, int, list[int]]] = []
    for gid in elastic:
        makers = [seg_of[i] for i, op in enumerate(ops) if g.find(group[i]) == gid
                  and op.kind in ("conv", "linear") and not op.attrs.get("depthwise")]
        readers = [seg_of[i] for i, op in enumerate(ops) if op.inputs
                   and g.find(group[op.inputs[0]]) == gid and g.find(group[i]) != gid]
        start = min(makers)
        end = max(start, min(max(readers, default=start) - 1, head_start - 1))
        ranges.append((start, end, [gid]))
    skip_segs = {s for s in range(head_start)
                 if _skippable(segments[s], ops, segments[s - 1][-1] if s > 0 else -1)}
    ranges += [(s, s, []) for s in skip_segs]
    ranges.sort()
    slots: list[dict[str, Any]] = []
    for start, end, gids in ranges:
        if slots and start <= slots[-1]["end"]:
            slots[-1]["end"] = max(slots[-1]["end"], end)
            slots[-1]["groups"] += gids
        else:
            slots.append({"start": start, "end": end, "groups": list(gids)})
    for slot in slots:
        seg_range = list(range(slot["start"], slot["end"] + 1))
        slot["segments"] = seg_range
        slot["skippable"] = len(seg_range) == 1 and seg_range[0] in skip_segs
        del slot["start"], slot["end"]
    if not slots:
        raise ConvertError("found nothing elastic: no inner width outside the residual stream "
                           "and no skippable residual block")

    # ---- units
    runs: list[list[int]] = []
    for k, slot in enumerate(slots):
        if slot["skippable"]:
            if runs and runs[-1][-1] == k - 1:
                runs[-1].append(k)
            else:
                runs.append([k])
    want_depth = depth is not False and bool(runs)
    # A run may be led by the non-skippable slot right before it (a stage's first,
    # downsampling block: always run, as depth >= 1); try units with leaders first.
    units, d = [], 1
    for lead in (True, False):
        cand = [([run[0] - 1] if lead and run[0] > 0 and not slots[run[0] - 1]["skippable"]
                 else []) + run for run in runs]
        d = math.gcd(*(len(r) for r in cand)) if cand else 1
        if d >= 2:
            units = [run[i:i + d] for run in cand for i in range(0, len(run), d)]
            break
    if want_depth and d >= 2:
        in_unit = {k for u in units for k in u}
        width_slots: list[list[int]] = [[] for _ in units]
        for k in range(len(slots)):
            if k not in in_unit:
                nxt = next((u for u, blocks in enumerate(units) if blocks[0] > k), len(units) - 1)
                width_slots[nxt].append(k)
        depth_choices = list(range(1, d + 1))
        if isinstance(depth, tuple | list):
            if not depth or max(depth) != d or min(depth) < 1:
                raise ConvertError(f"depth={tuple(depth)}: this model's units have {d} blocks, so "
                                   f"depth choices must lie in 1..{d} and include {d}")
            depth_choices = sorted(set(depth))
        notes.append(f"elastic depth: {len(units)} units of {d} skippable blocks")
    else:
        if want_depth:
            msg = (f"runs of skippable blocks have lengths {[len(r) for r in runs]} (with or "
                   "without their stage's first block) with no common divisor > 1, so depth is "
                   "not elastic: one depth range serves all units")
            warnings.warn(msg, stacklevel=3)
            notes.append(msg)
        units = [[k] for k in range(len(slots))]
        width_slots = [[] for _ in units]
        depth_choices = [1]

    # ---- kernels
    block_slots = {k for u in units for k in u}
    dw_in_blocks = [i for k in block_slots for s in slots[k]["segments"] for i in segments[s]
                    if ops[i].kind == "conv" and ops[i].attrs["depthwise"]]
    if kernels:
        kernels = tuple(sorted({int(k) for k in kernels}))
        if any(k % 2 == 0 or k < 1 for k in kernels):
            raise ConvertError(f"kernel={kernels}: kernel sizes must be odd")
        if not dw_in_blocks:
            raise ConvertError("kernel=... asks for elastic depthwise kernels, but no block of "
                               "this model has a depthwise convolution")
        for i in dw_in_blocks:
            a = ops[i].attrs
            if a["k"] > kernels[-1] or a["dilation"] != 1 or a["padding"] != a["k"] // 2:
                raise ConvertError(
                    f"cannot make the kernel of {ops[i].name!r} elastic: it is {a['k']}x{a['k']} "
                    f"(padding {a['padding']}, dilation {a['dilation']}); elastic kernels need "
                    f"'same' padding, no dilation and a size <= max(kernel)={kernels[-1]}")
            a["kernel_choices"] = sorted({k for k in kernels if k < a["k"]} | {a["k"]})
        kernel_choices = list(kernels)
    else:
        kernel_choices = [max((ops[i].attrs["k"] for i in dw_in_blocks), default=3)]

    ratios = tuple(sorted({float(r) for r in ratios}))
    if not ratios or ratios[-1] != 1.0 or ratios[0] <= 0:
        raise ConvertError(f"width={ratios}: width ratios must lie in (0, 1] and include 1.0")
    group_index = {gid: n for n, gid in enumerate(sorted({g.find(group[i]) for i in group}))}
    op_dicts = [{"kind": op.kind, "inputs": list(op.inputs), "name": op.name, "attrs": op.attrs,
                 "shape": list(op.shape), "group": group_index[g.find(group[i])]}
                for i, op in enumerate(ops)]
    groups = [{"size": g.size[gid], "elastic": gid in elastic} for gid in group_index]
    for slot in slots:
        slot["groups"] = [group_index[gid] for gid in slot["groups"]]
    return Structure(
        in_channels=in_channels, resolution=resolution, num_classes=ops[-1].shape[0],
        ops=op_dicts, groups=groups, segments=segments, head_start=head_start, slots=slots,
        units=units, width_slots=width_slots, ratios=list(ratios), depth_choices=depth_choices,
        kernel_choices=kernel_choices, notes=notes,
    )
