"""The typed description of a training run, loaded from YAML presets with overrides.

`TrainConfig.load("small", ["epochs=4", "method=bignas"])` reads
`configs/train/small.yaml` (or any YAML path), applies `key=value` overrides
(values parsed as YAML, so `supernet_args={width_mult: 0.5}` works) and
validates the result in `__post_init__`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..presets import check_options, load_options
from ..presets import list_presets as _list_presets

__all__ = ["TrainConfig", "PRESETS_DIR", "list_presets"]

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"


def list_presets() -> list[str]:
    return _list_presets(PRESETS_DIR)


@dataclass
class TrainConfig:
    # what to train, on what
    method: str = "deps"                 # deps | ofa | bignas | compofa | full
    sampler: str = "uniform"             # uniform | compound (CompOFA coupling)
    supernet: str = "ofa_mbv3_small"
    supernet_args: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None         # start from this checkpoint's weights (`--from`), e.g.
                                         # a converted model; `supernet` is then ignored
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    dataset_args: dict[str, Any] = field(default_factory=dict)  # e.g. synthetic sizes
    train_subset: int | None = None      # images of the training split to use (None = all)
    test_subset: int | None = None
    calib_size: int = 2000               # held-out training images for BN recalibration
    augment: bool = True                 # random crop (+ flip where the data allows it)
    # optimisation (DepS: SGD nesterov 0.9, wd 3e-5, one cosine over the run)
    epochs: int = 10
    batch_size: int = 128                # global batch (split across DDP ranks)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    dropout: float = 0.1                 # on the largest SubNet's classifier input
    grad_clip: float | None = None
    # DepS / sandwich
    shrink_at: float = 0.5               # fraction of the run trained on the largest alone
    beta_ramp_epochs: float | None = None  # epsilon-shrinking warm-up; None = 5% of epochs
    beta_epsilon: float = 1e-3
    num_random: int = 2                  # random SubNets per sandwich step
    kd_ratio: float = 1.0                # OFA: weight of KD from the fixed teacher
    # evaluation
    eval_spread: int = 12                # SubNets spread in MACs besides the 4 corners
    eval_seed: int = 0
    eval_every: int = 0                  # epochs between corner evaluations (0: at the end)
    # operations
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    amp: str = "auto"                    # auto (bf16/fp16 on CUDA, fp32 on CPU) | off | bf16 | fp16
    channels_last: bool = True           # NHWC convolutions (oneDNN's depthwise backward is slow on NCHW)
    out: str = "runs/train"
    save_every_steps: int = 0            # extra mid-epoch checkpoints (0: per epoch only)
    max_steps: int | None = None         # stop early (smoke tests); schedules still use the full run
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        from ..models import list_supernets
        from .methods import method_names
        from .samplers import SAMPLERS

        if self.method not in method_names():
            raise ConfigError(f"method={self.method!r}; choose from {method_names()}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler={self.sampler!r}; choose from {sorted(SAMPLERS)}")
        if self.supernet not in list_supernets():
            raise ConfigError(f"supernet={self.supernet!r}; registered: {list_supernets()}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if not 0.0 <= self.shrink_at <= 1.0:
            raise ConfigError(f"shrink_at={self.shrink_at} must be a fraction in [0, 1]")
        from .precision import AMP_MODES

        if self.amp is False:  # YAML (presets and --set) reads a bare `off` as false
            self.amp = "off"
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp={self.amp!r}; choose from {list(AMP_MODES)}")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be positive")

    @property
    def beta_ramp(self) -> float:
        return 0.05 * self.epochs if self.beta_ramp_epochs is None else self.beta_ramp_epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        check_options(cls, data, "training")
        return cls(**data)

    @classmethod
    def load(cls, preset: str | Path | None = None, overrides: list[str] | None = None,
             **kwargs: Any) -> TrainConfig:
        """A preset name (configs/train/NAME.yaml) or YAML path, then `key=value` overrides."""
        data = load_options(preset, PRESETS_DIR, "training", overrides, **kwargs)
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
