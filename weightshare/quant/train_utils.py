"""Pieces search and retraining share: the data with its architecture split, and evaluation.

The run scaffold (folder, resume checks, step log, progress, batch loop) is
`weightshare.train.run`; the accuracy computation is `train.evaluate.classify`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import Dataset, Loader, load_dataset
from ..train.evaluate import classify
from .config import QuantConfig

__all__ = ["evaluate", "load_data"]


def load_data(cfg: QuantConfig, train_subset: int | None) -> Dataset:
    """The dataset with `cfg.arch_size` training images held out (the "calib" split)."""
    return load_dataset(cfg.dataset, cfg.data_dir, calib_size=cfg.arch_size, seed=cfg.seed,
                        train_subset=train_subset, test_subset=cfg.test_subset,
                        **cfg.dataset_args)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 256,
             split: str = "test") -> dict[str, float]:
    """Top-1 accuracy (percent) and mean cross-entropy on a split, in eval mode."""
    was = model.training
    model.eval()
    result = classify(model, Loader(getattr(data, split), data, batch_size, train=False,
                                    device=device))
    model.train(was)
    return result
