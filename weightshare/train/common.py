"""Helpers every training loop shares (DepS/OFA training, SubNet fine-tuning, quantization).

One definition each, so the loops cannot drift apart: which device a run uses
(CUDA index per DDP rank), which parameters get weight decay, the soft
cross-entropy of in-place and teacher KD, and the per-step seed that makes
dropout masks and SubNet sampling independent of where a run resumed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from . import distributed as dist

__all__ = ["pick_device", "param_groups", "soft_cross_entropy", "step_seed"]


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` (this DDP rank's GPU) or `cuda:N`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda asked for, but torch sees no CUDA device")
    if name == "cuda" and dist.world_size() > 1:
        name = f"cuda:{dist.local_rank()}"
    return torch.device(name)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """SGD groups: weight decay on weights only, not on BN affine parameters and biases (OFA)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() <= 1 or name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against soft targets (KD at temperature 1), batch mean."""
    return torch.sum(-target_probs * F.log_softmax(logits, dim=1), dim=1).mean()


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A reproducible per-step seed: sampling and dropout do not depend on where a run resumed."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)
