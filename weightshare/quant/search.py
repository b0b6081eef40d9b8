"""Bilevel nablaQDARTS search: architecture (alphas, betas) and bit widths (gammas) together.

Per step, as the reference (gatech-sysml/NablaQDARTS, QDARTS/train_search.py `train`,
first order):

1. once `warmup_epochs` have passed, an architecture step on a batch of the
   held-out split: Adam(6e-4, betas (0.5, 0.999), weight decay 1e-3) on alphas and
   betas of the **cross-entropy only** (the reference's `Architect._backward_step`
   calls ``model._loss``, which is the criterion alone);
2. a weight step on a training batch: SGD on the network weights (lr, cosine) and
   on the gammas (gamma_lr, cosine, weight decay 1e-3, the reference's q_wd) of
   CE + lambda * `cost.complexity_loss`, which depends on the gammas only.

So lambda moves bit widths, never operations. Writes into `out`: ``search.pt``
(checkpoint after every epoch, atomic; `resume=True` continues a killed run where
it stopped), ``log.jsonl``, and at the end ``genotype.json`` and ``search.json``
(whose ``trace`` holds, every `trace_every` steps, the expected BitOps of the
network it would derive and each gamma pair's softmax, for plots).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import Dataset, Loader
from ..io import atomic_write_text
from ..train.run import EpochMeter, check_resume
from ..train.schedules import cosine_lr
from .config import QuantConfig
from .cost import BITOPS_UNIT, complexity_loss, conv_macs, expected_bitops
from .genotype import Genotype, NetSpec, save_genotype
from .search_model import SearchNetwork
from .state import load_state
from .train_utils import checkpointed_batches, restore_run, save_run, start_run

__all__ = ["SearchResult", "build_search_network", "search"]


@dataclass
class SearchResult:
    genotype: Genotype
    network: SearchNetwork
    out_dir: Path
    summary: dict[str, Any]


def build_search_network(cfg: QuantConfig, data: Dataset) -> SearchNetwork:
    spec = NetSpec(in_channels=data.in_channels, num_classes=data.num_classes,
                   image_size=data.image_size, C=cfg.C, layers=cfg.layers, steps=cfg.steps,
                   stem_multiplier=cfg.stem_multiplier)
    return SearchNetwork(spec, cfg.bits, cfg.fixed_bits, cfg.partial_k)


def _set_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def search(cfg: QuantConfig, out: str | Path, *, resume: bool = False,
           data: Dataset | None = None) -> SearchResult:
    """Run (or resume, or return the finished) search described by `cfg` in folder `out`."""
    run, device, data = start_run(cfg, out, "search.pt", resume=resume, data=data,
                                  train_subset=cfg.train_subset)
    out, ckpt_path = run.out, run.path
    net = build_search_network(cfg, data).to(device)
    shape = (data.in_channels, data.image_size, data.image_size)
    macs = conv_macs(net, shape)
    weights, gammas, arch = net.weight_parameters(), net.gamma_parameters(), net.arch_parameters()
    w_opt = torch.optim.SGD([
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": gammas, "lr": cfg.gamma_lr, "weight_decay": cfg.gamma_weight_decay},
    ], momentum=cfg.momentum)
    a_opt = torch.optim.Adam(arch, lr=cfg.arch_lr, betas=(0.5, 0.999),
                             weight_decay=cfg.arch_weight_decay)
    parts = {"model": net, "w_opt": w_opt, "a_opt": a_opt}
    train_loader = Loader(data.train, data, cfg.batch_size, train=True, seed=cfg.seed,
                          augment=cfg.augment, device=device)
    # the architecture split: shuffled, never augmented, its own seed stream
    arch_loader = Loader(data.calib, data, cfg.batch_size, train=True, seed=cfg.seed + 1,
                         augment=False, device=device)
    spe = len(train_loader)
    total = cfg.epochs * spe
    warm = cfg.warmup_epochs * spe
    trace: list[dict[str, Any]] = []
    trace_every = cfg.trace_every or max(1, spe // 4)

    def record_trace(at: int) -> None:
        with torch.no_grad():
            trace.append({
                "step": at,
                "expected_mbitops": float(expected_bitops(net, macs)),
                "complexity": float(complexity_loss(net, macs)),
                "gammas": {n: [F.softmax(g.gamma_wt, 0).tolist() if g.gamma_wt is not None
                               else [1.0],
                               F.softmax(g.gamma_act, 0).tolist() if g.gamma_act is not None
                               else [1.0]]
                           for n, g in net.bit_gammas().items()},
            })

    if run.resuming:
        state = load_state(ckpt_path, "search")
        check_resume(ckpt_path, state.get("config", {}), cfg.model_view())
        restore_run(run, state, parts, "this search network")
        trace = list(state.get("trace", []))
    history = run.history
    if run.step == 0 and not trace:
        record_trace(0)

    def save(at: int) -> None:
        save_run(run, "search", at, parts, config=cfg.to_dict(), steps_per_epoch=spe,
                 total_steps=total, trace=trace)

    run.start(total=total, steps_per_epoch=spe, max_steps=cfg.max_steps, desc="quant search",
              progress=cfg.progress)
    meter = EpochMeter()
    arch_batches: list | None = None
    arch_epoch = -1
    try:
        for batch in checkpointed_batches(run, train_loader, save, cfg.save_every_steps):
            x, y = batch.x, batch.y
            if batch.step >= warm:
                if arch_epoch != batch.epoch:  # once per epoch, where the first arch step falls
                    arch_loader.set_epoch(batch.epoch)
                    arch_batches, arch_epoch = list(arch_loader), batch.epoch
                xa, ya = arch_batches[batch.index % len(arch_batches)]
                # weights are constants here: skipping their gradients saves time
                _set_grad(weights + gammas, False)
                a_opt.zero_grad(set_to_none=True)
                # cross-entropy only, as the reference's architect: no cost term
                F.cross_entropy(net(xa), ya).backward()
                a_opt.step()
                _set_grad(weights + gammas, True)
            frac = cosine_lr(batch.step, total, 1.0, final_lr=cfg.lr_min / cfg.lr)
            w_opt.param_groups[0]["lr"] = cfg.lr * frac
            w_opt.param_groups[1]["lr"] = cfg.gamma_lr * frac
            w_opt.zero_grad(set_to_none=True)
            logits = net(x)
            ce = F.cross_entropy(logits, y)
            cost = complexity_loss(net, macs)
            (ce + cfg.bitops_lambda * cost).backward()
            torch.nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
            w_opt.step()
            step = run.advance(ce=f"{float(ce.detach()):.3f}",
                               cost=f"{float(cost.detach()):.2f}",
                               arch="on" if batch.step + 1 > warm else "warm-up")
            meter.add(ce, logits, y)
            if step % trace_every == 0 or run.epoch_done:
                record_trace(step)
            if run.epoch_done:
                train_ce, train_acc = meter.take()
                rec = {"epoch": batch.epoch, "step": step, "train_ce": train_ce,
                       "train_acc": train_acc, "complexity": float(cost.detach()),
                       "expected_mbitops": trace[-1]["expected_mbitops"],
                       "arch_on": step > warm, "wall_s": run.wall_s}
                run.record_epoch(rec)
    finally:
        run.close()
    step, wall = run.step, run.wall_s
    with torch.no_grad():
        final_cost = float(expected_bitops(net, macs))
        final_complexity = float(complexity_loss(net, macs))
    summary = {"steps": step, "total_steps": total, "finished": step >= total,
               "search_s": wall, "expected_mbitops": final_cost,
               "expected_bitops": final_cost * BITOPS_UNIT, "complexity": final_complexity,
               "history": history, "trace": trace, "config": cfg.to_dict()}
    genotype = net.derive(meta={"lambda": cfg.bitops_lambda, "bits": cfg.bits,
                                "search_s": wall, "steps": step})
    if step >= total:
        save_genotype(genotype, out / "genotype.json")
        atomic_write_text(out / "search.json", json.dumps(summary, indent=1) + "\n")
    return SearchResult(genotype, net, out, summary)
