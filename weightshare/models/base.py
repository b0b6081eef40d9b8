"""The SuperNet interface and the registry that maps names to SuperNets.

A SuperNet runs any SubNet of its `space`: `forward(x, subnet)`. It never
remembers which SubNet ran last, so threads may run different SubNets at once.
Per-SubNet BN statistics (SubnetNorm) live in `subnet_norms`, a map from
SubnetConfig to that SubNet's statistics, read by forward in eval mode.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import ElasticBatchNorm2d, NormContext
from ..nn.blocks import Permuter, permute_tensor_
from ..registry import Registry
from ..space import SearchSpace, SubnetConfig

__all__ = [
    "Cost",
    "SuperNet",
    "StaticNet",
    "register_supernet",
    "create_supernet",
    "list_supernets",
    "optimizer_permuter",
    "supernet_defaults",
]


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one SubNet at its resolution (batch 1): conv/linear MACs, parameters."""

    macs: int
    params: int

    def to_dict(self) -> dict[str, int]:
        return {"macs": self.macs, "params": self.params}


BNStats = dict[str, tuple[Tensor, Tensor]]


class StaticNet(nn.Module):
    """An extracted SubNet: an ordinary feed-forward torch module (features, then head)."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential, subnet: SubnetConfig) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.subnet_json = subnet.to_json()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SuperNet(nn.Module, ABC):
    """Base class: subclasses build layers, then call `_finish_init()`."""

    name: str = ""
    space: SearchSpace
    num_classes: int
    in_channels: int
    # Layers of an extracted network's `features` before and after the elastic blocks
    # (e.g. stem and fixed first block | final conv): lets per-layer tools such as the
    # latency table map extracted layers back to blocks.
    fixed_prefix_layers: int = 0
    fixed_suffix_layers: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.subnet_norms: dict[SubnetConfig, BNStats] = {}

    def _finish_init(self) -> None:
        # Each BN gets a stable key (its qualified name) for per-SubNet statistics.
        for name, module in self.named_modules():
            if isinstance(module, ElasticBatchNorm2d):
                module.key = name

    # ----------------------------------------------------------------- running
    def norm_for(self, subnet: SubnetConfig) -> NormContext:
        """The norm context of a SubNet: its own statistics if it has any."""
        return NormContext(stats=self.subnet_norms.get(subnet))

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name} expects input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, subnet: SubnetConfig, *, dropout: float = 0.0,
                norm: NormContext | None = None) -> Tensor:
        """Run `subnet` on `x`. `dropout` applies before the classifier in training mode."""
        self.space.validate(subnet)
        self.check_input(x)
        return self._forward(x, subnet, dropout, norm if norm is not None else self.norm_for(subnet))

    @abstractmethod
    def _forward(self, x: Tensor, subnet: SubnetConfig, dropout: float,
                 norm: NormContext) -> Tensor: ...

    # -------------------------------------------------------------- extraction
    def extract(self, subnet: SubnetConfig) -> StaticNet:
        """Copy `subnet` out as a static network (sliced weights, its BN statistics), in eval mode."""
        self.space.validate(subnet)
        with torch.no_grad():
            net = self._extract(subnet, self.norm_for(subnet))
        return net.eval()

    @abstractmethod
    def _extract(self, subnet: SubnetConfig, norm: NormContext) -> StaticNet: ...

    # --------------------------------------------------------------------- cost
    def cost(self, subnet: SubnetConfig) -> Cost:
        """MACs and parameters of `subnet`, analytic (no tensors), equal to its extracted model's."""
        self.space.validate(subnet)
        return self._cost(subnet, self.space.resolution_of(subnet))

    @abstractmethod
    def _cost(self, subnet: SubnetConfig, resolution: int) -> Cost: ...

    def input_shape(self, subnet: SubnetConfig | None = None) -> tuple[int, int, int]:
        res = self.space.resolution_of(subnet) if subnet is not None else self.space.resolution
        return (self.in_channels, res, res)

    # --------------------------------------------------------------- reordering
    def reorder_channels(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Sort every block's hidden channels by importance (L1), in place.

        The largest SubNet computes the same function afterwards; narrower SubNets
        now use the most important channels. With `optimizer`, its per-parameter
        state (momentum) is permuted the same way, so training continues smoothly.
        Per-SubNet statistics refer to the old channel order, so they are dropped
        (recalibrate after reordering).
        """

        apply = optimizer_permuter(optimizer)
        for module in self.modules():
            if module is not self and hasattr(module, "reorder_channels_"):
                module.reorder_channels_(apply)
        self.subnet_norms.clear()

    # ----------------------------------------------------------- subnet norms
    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # .to(device) / .half() must move per-SubNet statistics along with the buffers.
        out = super()._apply(fn, recurse)
        for cfg, stats in self.subnet_norms.items():
            self.subnet_norms[cfg] = {k: (fn(m), fn(v)) for k, (m, v) in stats.items()}
        return out

    def set_subnet_stats(self, subnet: SubnetConfig, stats: BNStats) -> None:
        self.space.validate(subnet)
        self.subnet_norms[subnet] = {k: (m.detach().clone(), v.detach().clone())
                                     for k, (m, v) in stats.items()}


def optimizer_permuter(optimizer: torch.optim.Optimizer | None) -> Permuter:
    """The `Permuter` every SuperNet's `reorder_channels` hands its layers: it reorders a
    tensor in place and, with `optimizer`, that tensor's per-parameter state of the same
    shape (momentum, Adam moments), so training continues as if the channels had always
    been in the new order.

    One home for the built-in SuperNets and the converted one (convert builds on models,
    so it lives here): a state a reordering forgot would pair the moved weights with
    another channel's momentum.
    """

    def apply(t: Tensor, dim: int, perm: Tensor) -> None:
        permute_tensor_(t, dim, perm)
        state = optimizer.state.get(t) if optimizer is not None else None
        for value in (state or {}).values():
            if isinstance(value, Tensor) and value.shape == t.shape:
                permute_tensor_(value, dim, perm)

    return apply


# ------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Entry:
    cls: type[SuperNet]
    defaults: dict[str, Any]
    description: str


_REGISTRY: Registry[_Entry] = Registry("SuperNet")


def register_supernet(name: str, defaults: dict[str, Any] | None = None,
                      description: str = "") -> Callable[[type[SuperNet]], type[SuperNet]]:
    """Register a SuperNet class under `name` with default constructor arguments.

    The same class may be registered several times (e.g. a 224 px and a 28 px
    layout of one architecture) with different defaults.
    """

    def deco(cls: type[SuperNet]) -> type[SuperNet]:
        _REGISTRY.add(name, _Entry(cls, dict(defaults or {}), description))
        return cls

    return deco


def list_supernets() -> list[str]:
    return _REGISTRY.names()


def supernet_defaults(name: str) -> dict[str, Any]:
    entry = _REGISTRY.get(name)
    cls, defaults = entry.cls, entry.defaults
    params = inspect.signature(cls.__init__).parameters
    full = {k: p.default for k, p in params.items()
            if k != "self" and p.default is not inspect.Parameter.empty}
    full.update(defaults)
    return full


def supernet_description(name: str) -> str:
    return _REGISTRY.get(name).description


def create_supernet(name: str, **kwargs: Any) -> SuperNet:
    """Build a registered SuperNet; `kwargs` override its defaults (see `supernet_defaults`)."""
    cls = _REGISTRY.get(name).cls
    config = supernet_defaults(name)
    unknown = set(kwargs) - set(config)
    if unknown:
        raise ConfigError(
            f"unknown argument(s) {sorted(unknown)} for SuperNet {name!r}; "
            f"allowed: {sorted(config)}"
        )
    config.update(kwargs)
    # JSON round-trips turn tuples into lists; the constructors take tuples.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    net = cls(**config)
    net.name = name
    net.config = config
    return net
