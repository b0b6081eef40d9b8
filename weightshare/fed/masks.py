"""Which elements of each SuperNet tensor a SubNet contains, and moving just those.

SuperFedNAS sends a client only the weights of its SubNet and aggregates each
element over exactly the clients whose SubNet contained it. "Contained" means
"read by that SubNet's forward": leading channels of a width-sliced conv, the
centre of a kernel for a smaller kernel size (OFA's 7->5->3 transforms read the
centre 5x5 of the 7x7 and the transform matrices), the first `d` blocks of a
stage, the matching slices of BN weights and running statistics.

Rather than restating every layer's slicing rule here (and drifting from it),
the masks are *recorded*: one eval forward of the SubNet runs under a
`TorchFunctionMode` that follows each parameter and buffer through indexing
(`w[:c]`, `w[:, :, 1:6, 1:6]`, ...) and marks the elements of every view that
reaches a computing op. Metadata queries (shape, size) mark nothing. A new
layer type is then covered for free, and a test checks that local training
changes nothing outside the mask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..checkpoint import plain
from ..models import SuperNet, create_supernet
from ..nn import NormContext
from ..space import SubnetConfig

__all__ = ["subnet_masks", "take", "put", "shared_names"]

Masks = dict[str, Tensor]

# Tensor methods that only read metadata: using a parameter through them reads no element.
_METADATA = {"size", "dim", "numel", "__len__", "__get__", "is_contiguous", "stride",
             "data_ptr", "is_floating_point", "element_size", "__hash__", "__format__"}


class _Recorder(TorchFunctionMode):
    """Marks which elements of the tracked tensors any computing op reads."""

    def __init__(self, named: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.masks = {name: torch.zeros(t.shape, dtype=torch.bool) for name, t in named.items()}
        # id -> (tensor kept alive so the id stays unique, name, flat element ids of the view)
        self.views: dict[int, tuple[Tensor, str, Tensor]] = {
            id(t): (t, name, torch.arange(t.numel()).view(t.shape)) for name, t in named.items()
        }

    def _mark(self, obj: object) -> None:
        if isinstance(obj, Tensor) and id(obj) in self.views:
            _, name, ids = self.views[id(obj)]
            self.masks[name].view(-1)[ids.reshape(-1)] = True
        elif isinstance(obj, list | tuple):
            for item in obj:
                self._mark(item)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        with torch._C.DisableTorchFunction():
            out = func(*args, **kwargs)
        src = args[0] if args else None
        if name == "__getitem__" and isinstance(src, Tensor) and id(src) in self.views:
            # Indexing makes a view: follow it instead of marking the whole source.
            _, pname, ids = self.views[id(src)]
            self.views[id(out)] = (out, pname, ids[args[1]])
        elif name not in _METADATA:
            self._mark(list(args))
            self._mark(list(kwargs.values()))
        return out


def _tracked(net: SuperNet) -> dict[str, Tensor]:
    """Floating-point parameters and buffers (the int step counters of BN are not shared)."""
    named = dict(net.named_parameters())
    named.update({n: b for n, b in net.named_buffers() if b.is_floating_point()})
    return named


def shared_names(net: SuperNet) -> list[str]:
    """Names of the tensors SuperFedNAS shares and aggregates, in state_dict order."""
    tracked = _tracked(net)
    return [n for n in net.state_dict() if n in tracked]


@torch.no_grad()
def _record(net: SuperNet, subnet: SubnetConfig) -> Masks:
    was_training = net.training
    net.eval()
    res = subnet.resolution or net.space.resolution
    x = torch.zeros(1, net.in_channels, res, res, device=next(net.parameters()).device)
    rec = _Recorder(_tracked(net))
    try:
        with rec:
            # Global statistics (not per-SubNet ones): the mask is about the shared buffers.
            net(x, subnet, norm=NormContext())
    finally:
        net.train(was_training)
    return {n: m for n, m in rec.masks.items() if bool(m.any())}


@lru_cache(maxsize=512)
def _cached(key: tuple[str, str], subnet: SubnetConfig) -> Masks:
    name, config_json = key
    net = create_supernet(name, **json.loads(config_json))
    return _record(net, subnet)


def subnet_masks(net: SuperNet, subnet: SubnetConfig) -> Masks:
    """{tensor name: bool mask of the elements `subnet` reads}; unused tensors are absent.

    Deterministic in (SuperNet name + config, subnet), so server and clients compute
    the same masks independently; cached per process.
    """
    net.space.validate(subnet)
    key = (net.name, json.dumps(plain(net.config), sort_keys=True))
    return _cached(key, subnet)


def take(state: Mapping[str, Tensor], masks: Masks) -> dict[str, Tensor]:
    """The masked elements of each tensor, as flat vectors (what goes over the wire)."""
    return {n: state[n].detach().reshape(-1)[m.reshape(-1)].clone() for n, m in masks.items()}


def put(state: Mapping[str, Tensor], masks: Masks, values: Mapping[str, Tensor]) -> None:
    """Write flat `values` back into the masked elements of `state`'s tensors, in place."""
    missing = set(masks) - set(values)
    if missing:
        raise ValueError(f"slice is missing tensors {sorted(missing)[:5]}")
    with torch.no_grad():
        for n, m in masks.items():
            flat_mask = m.reshape(-1)
            v = values[n].reshape(-1)
            if v.numel() != int(flat_mask.sum()):
                raise ValueError(f"slice of {n} has {v.numel()} values, its mask selects "
                                 f"{int(flat_mask.sum())}")
            t = state[n]
            flat = t.view(-1) if t.is_contiguous() else t.reshape(-1)
            flat[flat_mask] = v.to(t.dtype)
            if not t.is_contiguous():
                t.copy_(flat.view(t.shape))
