"""Quantization-aware retraining of a derived network from scratch, then test accuracy and BitOps.

`retrain(cfg, genotype, out)` builds `DerivedNetwork(genotype, cfg.retrain_C)`
(fresh weights), trains it with SGD (momentum 0.9, nesterov, cosine LR) with
every QConv fake-quantized at its genotype bits, and evaluates it on the test
split. Writes into `out`: ``retrain.pt`` (after every epoch, atomic; the
final one also holds the genotype, so `export` needs nothing else),
``log.jsonl`` and ``retrain.json`` (accuracy, BitOps of the cells -- the headline,
as the reference counts -- and of the whole network, MACs, bits per layer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError
from ..data import Dataset, Loader
from ..errors import ConfigError
from ..io import atomic_write_text
from ..train.run import EpochMeter, check_resume
from ..train.schedules import cosine_lr
from .config import QuantConfig
from .cost import bitops_split, layer_bitops
from .derived import DerivedNetwork
from .genotype import Genotype, GenotypeError
from .state import load_state
from .train_utils import checkpointed_batches, evaluate, restore_run, save_run, start_run

__all__ = ["RetrainResult", "load_retrained", "retrain"]


@dataclass
class RetrainResult:
    model: DerivedNetwork
    out_dir: Path
    summary: dict[str, Any]


def _spec_for(genotype: Genotype, data: Dataset) -> None:
    s = genotype.spec
    if (s.in_channels, s.num_classes, s.image_size) != (data.in_channels, data.num_classes,
                                                        data.image_size):
        raise ConfigError(
            f"the genotype was searched for {s.in_channels}x{s.image_size}x{s.image_size} "
            f"inputs and {s.num_classes} classes; dataset {data.name!r} has "
            f"{data.in_channels}x{data.image_size}x{data.image_size} and {data.num_classes}")


def retrain(cfg: QuantConfig, genotype: Genotype, out: str | Path, *, resume: bool = False,
            data: Dataset | None = None) -> RetrainResult:
    """QAT-train the derived network of `genotype` from scratch in folder `out`."""
    run, device, data = start_run(cfg, out, "retrain.pt", resume=resume, data=data,
                                  train_subset=cfg.retrain_subset)
    out, ckpt_path = run.out, run.path
    _spec_for(genotype, data)
    model = DerivedNetwork(genotype, cfg.retrain_C).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.retrain_lr, momentum=0.9, nesterov=True,
                          weight_decay=cfg.retrain_weight_decay)
    parts = {"model": model, "optimizer": opt}
    loader = Loader(data.train, data, cfg.retrain_batch_size, train=True, seed=cfg.seed,
                    augment=cfg.augment, device=device)
    spe = len(loader)
    total = cfg.retrain_epochs * spe
    if run.resuming:
        state = load_state(ckpt_path, "retrain")
        check_resume(ckpt_path, state, {"genotype": genotype.to_dict(),
                                        "channels": cfg.retrain_C}, what="genotype or width")
        restore_run(run, state, parts, "this network")
        if run.step >= total and (out / "retrain.json").is_file():
            summary = json.loads((out / "retrain.json").read_text())
            return RetrainResult(model.eval(), out, summary)
    history = run.history

    def save(at: int, extra: dict | None = None) -> None:
        save_run(run, "retrain", at, parts, genotype=genotype.to_dict(), channels=cfg.retrain_C,
                 config=cfg.to_dict(), **(extra or {}))

    run.start(total=total, steps_per_epoch=spe, max_steps=cfg.max_steps, desc="quant retrain",
              progress=cfg.progress)
    meter = EpochMeter()
    model.train()
    try:
        for batch in checkpointed_batches(run, loader, save, cfg.save_every_steps):
            x, y = batch.x, batch.y
            lr = cosine_lr(batch.step, total, cfg.retrain_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step = run.advance(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.4f}")
            meter.add(loss, logits, y)
            if run.epoch_done:
                train_loss, train_acc = meter.take()
                rec = {"epoch": batch.epoch, "step": step, "train_loss": train_loss,
                       "train_acc": train_acc, "wall_s": run.wall_s}
                run.record_epoch(rec)
    finally:
        run.close()
    step, wall = run.step, run.wall_s
    shape = (data.in_channels, data.image_size, data.image_size)
    layers = layer_bitops(model, shape)
    split = bitops_split(layers)
    # "bitops"/"macs": the headline, the searched cells only (the reference's count; its
    # stem and classifier are float and uncounted); "total_bitops" adds them at their bits
    summary: dict[str, Any] = {"steps": step, "total_steps": total, "finished": step >= total,
                               "retrain_s": wall, "bitops": split["cells_bitops"],
                               "macs": split["cells_macs"], **split,
                               "params": sum(p.numel() for p in model.parameters()),
                               "channels": model.spec.C, "history": history,
                               "layers": layers,
                               "genotype": genotype.to_dict()}
    if step >= total:
        summary.update({f"test_{k}": v for k, v in evaluate(model, data, device).items()})
        atomic_write_text(out / "retrain.json", json.dumps(summary, indent=1) + "\n")
        save(step, {"results": {k: summary[k] for k in ("test_acc", "bitops", "macs")}})
    return RetrainResult(model.eval(), out, summary)


def load_retrained(path: str | Path) -> tuple[DerivedNetwork, dict[str, Any]]:
    """The retrained network in a ``retrain.pt`` (eval mode) and its checkpoint payload."""
    state = load_state(path, "retrain")
    try:
        genotype = Genotype.from_dict(state["genotype"])
    except (KeyError, GenotypeError) as err:
        raise CheckpointError(f"{path}: no valid genotype inside ({err})") from None
    model = DerivedNetwork(genotype, state.get("channels"))
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: weights do not fit its genotype: {str(err)[:300]}"
                              ) from None
    return model.eval(), state
