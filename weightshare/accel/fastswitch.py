"""FastSwitch: switch SubNets by loading only the weight slices that differ.

For devices that keep only the current SubNet's weights in memory. The SuperNet
is written once as a safetensors file (`save_supernet_weights`: its state dict
plus every SubNet's own BN statistics as ``subnet_norms.<id>.<bn key>.mean|var``).
`DeltaLoader` holds a SuperNet-shaped set of resident tensors of which only the
current SubNet's footprint is valid; `switch(b)` reads ``footprint(b) -
footprint(current)`` from the memory-mapped file with `safe_open(...).get_slice`
(only the requested region is read) into those tensors in place, and reuses the
shared SubGraph as it is. The result runs as `loader.net(x, b)` or
`loader.extract()`.

`FullLoader` is the baseline: each SubNet's extracted model saved with
`torch.save`, loaded whole (`torch.load(weights_only=True)` into a skeleton).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_path
from ..models import StaticNet, SuperNet
from ..space import SubnetConfig
from .footprint import Footprint, norm_tensor_name, subnet_footprint, subnet_id

__all__ = ["save_supernet_weights", "SwitchStats", "DeltaLoader", "FullLoader",
           "DeltaSwitchRuntime", "delta_switch_backend"]


def save_supernet_weights(net: SuperNet, path: str | os.PathLike) -> Path:
    """Write `net`'s tensors and its SubNets' own BN statistics as one safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    for cfg, stats in net.subnet_norms.items():
        for key, (mean, var) in stats.items():
            tensors[norm_tensor_name(cfg, key, "mean")] = mean.detach().contiguous().cpu()
            tensors[norm_tensor_name(cfg, key, "var")] = var.detach().contiguous().cpu()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "weightshare-fastswitch"})
    return Path(path)


@dataclass(frozen=True)
class SwitchStats:
    """One switch: bytes read from storage, wall time (s), tensors touched."""

    bytes_read: int
    seconds: float
    tensors: int


class DeltaLoader:
    """Resident weights of one SubNet at a time, switched by delta reads.

    `skeleton` is a SuperNet of the file's architecture; its tensors become the
    resident storage (their prior contents are never trusted: `fill` overwrites
    them first, e.g. NaN in tests, so a missing slice cannot go unnoticed).
    """

    def __init__(self, skeleton: SuperNet, path: str | os.PathLike,
                 fill: float | None = None) -> None:
        from safetensors import safe_open

        self.net = skeleton.eval()
        self.net.subnet_norms.clear()
        self.path = Path(path)
        self._file = safe_open(str(self.path), framework="pt")
        self._names = set(self._file.keys())
        self._tensors = {k: v for k, v in self.net.state_dict(keep_vars=True).items()}
        if fill is not None:
            with torch.no_grad():
                for t in self._tensors.values():
                    if t.is_floating_point():
                        t.fill_(fill)
        self.current: SubnetConfig | None = None
        self.footprint = Footprint()
        self._own: dict[str, torch.Tensor] = {}

    def footprint_of(self, subnet: SubnetConfig, own_stats: bool | None = None) -> Footprint:
        """`subnet`'s footprint, reading its own BN statistics when the file has them."""
        if own_stats is None:
            prefix = f"subnet_norms.{subnet_id(subnet)}."
            own_stats = any(n.startswith(prefix) for n in self._names)
        if own_stats:
            self.net.subnet_norms.setdefault(subnet, {})
        try:
            return subnet_footprint(self.net, subnet)
        finally:
            if subnet != self.current:
                self.net.subnet_norms.pop(subnet, None)

    @torch.no_grad()
    def switch(self, subnet: SubnetConfig) -> SwitchStats:
        t0 = time.perf_counter()
        target = self.footprint_of(subnet)
        delta = target - self.footprint
        read = 0
        own: dict[str, torch.Tensor] = {}
        for name, boxes in delta.items():
            if name not in self._names:
                raise ValueError(f"{self.path}: no tensor {name!r} (written by another SuperNet?)")
            sl = self._file.get_slice(name)
            if name.startswith("subnet_norms."):
                part = sl[:]  # a SubNet's own statistics: small, read whole
                own[name] = part
                read += part.numel() * part.element_size()
                continue
            dest = self._tensors[name]
            for box in boxes:
                index = tuple(slice(a, b) for a, b in box)
                part = sl[index]
                dest[index].copy_(part)
                read += part.numel() * part.element_size()
        # Own statistics stay as separate tensors; keep the ones still in the footprint.
        self._own = {k: v for k, v in self._own.items() if k in target} | own
        self.net.subnet_norms.clear()
        if any(n.startswith("subnet_norms.") for n in target):
            stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for name in target:
                if name.startswith("subnet_norms.") and name.endswith(".mean"):
                    key = name.split(".", 2)[2][: -len(".mean")]
                    stats[key] = (self._own[name], self._own[name[: -len("mean")] + "var"])
            self.net.subnet_norms[subnet] = stats
        self.current, self.footprint = subnet, target
        return SwitchStats(read, time.perf_counter() - t0, len(delta))

    def extract(self) -> StaticNet:
        if self.current is None:
            raise ValueError("no SubNet loaded yet: call switch() first")
        return self.net.extract(self.current)

    def resident_bytes(self, bits: int = 32) -> int:
        """What a device holding only the current SubNet keeps in memory."""
        return self.footprint.nbytes(bits)


