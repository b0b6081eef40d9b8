"""Switching and caching on small devices: exact weight footprints, FastSwitch, SUSHI.

- `footprint`: which slices of which SuperNet tensors a SubNet reads, exactly;
  intersection (shared SubGraph) and delta between two SubNets.
- `fastswitch`: switch SubNets by reading only the delta from a memory-mapped
  safetensors SuperNet file (vs. loading a whole extracted model).
- `device`, `cells`, `cache`, `sim`: a SUSHI-style simulator of a small
  accelerator with an on-chip weight cache (none / LRU / SubGraph Stationary)
  and a cache-aware scheduler.
- `run`: glue used by the CLI and the benchmark (traces, sweeps, FastSwitch pairs).
- FastSwitch plugs into the server as the ``delta`` switch mode
  (`fastswitch.delta_switch_backend`, an entry point `weightshare.serve.backends`
  loads); the live normal-vs-delta comparison is `weightshare.experiments.fastswitch_live`.
"""

from .cache import CachePolicy, list_caches, make_cache, register_cache
from .device import DEVICES, Device, get_device, list_devices, register_device
from .fastswitch import DeltaLoader, FullLoader, SwitchStats, save_supernet_weights
from .footprint import Footprint, subnet_footprint
from .sim import (
    AccelModel,
    AccelSubnet,
    SimConfig,
    SimResult,
    list_schedulers,
    make_scheduler,
    register_scheduler,
    scale_arrivals,
    simulate,
)

__all__ = [
    "CachePolicy", "list_caches", "make_cache", "register_cache",
    "DEVICES", "Device", "get_device", "list_devices", "register_device",
    "DeltaLoader", "FullLoader", "SwitchStats", "save_supernet_weights",
    "Footprint", "subnet_footprint",
    "AccelModel", "AccelSubnet", "SimConfig", "SimResult", "list_schedulers",
    "make_scheduler", "register_scheduler", "scale_arrivals", "simulate",
]
