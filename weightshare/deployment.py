"""Deployment as a noun: which SubNets of a checkpoint are deployed, and the frontier file.

One home for what search writes and serve, accel and fed read:

* `DeployedSubnet` -- one SubNet a server or device may choose: its name, config,
  MACs, parameters and test accuracy (%). The serving profile, the runtimes, the
  accelerator simulator and FastSwitch all hold these.
* `name_by_macs` -- the one rule that names deployed SubNets s0, s1, ... by
  increasing MACs (ties keep their order).
* The frontier file: `FrontierPoint`, `save_frontier` (the one writer, atomic) and
  `read_frontier` / `load_frontier` (the one reader). The format is::

      {"format": "weightshare-frontier", "version": 1, "supernet": {...},
       "latency_table": {...} | null, ...,
       "frontier": [{"subnet": {...}, "predicted_acc": 71.2, "measured_acc": 70.8,
                     "macs": 12345678, "params": 234567, "latency_ms": 1.9}, ...]}

  The reader also accepts the older shapes still on disk: a bare JSON list of
  ``{"subnet": {...}, "acc" | "measured_acc": ...}`` (what `weightshare demo` wrote
  before) and any object with such a list under ``"frontier"`` or ``"subnets"``
  (a serving profile names its deployed SubNets that way). ``"acc"`` reads as the
  measured accuracy.
* `load_deployment` -- a checkpoint plus a frontier file as named `DeployedSubnet`s.
* `dataset_meta` / `dataset_for` -- the dataset a checkpoint was trained on: the
  record a trainer writes as ``meta["dataset"]`` (federated runs do), read back (or,
  for older checkpoints, the training config they saved) with the same seed and
  calibration split, so accuracies are measured on the data the SuperNet saw.

No torch import at module level: the search, the simulator and the CLI read
frontiers without loading torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import WeightshareError
from .io import atomic_write_text, read_json
from .space import SubnetConfig

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .data import Dataset
    from .models import SuperNet

__all__ = [
    "FRONTIER_FORMAT",
    "FRONTIER_VERSION",
    "DeployedSubnet",
    "Frontier",
    "FrontierError",
    "FrontierPoint",
    "dataset_for",
    "dataset_meta",
    "dataset_recipe",
    "deploy",
    "load_deployment",
    "load_frontier",
    "name_by_macs",
    "read_frontier",
    "save_frontier",
]

FRONTIER_FORMAT = "weightshare-frontier"
FRONTIER_VERSION = 1

T = TypeVar("T")


class FrontierError(WeightshareError, ValueError):
    """A frontier file is unreadable, foreign, empty or lacks what its reader needs."""


# ------------------------------------------------------------------ deployed SubNets
@dataclass(frozen=True)
class DeployedSubnet:
    """One SubNet the server may choose: its name, config, cost and test accuracy (%)."""

    name: str
    subnet: SubnetConfig
    macs: int
    params: int
    acc: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "subnet": self.subnet.to_dict(), "macs": self.macs,
                "params": self.params, "acc": self.acc}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeployedSubnet:
        return cls(str(d["name"]), SubnetConfig.from_dict(d["subnet"]), int(d["macs"]),
                   int(d["params"]), float(d["acc"]))


def name_by_macs(items: Iterable[T], key: Callable[[T], Any], prefix: str = "s"
                 ) -> list[tuple[str, T]]:
    """`items` sorted by `key` (their MACs, or (MACs, tie-break)), named s0, s1, ...

    The sort is stable, so items with equal keys keep the order they came in.
    """
    return [(f"{prefix}{i}", item) for i, item in enumerate(sorted(items, key=key))]


def deploy(net: SuperNet, subnets: Sequence[SubnetConfig], accs: Sequence[float]
           ) -> tuple[DeployedSubnet, ...]:
    """`subnets` with their accuracies as DeployedSubnets named s0.. by MACs on `net`."""
    if len(accs) != len(subnets):
        raise ValueError("one accuracy per SubNet")
    costs = {c: net.cost(c) for c in subnets}
    pairs = name_by_macs(zip(subnets, accs, strict=True), key=lambda p: costs[p[0]].macs)
    return tuple(DeployedSubnet(name, c, costs[c].macs, costs[c].params, round(float(a), 4))
                 for name, (c, a) in pairs)


# ------------------------------------------------------------------ the frontier file
def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class FrontierPoint:
    """One SubNet of a frontier. Search fills every field; an older deploy list only the
    SubNet and its measured accuracy (the rest None)."""

    subnet: SubnetConfig
    predicted_acc: float | None
    measured_acc: float | None
    macs: int | None
    params: int | None
    latency_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": self.subnet.to_dict(), "predicted_acc": self.predicted_acc,
                "measured_acc": self.measured_acc, "macs": self.macs, "params": self.params,
                "latency_ms": self.latency_ms}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontierPoint:
        measured = d.get("measured_acc", d.get("acc"))  # "acc": the older deploy lists
        return cls(SubnetConfig.from_dict(d["subnet"]), _opt_float(d.get("predicted_acc")),
                   _opt_float(measured), _opt_int(d.get("macs")), _opt_int(d.get("params")),
                   _opt_float(d.get("latency_ms")))


@dataclass
class Frontier:
    """A frontier file's points and what it says about where they come from.

    supernet: the SuperNet identity the search stored (None in older files);
    extra: every other top-level field (latency table, targets, ...);
    legacy: the file is one of the older shapes (see the module docstring).
    """

    points: list[FrontierPoint]
    supernet: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False


def save_frontier(path: str | os.PathLike, points: Sequence[FrontierPoint], *,
                  supernet: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> Path:
    """Write the frontier file (temp file + rename: a kill never leaves half of one)."""
    doc = {"format": FRONTIER_FORMAT, "version": FRONTIER_VERSION, "supernet": supernet,
           **(extra or {}), "frontier": [p.to_dict() for p in points]}
    return atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def read_frontier(path: str | os.PathLike) -> Frontier:
    """Read a frontier file in the current format or one of the older shapes."""
    path = Path(path)
    doc = read_json(path, "frontier file", FrontierError)
    legacy = not (isinstance(doc, dict) and doc.get("format") == FRONTIER_FORMAT)
    supernet, extra = None, {}
    entries: Any = doc
    if isinstance(doc, dict):
        if not legacy:
            version = doc.get("version", FRONTIER_VERSION)
            if not isinstance(version, int) or version > FRONTIER_VERSION:
                raise FrontierError(f"{path}: frontier version {version!r} is newer than this "
                                    f"weightshare reads ({FRONTIER_VERSION}); upgrade weightshare")
            supernet = doc.get("supernet")
            extra = {k: v for k, v in doc.items()
                     if k not in ("format", "version", "supernet", "frontier")}
        entries = doc.get("frontier", doc.get("subnets"))
    if not isinstance(entries, list) or not entries:
        raise FrontierError(f"{path}: expected a weightshare frontier (\"format\": "
                            f"{FRONTIER_FORMAT!r}) or a non-empty JSON list of "
                            "{\"subnet\": ..., \"acc\": ...} entries")
    points = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "subnet" not in entry:
            raise FrontierError(f"{path}: entry {i} has no 'subnet'")
        try:
            points.append(FrontierPoint.from_dict(entry))
        except (KeyError, TypeError, ValueError) as err:
            raise FrontierError(f"{path}: entry {i}: malformed frontier entry ({err})") from None
    return Frontier(points, supernet, extra, legacy)


def load_frontier(path: str | os.PathLike) -> list[FrontierPoint]:
    """The points of a frontier file (see `read_frontier`)."""
    return read_frontier(path).points


def load_deployment(checkpoint: str | os.PathLike, frontier: str | os.PathLike
                    ) -> tuple[SuperNet, tuple[DeployedSubnet, ...]]:
    """The checkpoint's SuperNet (eval mode) and the frontier's SubNets, named s0.. by MACs.

    Every SubNet needs a measured accuracy: a scheduler choosing by accuracy has nothing
    to go on otherwise.
    """
    from .checkpoint import load_checkpoint

    net = load_checkpoint(checkpoint).supernet.eval()
    points = load_frontier(frontier)
    for p in points:
        net.space.validate(p.subnet)
        if p.measured_acc is None:
            raise FrontierError(f"{frontier}: SubNet {p.subnet.to_json()} has no accuracy "
                                "('acc' or 'measured_acc'); the scheduler needs one per SubNet")
    return net, deploy(net, [p.subnet for p in points],
                       [float(p.measured_acc) for p in points])  # type: ignore[arg-type]


# ---------------------------------------------------------- the checkpoint's dataset
def dataset_meta(dataset: str, *, data_dir: str | None = None, seed: int = 0,
                 calib_size: int | None = None, test_subset: int | None = None,
                 dataset_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record a trainer stores as the checkpoint's ``meta["dataset"]``: how it loaded
    its data, so that evaluation, search and serving load the same calib and test images."""
    return {"dataset": dataset, "data_dir": data_dir or None, "seed": int(seed),
            "calib_size": calib_size, "test_subset": test_subset or None,
            "dataset_args": dict(dataset_args or {})}


