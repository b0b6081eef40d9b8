"""The ``torch`` executor: each deployed SubNet's elastic forward bound once as a *plan*.

At deploy time each SubNet gets a plan: a flat list of ops with every weight slice bound
once, in channels-last layout. Every 1x1 conv (nearly all the bytes) runs as a matmul on
the NHWC view with its weight a (strided) view of the SuperNet's, never a copy; the only
copies are the SubNet's transformed depthwise kernels and the stem, computed once with BN
folded in (reported as the plan's bytes). Per call the plan only checks a weight
fingerprint (rebuilt if any source tensor changed) and runs the ops. SuperNets without a
planner (`register_planner`) run `net(x, subnet)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...models import SuperNet
from ...space import SubnetConfig
from .base import ExecutorConfig, register_executor

if TYPE_CHECKING:
    from ...models.mobilenetv3 import OFAMobileNetV3

__all__ = ["LAYOUT", "PLANNERS", "Planner", "TorchExecutor", "register_planner"]


def _bytes(tensors: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class _Plan:
    """One SubNet's forward as bound ops, plus what it was derived from."""

    forward: Callable[[Tensor], Tensor]
    sources: tuple[tuple[Any, Any], ...]  # (module or dict, attribute or key) read when building
    signature: tuple[int, ...]
    copied: list[Tensor] = field(default_factory=list)  # tensors the plan owns (bytes held)


def _signature(sources: Sequence[tuple[Any, Any]]) -> tuple[int, ...]:
    # Identity and in-place version of every source tensor: an optimiser step, copy_,
    # load_state_dict or .to() changes one of them, and the plan is rebuilt on the next call.
    out: list[int] = []
    for owner, attr in sources:
        t = owner.get(attr) if isinstance(owner, dict) else getattr(owner, attr)
        if t is None or isinstance(t, dict):  # a SubNet's statistics replaced or removed
            out.append(id(t))
        elif isinstance(t, tuple):  # per-SubNet BN statistics (mean, var)
            out.extend((id(t[0]), t[0]._version, id(t[1]), t[1]._version))
        else:
            out.extend((id(t), t._version))
    return tuple(out)


Planner = Callable[[SuperNet, SubnetConfig], _Plan]
PLANNERS: dict[type, Planner] = {}


def register_planner(cls: type) -> Callable[[Planner], Planner]:
    def deco(fn: Planner) -> Planner:
        PLANNERS[cls] = fn
        return fn

    return deco


def _planner_for(net: SuperNet) -> Planner:
    for cls in type(net).__mro__:
        if cls in PLANNERS:
            return PLANNERS[cls]
    return _elastic_plan


def _elastic_plan(net: SuperNet, cfg: SubnetConfig) -> _Plan:
    """Any SuperNet: its own elastic forward (nothing cached, nothing to go stale)."""
    return _Plan(lambda x: net(x, cfg), (), ())


# Plans run channels-last: 1x1 convs become plain matmuls on the NHWC view (below), and
# depthwise convs in this layout measured faster at batch 16 on CPU.
LAYOUT = torch.channels_last

_ACT_INPLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": lambda t: F.relu(t, inplace=True),
    "hswish": lambda t: F.hardswish(t, inplace=True),
    "hsigmoid": lambda t: F.hardsigmoid(t, inplace=True),
    "identity": lambda t: t,
}


