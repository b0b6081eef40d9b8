"""Pieces search and retraining share: data, device, cosine LR, evaluation, progress bar."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, Loader, load_dataset
from .config import QuantConfig

__all__ = ["evaluate", "load_data", "progress_bar"]


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
    correct, loss, n = 0, 0.0, 0
    for x, y in Loader(getattr(data, split), data, batch_size, train=False, device=device):
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    model.train(was)
    return {"acc": 100.0 * correct / max(n, 1), "loss": loss / max(n, 1), "n": n}


def progress_bar(enabled: bool, total: int, initial: int, desc: str) -> Any:
    if not enabled:
        return None
    from ..progress import progress as tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