def dataset_recipe(ck: Checkpoint) -> dict[str, Any]:
    """How the checkpoint's training loaded its data: {"dataset", "data_dir", "seed",
    "calib_size", "test_subset", "dataset_args"} (keys it did not save are absent).

    Read from ``meta["dataset"]`` (`dataset_meta`; federated runs write it), else from
    what older checkpoints hold: central training's config (``train_state["config"]``)
    or a federated run's (``train_state["fed"]["config"]``, data folder ``data_root``).
    """
    meta = (ck.meta or {}).get("dataset")
    if isinstance(meta, dict) and meta.get("dataset"):
        return {k: v for k, v in meta.items() if v is not None}
    state = ck.train_state or {}
    cfg = state.get("config")
    if isinstance(cfg, dict):
        return dict(cfg)
    fed = (state.get("fed") or {}).get("config") if isinstance(state.get("fed"), dict) else None
    if isinstance(fed, dict):
        out = {k: fed[k] for k in ("dataset", "seed", "calib_size") if k in fed}
        if fed.get("test_subset"):  # 0 there means the whole test split
            out["test_subset"] = fed["test_subset"]
        if fed.get("data_root"):
            out["data_dir"] = fed["data_root"]
        return out
    return {}


def dataset_for(ck: Checkpoint, name: str | None = None,
                root: str | os.PathLike | None = None) -> Dataset:
    """The dataset a checkpoint was trained on (its saved training config), unless named.

    The same seed and calib size give the same calib / test images as training.
    """
    from .data import load_dataset

    cfg = dataset_recipe(ck)
    if name is not None and name != cfg.get("dataset", name):
        cfg = {}  # another dataset: its training options do not apply
    return load_dataset(
        name or cfg.get("dataset", "fashion-mnist"),
        root if root is not None else cfg.get("data_dir"),
        calib_size=cfg.get("calib_size"), seed=int(cfg.get("seed", 0)),
        test_subset=cfg.get("test_subset"), **dict(cfg.get("dataset_args") or {}),
    )
