"""Typed nablaQDARTS run description (search + retraining), loaded from YAML presets.

`QuantConfig.load("tiny", ["epochs=3", "lambda=1e-3"])` reads
``weightshare/configs/quant/tiny.yaml`` (or any YAML path), applies
``key=value`` overrides (YAML values) and validates in `__post_init__`.
``lambda`` is accepted as the spelling of `bitops_lambda`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..presets import check_options, load_options
from ..presets import list_presets as _list_presets
from .quantizers import check_bits

__all__ = ["PRESETS_DIR", "QuantConfig", "list_presets"]

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs" / "quant"

# Options that fix the searched network: a resumed search must agree on them.
MODEL_KEYS = ("dataset", "C", "layers", "steps", "stem_multiplier", "partial_k", "bits",
              "fixed_bits", "seed", "train_subset", "arch_size", "batch_size", "epochs")


def list_presets() -> list[str]:
    return _list_presets(PRESETS_DIR)


@dataclass
class QuantConfig:
    # data: weights train on `train_subset` images of the training split; alphas/betas on
    # `arch_size` other training images (the held-out "calib" split of load_dataset)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    dataset_args: dict[str, Any] = field(default_factory=dict)
    train_subset: int | None = None
    arch_size: int = 25000
    test_subset: int | None = None
    augment: bool = True
    # search network (PC-DARTS)
    C: int = 16
    layers: int = 8
    steps: int = 4
    stem_multiplier: int = 3
    partial_k: int = 4
    # searched per conv op; the reference's default is {2, 4} (its --allow8bit adds 8)
    bits: list[int] = field(default_factory=lambda: [2, 4])
    fixed_bits: int = 32       # stem and classifier: float and not counted, as the reference
    # search optimisation (reference: SGD 0.1 weights / 0.01 gammas, Adam 6e-4 arch after 15/50)
    epochs: int = 50
    warmup_epochs: int = 15
    batch_size: int = 256
    lr: float = 0.1
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    gamma_lr: float = 0.01
    gamma_weight_decay: float = 1e-3  # the reference's q_wd
    arch_lr: float = 6e-4
    arch_weight_decay: float = 1e-3
    # weight/gamma loss = CE + lambda * complexity (cost.complexity_loss: sum over every
    # candidate conv of MACs x E[w bits] x E[a bits] / first searched conv's MACs)
    bitops_lambda: float = 1e-4
    grad_clip: float = 5.0
    # retraining of the derived network (QAT from scratch)
    retrain_epochs: int = 600
    retrain_batch_size: int = 96
    retrain_lr: float = 0.025
    retrain_weight_decay: float = 3e-4
    retrain_C: int | None = None      # channels of the retrained net (None: the searched C)
    retrain_subset: int | None = None  # training images for retraining (None: all)
    # operations
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    progress: bool = True
    save_every_steps: int = 0          # extra mid-epoch checkpoints (0: once per epoch)
    max_steps: int | None = None       # stop early (tests); schedules still use the full run
    trace_every: int = 0               # record gamma softmaxes every N steps (0: 4 per epoch)

    def __post_init__(self) -> None:
        self.bits = [check_bits(int(b), "searched bit width") for b in self.bits]
        check_bits(int(self.fixed_bits), "fixed_bits")
        if not self.bits or len(set(self.bits)) != len(self.bits):
            raise ConfigError(f"bits must be distinct bit widths, got {self.bits}")
        for name in ("C", "layers", "steps", "partial_k", "epochs", "batch_size",
                     "retrain_epochs", "retrain_batch_size", "arch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} must be in [0, epochs]")
        if self.C % self.partial_k or (self.C // self.partial_k) % 2:
            raise ConfigError(f"C={self.C} must be a multiple of 2 * partial_k={self.partial_k} "
                             "(partial channels, then FactorizedReduce halves them)")
        if self.gamma_weight_decay < 0:
            raise ConfigError(f"gamma_weight_decay must be >= 0, got {self.gamma_weight_decay}")
        if self.bitops_lambda < 0:
            raise ConfigError(f"lambda must be >= 0, got {self.bitops_lambda}")
        for name in ("lr", "gamma_lr", "arch_lr", "retrain_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        data = dict(data)
        if "lambda" in data:
            data["bitops_lambda"] = data.pop("lambda")
        check_options(cls, data, "quant")
        return cls(**data)

    @classmethod
    def load(cls, preset: str | Path | None = None, overrides: list[str] | None = None,
             **kwargs: Any) -> QuantConfig:
        """A preset name (configs/quant/NAME.yaml) or YAML path, then `key=value` overrides,
        then keyword arguments that are not None."""
        data = load_options(preset, PRESETS_DIR, "quant", overrides, **kwargs)
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> QuantConfig:
        return dataclasses.replace(self, **changes)

    def model_view(self) -> dict[str, Any]:
        """The options a resumed search must share with the run it continues."""
        d = self.to_dict()
        return {k: d[k] for k in MODEL_KEYS}
