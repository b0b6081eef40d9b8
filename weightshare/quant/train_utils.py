"""Pieces search and retraining share: the data with its architecture split, the run's
set-up, resuming and checkpointing it, and evaluation.

The run scaffold (folder, resume checks, step log, progress, batch loop) is
`weightshare.train.run`, which both use through `start_run`; the checkpoint file is
`state`; the accuracy computation is `train.evaluate.classify`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError
from ..data import Dataset, Loader, load_dataset
from ..train.common import pick_device
from ..train.evaluate import classify
from ..train.run import Batch, Run
from .config import QuantConfig
from .state import save_state

__all__ = ["checkpointed_batches", "evaluate", "load_data", "restore_run", "save_run",
           "start_run"]


def load_data(cfg: QuantConfig, train_subset: int | None) -> Dataset:
    """The dataset with `cfg.arch_size` training images held out (the "calib" split)."""
    return load_dataset(cfg.dataset, cfg.data_dir, calib_size=cfg.arch_size, seed=cfg.seed,
                        train_subset=train_subset, test_subset=cfg.test_subset,
                        **cfg.dataset_args)


def start_run(cfg: QuantConfig, out: str | Path, checkpoint: str, *, resume: bool,
              data: Dataset | None, train_subset: int | None) -> tuple[Run, torch.device, Dataset]:
    """What search and retraining do before they build their network: claim the run folder
    `out` (its checkpoint file `checkpoint`; `resume` continues one), pick the device, load
    the data unless given (`train_subset` training images), then seed torch, so the fresh
    network's weights are a function of `cfg.seed` alone."""
    run = Run(Path(out), checkpoint, resume=resume)
    device = pick_device(cfg.device)
    if data is None:
        data = load_data(cfg, train_subset)
    torch.manual_seed(cfg.seed)
    return run, device, data


def restore_run(run: Run, state: Mapping[str, Any], parts: Mapping[str, Any], what: str) -> None:
    """Resume from a loaded (and checked) checkpoint: each of `parts` (its key in the
    checkpoint -> the module or optimizer) loads its state dict, then `run` its step,
    history and clock. A state that does not fit is a CheckpointError naming `what`."""
    try:
        for key, part in parts.items():
            part.load_state_dict(state[key])
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{run.path} does not fit {what}: {str(err)[:300]}") from None
    run.restore(state["step"], state["history"], state["wall_s"])


def save_run(run: Run, kind: str, step: int, parts: Mapping[str, Any], **fields: Any) -> None:
    """Checkpoint `run` at `step` as a `kind` run file: `fields` (the caller's settings and
    results), each of `parts`' state dict under its key, and the history and clock --
    what `restore_run` reads back."""
    save_state(run.path, kind, {
        **fields, "step": step, **{key: part.state_dict() for key, part in parts.items()},
        "history": run.history, "wall_s": run.wall_s,
    })



def checkpointed_batches(run: Run, loader: Any, save: Callable[[int], None],
                         every: int | None) -> Iterator[Batch]:
    """`run.batches(loader)`, checkpointing as search and retraining do: once the caller's
    step is done (it advanced the run and, at an epoch's end, recorded the epoch), `save`
    at the end of every epoch (so the saved history holds it) and every `every` steps."""
    for batch in run.batches(loader):
        yield batch
        if run.epoch_done or run.save_due(every):
            save(run.step)

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