class FullLoader:
    """Baseline: every SubNet's extracted model as its own file, loaded whole per switch."""

    def __init__(self, net: SuperNet, subnets: Sequence[SubnetConfig],
                 directory: str | os.PathLike) -> None:
        from ..checkpoint import atomic_torch_save

        self.dir = Path(directory)
        self.paths: dict[SubnetConfig, Path] = {}
        self.skeletons: dict[SubnetConfig, nn.Module] = {}
        for i, cfg in enumerate(subnets):
            model = net.extract(cfg)
            path = self.dir / f"subnet_{i}.pt"
            atomic_torch_save(model.state_dict(), path)
            self.paths[cfg] = path
            self.skeletons[cfg] = model.to("meta")

    def load(self, subnet: SubnetConfig) -> tuple[nn.Module, SwitchStats]:
        t0 = time.perf_counter()
        state = torch.load(self.paths[subnet], map_location="cpu", weights_only=True)
        module = copy.deepcopy(self.skeletons[subnet])
        module.load_state_dict(state, assign=True)
        seconds = time.perf_counter() - t0
        return module.eval(), SwitchStats(self.paths[subnet].stat().st_size, seconds, len(state))


class DeltaSwitchRuntime:
    """A serving backend holding one SubNet at a time, switched by delta reads (FastSwitch).

    Same interface as the serving runtimes (`run(batch, name)`, `prepare(name)`):
    `prepare` switches to `name` if it is not current; `run` prepares, then runs
    the resident weights. The SuperNet is written once to `directory` as the
    safetensors file the deltas are read from.
    """

    kind = "fastswitch-delta"

    def __init__(self, net: SuperNet, deployed: dict[str, SubnetConfig],
                 directory: str | os.PathLike) -> None:
        import threading

        from ..models import create_supernet

        if not deployed:
            raise ValueError("deploy at least one SubNet")
        self.deployed = dict(deployed)
        path = save_supernet_weights(net, Path(directory) / "supernet.safetensors")
        self.loader = DeltaLoader(create_supernet(net.name, **net.config), path)
        for p in self.loader.net.parameters():
            p.requires_grad_(False)
        self.current: str | None = None
        self.loads = 0
        self.load_s = 0.0
        self.bytes_read = 0
        self.peak_resident_bytes = 0
        self.metrics: Any = None  # a ServeMetrics once a server's worker attaches one
        self._lock = threading.Lock()

    def attach_metrics(self, metrics: Any) -> None:
        """Report every switch to `metrics` (a `ServeMetrics`): the server's worker calls
        this, so `/metrics` shows weightshare_switch_bytes_total and _seconds_total."""
        self.metrics = metrics

    def prepare(self, name: str) -> float:
        if name not in self.deployed:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {list(self.deployed)}")
        with self._lock:
            return self._switch_to(name)

    def _switch_to(self, name: str) -> float:
        # Callers hold the lock.
        if name == self.current:
            return 0.0
        stats = self.loader.switch(self.deployed[name])
        self.current = name
        self.loads += 1
        self.load_s += stats.seconds
        self.bytes_read += stats.bytes_read
        self.peak_resident_bytes = max(self.peak_resident_bytes, self.loader.resident_bytes())
        if self.metrics is not None:
            self.metrics.record_switch(stats.bytes_read, stats.seconds)
        return stats.seconds

    def resident_bytes(self) -> int:
        """Bytes of the current SubNet's weights (fp32): all a one-SubNet device must hold."""
        return self.loader.resident_bytes()

    def run(self, batch: torch.Tensor, name: str) -> torch.Tensor:
        import torch.nn.functional as F

        cfg = self.deployed.get(name)
        if cfg is None:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {list(self.deployed)}")
        res = self.loader.net.space.resolution_of(cfg)
        with self._lock:  # a switch must not land mid-forward
            self._switch_to(name)
            with torch.inference_mode():
                if batch.shape[-1] != res or batch.shape[-2] != res:
                    batch = F.interpolate(batch, size=(res, res), mode="bilinear",
                                          align_corners=False)
                return self.loader.net(batch, cfg)


def delta_switch_backend(runtime: Any, directory: str) -> DeltaSwitchRuntime:
    """The ``delta`` switch mode of `weightshare serve --switch-mode` (a
    `weightshare.serve.backends` builder, declared as an entry point in pyproject.toml so
    the server finds it without importing this package)."""
    return DeltaSwitchRuntime(runtime.net, {n: d.subnet for n, d in runtime.deployed.items()},
                              directory)