def _register_mbv3() -> None:
    from ...models.mobilenetv3 import OFAMobileNetV3
    from ...nn import ElasticBatchNorm2d

    @register_planner(OFAMobileNetV3)
    def mbv3_plan(net: OFAMobileNetV3, cfg: SubnetConfig) -> _Plan:
        stats = net.subnet_norms.get(cfg) or {}
        sources: list[tuple[Any, Any]] = [(net.subnet_norms, cfg)]
        copied: list[Tensor] = []

        def bn_terms(bn: ElasticBatchNorm2d, c: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            sources.extend([(bn, "weight"), (bn, "bias"), (bn, "running_mean"),
                            (bn, "running_var")])
            if bn.key in stats:
                sources.append((stats, bn.key))
                mean, var = stats[bn.key]
            else:
                mean, var = bn.running_mean[:c], bn.running_var[:c]
            return bn.weight[:c], bn.bias[:c], mean, var

        def fold(w: Tensor, bn: ElasticBatchNorm2d, c: int) -> tuple[Tensor, Tensor]:
            """BN folded into a copy of a (small) conv weight: one op instead of two."""
            g, b, mean, var = bn_terms(bn, c)
            scale = g / torch.sqrt(var + bn.eps)
            shape = (-1,) + (1,) * (w.dim() - 1)
            fw = (w * scale.view(shape)).contiguous(memory_format=LAYOUT)
            fb = (b - mean * scale).contiguous()
            copied.extend([fw, fb])
            return fw, fb

        def conv_bn(conv: Any, w: Tensor, bn: ElasticBatchNorm2d, c: int, stride: int,
                    groups: int, act: str) -> Callable[[Tensor], Tensor]:
            sources.append((conv, "weight"))
            k = w.shape[-1]
            a = _ACT_INPLACE[act]
            if k == 1 and groups == 1 and stride == 1:
                # A 1x1 conv on channels-last memory is one matmul over (N*H*W, C): F.linear on
                # the NHWC view, the weight a view of the SuperNet's even when strided (a
                # narrower input width), so the 1x1 convs -- nearly all the weights -- are never
                # copied. BN stays its own op on views (folding would copy the weight).
                g, b, mean, var = bn_terms(bn, c)
                eps = bn.eps
                w2 = w[:, :, 0, 0]
                return lambda x: a(F.batch_norm(
                    F.linear(x.permute(0, 2, 3, 1), w2).permute(0, 3, 1, 2), mean, var, g, b,
                    False, 0.0, eps))
            # Stem and depthwise kernels: small, and the transformed ones are computed anyway,
            # so BN is folded into a copy (one op instead of two).
            fw, fb = fold(w, bn, c)
            return lambda x: a(F.conv2d(x, fw, fb, stride, k // 2, 1, groups))

        ops: list[Callable[[Tensor], Tensor]] = []
        ops.append(conv_bn(net.stem, net.stem.weight, net.stem_bn, net.stem_w, net.stem_stride,
                           1, "hswish"))
        blocks = [(net.first_block, 1, 3)] + [(net.units[u][i], e, k)
                                              for u, i, e, k in cfg.unit_blocks()]
        for block, expand, kernel in blocks:
            hidden = block.hidden_channels(expand)
            parts: list[Callable[[Tensor], Tensor]] = []
            if block.has_expand:
                parts.append(conv_bn(block.expand_conv, block.expand_conv.weight[:hidden],
                                     block.expand_bn, hidden, 1, 1, block.act))
            sources.append((block.dw, "weight"))
            sources.extend((block.dw.transforms, t) for t in block.dw.transforms)
            with torch.no_grad():
                dw_w = block.dw.kernel_weight(hidden, kernel)
            parts.append(conv_bn(block.dw, dw_w, block.dw_bn, hidden, block.stride, hidden,
                                 block.act))
            if block.se is not None:
                se = block.se
                mid = se.mid_channels(hidden)
                sources.extend([(se.reduce, "weight"), (se.reduce, "bias"),
                                (se.expand, "weight"), (se.expand, "bias")])
                # Strided views of the 1x1 SE weights used as matrices: no copy.
                rw = se.reduce.weight[:mid, :hidden, 0, 0]
                rb = se.reduce.bias[:mid]
                ew = se.expand.weight[:hidden, :mid, 0, 0]
                eb = se.expand.bias[:hidden]

                def se_op(h: Tensor, rw=rw, rb=rb, ew=ew, eb=eb) -> Tensor:
                    y = F.relu(F.linear(h.mean((2, 3)), rw, rb), inplace=True)
                    y = F.hardsigmoid(F.linear(y, ew, eb), inplace=True)
                    return h * y[:, :, None, None]

                parts.append(se_op)
            pw = block.project.weight[:, :hidden]
            parts.append(conv_bn(block.project, pw, block.project_bn, block.out_channels, 1, 1,
                                 "identity"))
            ops.append(_chain(parts, block.residual))
        ops.append(conv_bn(net.final_expand, net.final_expand.weight, net.final_bn, net.final_w,
                           1, 1, "hswish"))
        sources.extend([(net.feature_mix, "weight"), (net.classifier, "weight"),
                        (net.classifier, "bias")])
        mix = net.feature_mix.weight[:, :, 0, 0]
        cw, cb = net.classifier.weight, net.classifier.bias

        def head(x: Tensor) -> Tensor:
            return F.linear(F.hardswish(F.linear(x.mean((2, 3)), mix), inplace=True), cw, cb)

        ops.append(head)
        ops_t = tuple(ops)

        def forward(x: Tensor) -> Tensor:
            x = x.contiguous(memory_format=LAYOUT)
            for op in ops_t:
                x = op(x)
            return x

        return _Plan(forward, tuple(sources), _signature(sources), copied)


def _chain(parts: Sequence[Callable[[Tensor], Tensor]], residual: bool
           ) -> Callable[[Tensor], Tensor]:
    parts = tuple(parts)
    if residual:
        def block(x: Tensor) -> Tensor:
            h = x
            for p in parts:
                h = p(h)
            return h.add_(x)
    else:
        def block(x: Tensor) -> Tensor:
            for p in parts:
                x = p(x)
            return x
    return block


_register_mbv3()


@register_executor("torch")
class TorchExecutor:
    """The elastic forward with each deployed SubNet's plan built once (see module doc)."""

    name = "torch"

    def __init__(self, net: SuperNet, subnets: dict[str, SubnetConfig],
                 config: ExecutorConfig | None = None) -> None:
        self.net = net
        self.subnets = dict(subnets)
        self._planner = _planner_for(net)
        self._lock = threading.Lock()
        self._plans: dict[str, _Plan] = {}
        self.rebuilds = 0
        for name in self.subnets:
            self._plans[name] = self._build(name)

    def _build(self, name: str) -> _Plan:
        with torch.no_grad():
            return self._planner(self.net, self.subnets[name])

    def plan(self, name: str) -> _Plan:
        try:
            plan = self._plans[name]
        except KeyError:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {list(self.subnets)}"
                             ) from None
        if plan.signature != _signature(plan.sources):
            with self._lock:  # weights changed since deploy: rebuild this SubNet's plan once
                plan = self._plans[name]
                if plan.signature != _signature(plan.sources):
                    plan = self._plans[name] = self._build(name)
                    self.rebuilds += 1
        return plan

    def invalidate(self) -> None:
        """Rebuild every plan now (after replacing weights in a way versions cannot see)."""
        with self._lock:
            self._plans = {n: self._build(n) for n in self.subnets}

    def run(self, batch: Tensor, subnet: str) -> Tensor:
        plan = self.plan(subnet)
        with torch.inference_mode():
            return plan.forward(batch)

    def path(self, subnet: str) -> str:
        return "torch"

    def memory(self) -> dict[str, Any]:
        per = {n: _bytes(p.copied) for n, p in self._plans.items()}
        return {"executor": self.name, "extra_bytes": sum(per.values()),
                "plan_copied_bytes": per}

    def close(self) -> None:
        pass
