"""Typed settings of a federated run, and their flat form for Flower's run config.

The same `FedConfig` drives the in-process simulation (passed directly) and a
deployment through SuperLink + SuperNodes, where it travels as the app's
`run_config` (flat str/int/float/bool values: `to_run_config` / `from_run_config`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError

__all__ = ["FedConfig", "MODES", "BN_MODES", "WEIGHTINGS"]

# superfednas: weight-shared SubNets per client; fedavg: every client trains `subnet`.
MODES = ("superfednas", "fedavg")
# train: BN trained and its statistics aggregated, recalibrated before evaluation.
# identity: the reference's default (no --use_bn): every BN fixed to scale 1, shift 0,
#   statistics 0/1, in eval mode, in local training and evaluation alike (no recalibration).
BN_MODES = ("train", "identity")
# equal: the reference's default client weights; samples: its --weight_dataset.
WEIGHTINGS = ("equal", "samples")


@dataclass
class FedConfig:
    """One federated training run.

    Client training defaults are the reference's (gatech-sysml/superfednas,
    parse_args.py and subnet_trainer.py): plain SGD at LR 0.1 (no momentum, no
    weight decay, constant over rounds), 5 local epochs, batch 64, gradient
    clipping at norm 1, equal client weights. docs/federated.md lists each point.
    """

    supernet: str = "ofa_mbv3_small"
    supernet_args: dict[str, Any] = field(default_factory=dict)
    mode: str = "superfednas"
    subnet: str = ""  # fedavg: the SubNet every client trains (JSON); default the largest
    dataset: str = "fashion-mnist"
    data_root: str = ""
    train_subset: int = 0  # 0: the whole training split is divided among the clients
    calib_size: int = 2000  # server-side images for BN recalibration before evaluation
    test_subset: int = 0
    clients: int = 20
    per_round: int = 8
    rounds: int = 20
    alpha: float = 0.1  # Dirichlet label concentration; 100 is close to IID
    local_epochs: int = 5
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip: float = 1.0
    bn: str = "train"  # see BN_MODES; the reference's default is "identity"
    weighting: str = "equal"  # see WEIGHTINGS
    largest_start: float = 0.9
    decay_fraction: float = 0.8
    min_nodes: int = 0  # fewest connected nodes a round starts with (0: per_round)
    node_wait: float = 120.0  # seconds a round waits for per_round nodes before using fewer
    reply_timeout: float = 3600.0  # seconds a round waits for replies
    eval_every: int = 5
    seed: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("clients", "per_round", "rounds", "local_epochs", "batch_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.per_round > self.clients:
            raise ConfigError(f"per_round ({self.per_round}) cannot exceed clients ({self.clients})")
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if not 0 < self.largest_start <= 1 or not 0 < self.decay_fraction <= 1:
            raise ConfigError("largest_start and decay_fraction must be in (0, 1]")
        if self.lr <= 0 or self.clip < 0:
            raise ConfigError("lr must be > 0 and clip >= 0 (0: no clipping)")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay must be >= 0")
        if self.bn not in BN_MODES:
            raise ConfigError(f"bn must be one of {BN_MODES}, got {self.bn!r}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0 <= self.min_nodes <= self.per_round:
            raise ConfigError(f"min_nodes must be in 0..per_round ({self.per_round}), "
                             f"got {self.min_nodes}")
        if self.node_wait < 0 or self.reply_timeout <= 0:
            raise ConfigError("node_wait must be >= 0 and reply_timeout > 0")

    @property
    def needed_nodes(self) -> int:
        """Fewest connected nodes a round runs with."""
        return self.min_nodes or self.per_round

    # ------------------------------------------------------------- run config
    def to_run_config(self) -> dict[str, Any]:
        """Flat values only (Flower's UserConfig); dicts travel as JSON strings."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name.replace("_", "-")] = json.dumps(v) if isinstance(v, dict) else v
        return out

    @classmethod
    def from_run_config(cls, rc: dict[str, Any]) -> FedConfig:
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in rc.items():
            name = key.replace("-", "_")
            if name not in known:
                continue  # other apps' keys may share the run config
            default = getattr(cls(), name)
            if isinstance(default, dict):
                value = json.loads(value) if isinstance(value, str) else dict(value)
            elif isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true")
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> FedConfig:
        return dataclasses.replace(self, **changes)
