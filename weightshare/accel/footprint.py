"""Exact weight footprints: which slices of which SuperNet tensors a SubNet reads.

A `Footprint` maps a SuperNet tensor name (its state-dict key, or
``subnet_norms.<id>.<bn key>.mean|var`` for a SubNet's own BN statistics) to a
set of disjoint boxes, a box being one half-open ``(start, stop)`` range per
dimension. Boxes make the set algebra exact: intersection (the SubGraph two
SubNets share) and difference (the delta a switch must load) are again sets of
boxes, and element counts are sums of box volumes.

What a SubNet reads follows the slicing conventions of `weightshare.nn`: a
narrower choice reads the *first* channels; a depthwise kernel smaller than the
largest reads the centre of the largest kernel at the size of the *next smaller*
choice (only the first step of OFA's 7->5->3 transform chain touches the raw
weight) plus every transform matrix down the chain. BN layers read weight, bias
and either the shared running statistics (first channels) or that SubNet's own
statistics, when the SuperNet holds them.

Differences from the extracted model's parameters (see `extracted_difference`):
the extracted model bakes the transforms into a k x k kernel, so it holds
``h*k*k`` depthwise elements where the footprint reads ``h*s*s`` plus the
transform matrices; BN statistics are buffers there, parameters nowhere.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping

from ..models import SuperNet
from ..space import SubnetConfig

__all__ = [
    "Box",
    "Footprint",
    "subnet_footprint",
    "subnet_id",
    "norm_tensor_name",
    "is_stats",
    "is_transform",
    "extracted_difference",
]

Box = tuple[tuple[int, int], ...]


def _volume(box: Box) -> int:
    return math.prod(b - a for a, b in box)


def _intersect(a: Box, b: Box) -> Box | None:
    out = tuple((max(a0, b0), min(a1, b1)) for (a0, a1), (b0, b1) in zip(a, b, strict=True))
    return out if all(lo < hi for lo, hi in out) else None


def _subtract(a: Box, b: Box) -> list[Box]:
    """`a` minus `b` as disjoint boxes: peel off the parts outside `b` one dimension at a time."""
    if _intersect(a, b) is None:
        return [a]
    pieces: list[Box] = []
    rest = list(a)
    for d, ((lo, hi), (blo, bhi)) in enumerate(zip(a, b, strict=True)):
        if lo < blo:
            pieces.append(tuple(rest[:d]) + ((lo, blo),) + tuple(rest[d + 1:]))
        if bhi < hi:
            pieces.append(tuple(rest[:d]) + ((bhi, hi),) + tuple(rest[d + 1:]))
        rest[d] = (max(lo, blo), min(hi, bhi))
    return pieces


def is_stats(name: str) -> bool:
    """BN statistics (shared running buffers or a SubNet's own), not trained parameters."""
    return name.startswith("subnet_norms.") or name.endswith(("running_mean", "running_var"))


def is_transform(name: str) -> bool:
    return ".transforms." in name


class Footprint(Mapping[str, tuple[Box, ...]]):
    """Tensor name -> disjoint boxes read. Immutable; `&` intersects, `-` is the delta, `|` unites."""

    def __init__(self, regions: Mapping[str, Iterable[Box]] | None = None) -> None:
        clean: dict[str, tuple[Box, ...]] = {}
        for name, boxes in (regions or {}).items():
            kept = tuple(tuple((int(a), int(b)) for a, b in box) for box in boxes)
            kept = tuple(b for b in kept if _volume(b) > 0)
            if kept:
                clean[name] = kept
        self._r = clean

    # Mapping
    def __getitem__(self, name: str) -> tuple[Box, ...]:
        return self._r[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._r)

    def __len__(self) -> int:
        return len(self._r)

    def __repr__(self) -> str:
        return f"Footprint({len(self._r)} tensors, {self.numel()} elements)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Footprint):
            return NotImplemented
        # Equal as sets of elements: same tensors and no element in one but not the other.
        return self.numel() == other.numel() and (self - other).numel() == 0

    __hash__ = None  # type: ignore[assignment]

    # set algebra
    def __and__(self, other: Footprint) -> Footprint:
        out: dict[str, list[Box]] = {}
        for name in self._r.keys() & other._r.keys():
            for a in self._r[name]:
                for b in other._r[name]:
                    box = _intersect(a, b)
                    if box is not None:
                        out.setdefault(name, []).append(box)
        return Footprint(out)

    def __sub__(self, other: Footprint) -> Footprint:
        out: dict[str, list[Box]] = {}
        for name, boxes in self._r.items():
            pieces = list(boxes)
            for b in other._r.get(name, ()):
                pieces = [p for a in pieces for p in _subtract(a, b)]
            if pieces:
                out[name] = pieces
        return Footprint(out)

    def __or__(self, other: Footprint) -> Footprint:
        extra = other - self
        merged = {k: list(v) for k, v in self._r.items()}
        for name, boxes in extra.items():
            merged.setdefault(name, []).extend(boxes)
        return Footprint(merged)

    # sizes
    def numel(self, kind: str = "all") -> int:
        """Elements read; kind: all, params (trained tensors incl. transforms), stats, transforms."""
        keep = {
            "all": lambda n: True,
            "params": lambda n: not is_stats(n),
            "stats": is_stats,
            "transforms": is_transform,
        }
        if kind not in keep:
            raise ValueError(f"unknown footprint kind {kind!r}; use one of {sorted(keep)}")
        return sum(_volume(b) for n, boxes in self._r.items() if keep[kind](n) for b in boxes)

    def nbytes(self, bits: int = 32) -> int:
        """Bytes at `bits` per element (every tensor at the same precision), rounded up."""
        if bits <= 0:
            raise ValueError(f"bits must be positive, got {bits}")
        return -(-self.numel() * bits // 8)

    def tensor_names(self) -> list[str]:
        return list(self._r)


# ------------------------------------------------------------------ building
def subnet_id(subnet: SubnetConfig) -> str:
    """A short stable id of a SubNet, used to name its own BN statistics in weight files."""
    return hashlib.sha1(subnet.to_json().encode()).hexdigest()[:12]


def norm_tensor_name(subnet: SubnetConfig, bn_key: str, which: str) -> str:
    return f"subnet_norms.{subnet_id(subnet)}.{bn_key}.{which}"


def _full(shape: Iterable[int]) -> Box:
    return tuple((0, int(s)) for s in shape)


class _Builder:
    def __init__(self, net: SuperNet, subnet: SubnetConfig) -> None:
        self.net, self.subnet = net, subnet
        self.own = subnet in net.subnet_norms
        self.params = dict(net.named_parameters())
        self.regions: dict[str, list[Box]] = {}

    def add(self, name: str, box: Box) -> None:
        self.regions.setdefault(name, []).append(box)

    def prefix(self, name: str, *sizes: int) -> None:
        """The first `sizes[d]` entries of each leading dimension, all of the rest."""
        shape = self.params[name].shape
        self.add(name, tuple((0, s) for s in sizes) + _full(shape[len(sizes):]))

    def conv(self, prefix: str, out: int, inp: int, bias: bool = False) -> None:
        self.prefix(f"{prefix}.weight", out, inp)
        if bias:
            self.prefix(f"{prefix}.bias", out)

    def bn(self, prefix: str, c: int) -> None:
        self.prefix(f"{prefix}.weight", c)
        self.prefix(f"{prefix}.bias", c)
        if self.own:
            for which in ("mean", "var"):
                self.add(norm_tensor_name(self.subnet, prefix, which), ((0, c),))
        else:
            for which in ("running_mean", "running_var"):
                self.add(f"{prefix}.{which}", ((0, c),))

    def depthwise(self, prefix: str, channels: int, kernel: int) -> None:
        dw = self.net.get_submodule(prefix)
        choices = dw.kernel_choices
        if kernel not in choices:
            raise ValueError(f"kernel {kernel} not in {list(choices)}")
        big = dw.max_kernel
        if kernel == big:
            self.prefix(f"{prefix}.weight", channels)
            return
        if not dw.transform:  # the plain centre of the largest kernel
            start = (big - kernel) // 2
            self.add(f"{prefix}.weight",
                     ((0, channels), (0, 1), (start, start + kernel), (start, start + kernel)))
            return
        # Only the first transform step reads the raw weight: its centre at the next size down.
        s = choices[-2]
        start = (big - s) // 2
        self.add(f"{prefix}.weight", ((0, channels), (0, 1), (start, start + s), (start, start + s)))
        for hi, lo in zip(choices[::-1], choices[-2::-1], strict=False):
            if hi == kernel:
                break
            name = f"{prefix}.transforms.{hi}to{lo}"
            self.add(name, _full(self.params[name].shape))

    def mbconv(self, prefix: str, expand: float, kernel: int) -> None:
        block = self.net.get_submodule(prefix)
        h = block.hidden_channels(expand)
        if block.has_expand:
            self.conv(f"{prefix}.expand_conv", h, block.in_channels)
            self.bn(f"{prefix}.expand_bn", h)
        self.depthwise(f"{prefix}.dw", h, kernel)
        self.bn(f"{prefix}.dw_bn", h)
        if block.se is not None:
            mid = block.se.mid_channels(h)
            self.conv(f"{prefix}.se.reduce", mid, h, bias=True)
            self.conv(f"{prefix}.se.expand", h, mid, bias=True)
        self.conv(f"{prefix}.project", block.out_channels, h)
        self.bn(f"{prefix}.project_bn", block.out_channels)

    def bottleneck(self, prefix: str, inp: int, out: int, expand: float) -> None:
        block = self.net.get_submodule(prefix)
        mid = block.mid_channels(out, expand)
        self.conv(f"{prefix}.conv1", mid, inp)
        self.bn(f"{prefix}.bn1", mid)
        self.conv(f"{prefix}.conv2", mid, mid)
        self.bn(f"{prefix}.bn2", mid)
        self.conv(f"{prefix}.conv3", out, mid)
        self.bn(f"{prefix}.bn3", out)
        if block.downsample:
            self.conv(f"{prefix}.ds_conv", out, inp)
            self.bn(f"{prefix}.ds_bn", out)


def subnet_footprint(net: SuperNet, subnet: SubnetConfig) -> Footprint:
    """Every slice `net.extract(subnet)` (or `net(x, subnet)`) reads, exactly."""
    from ..models.mobilenetv3 import OFAMobileNetV3
    from ..models.resnet import OFAResNet

    net.space.validate(subnet)
    b = _Builder(net, subnet)
    if isinstance(net, OFAMobileNetV3):
        b.conv("stem", net.stem_w, net.in_channels)
        b.bn("stem_bn", net.stem_w)
        b.mbconv("first_block", 1, 3)
        for unit, i, expand, kernel in subnet.unit_blocks():
            b.mbconv(f"units.{unit}.{i}", expand, kernel)
        b.conv("final_expand", net.final_w, net.widths[-1])
        b.bn("final_bn", net.final_w)
        b.conv("feature_mix", net.feature_w, net.final_w)
        b.conv("classifier", net.num_classes, net.feature_w, bias=True)
    elif isinstance(net, OFAResNet):
        b.conv("stem", net.stem_w, net.in_channels)
        b.bn("stem_bn", net.stem_w)
        in_w = net.stem_w
        for unit, i, expand, _ in subnet.unit_blocks():
            out_w = net.stage_channels(unit, subnet.widths[unit])
            b.bottleneck(f"stages.{unit}.{i}", in_w, out_w, expand)
            in_w = out_w
        b.conv("classifier", net.num_classes, in_w, bias=True)
    else:
        raise ValueError(f"no footprint rule for SuperNet {type(net).__name__} ({net.name!r})")
    return Footprint(b.regions)


def extracted_difference(net: SuperNet, subnet: SubnetConfig) -> int:
    """Footprint parameter elements minus the extracted model's parameter elements.

    Non-zero only for depthwise kernels smaller than the largest: the footprint
    reads an s x s centre plus the transform matrices, the extracted model holds
    the baked k x k kernel.
    """
    fp = subnet_footprint(net, subnet)
    diff = 0
    for name, boxes in fp.items():
        if is_transform(name):
            diff += sum(_volume(b) for b in boxes)
        elif name.endswith("dw.weight"):
            for (c0, c1), _, (k0, k1), _ in boxes:
                full = net.get_parameter(name).shape[-1]
                if k1 - k0 != full:
                    kernel = _kernel_of(subnet, name[: -len(".dw.weight")])
                    diff += (c1 - c0) * ((k1 - k0) ** 2 - kernel**2)
    return diff


def _kernel_of(subnet: SubnetConfig, block_prefix: str) -> int:
    for unit, i, _, kernel in subnet.unit_blocks():
        if block_prefix == f"units.{unit}.{i}":
            return kernel
    raise ValueError(f"{block_prefix} is not an active block of {subnet.to_json()}")
