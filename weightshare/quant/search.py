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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoint import CheckpointError
from ..data import Dataset, Loader
from ..io import atomic_write_text
from ..train.common import pick_device
from ..train.schedules import cosine_lr
from .config import QuantConfig
from .cost import BITOPS_UNIT, complexity_loss, conv_macs, expected_bitops
from .genotype import Genotype, NetSpec, save_genotype
from .search_model import SearchNetwork
from .state import load_state, save_state
from .train_utils import load_data, progress_bar

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
    out = Path(out)
    ckpt_path = out / "search.pt"
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or choose "
                              "another --out")
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if data is None:
        data = load_data(cfg, cfg.train_subset)
    torch.manual_seed(cfg.seed)
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
    train_loader = Loader(data.train, data, cfg.batch_size, train=True, seed=cfg.seed,
                          augment=cfg.augment, device=device)
    # the architecture split: shuffled, never augmented, its own seed stream
    arch_loader = Loader(data.calib, data, cfg.batch_size, train=True, seed=cfg.seed + 1,
                         augment=False, device=device)
    spe = len(train_loader)
    total = cfg.epochs * spe
    warm = cfg.warmup_epochs * spe
    step, history, trace, wall = 0, [], [], 0.0
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

    if resume and ckpt_path.exists():
        state = load_state(ckpt_path, "search")
        saved = state.get("config", {})
        mismatch = {k: (saved.get(k), v) for k, v in cfg.model_view().items()
                    if saved.get(k) != v}
        if mismatch:
            raise ValueError(f"{ckpt_path} was made with other settings {mismatch} "
                             "(saved, now); use another --out")
        try:
            net.load_state_dict(state["model"])
            w_opt.load_state_dict(state["w_opt"])
            a_opt.load_state_dict(state["a_opt"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{ckpt_path} does not fit this search network: "
                                  f"{str(err)[:300]}") from None
        step, history, wall = int(state["step"]), list(state["history"]), float(state["wall_s"])
        trace = list(state.get("trace", []))
    if step == 0 and not trace:
        record_trace(0)

    def save(at: int) -> None:
        save_state(ckpt_path, "search", {
            "config": cfg.to_dict(), "step": at, "steps_per_epoch": spe, "total_steps": total,
            "model": net.state_dict(), "w_opt": w_opt.state_dict(), "a_opt": a_opt.state_dict(),
            "history": history, "trace": trace, "wall_s": wall,
        })

    last = total if cfg.max_steps is None else min(total, cfg.max_steps)
    bar = progress_bar(cfg.progress, last, min(step, last), "quant search")
    log = (out / "log.jsonl").open("a", encoding="utf-8")
    t0, wall0 = time.perf_counter(), wall
    run_ce = run_correct = run_n = 0.0
    try:
        while step < last:
            epoch, first = divmod(step, spe)
            train_loader.set_epoch(epoch, start_batch=first)
            arch_batches = None
            for b, (x, y) in enumerate(train_loader, start=first):
                if step >= warm:
                    if arch_batches is None:
                        arch_loader.set_epoch(epoch)
                        arch_batches = list(arch_loader)
                    xa, ya = arch_batches[b % len(arch_batches)]
                    # weights are constants here: skipping their gradients saves time
                    _set_grad(weights + gammas, False)
                    a_opt.zero_grad(set_to_none=True)
                    # cross-entropy only, as the reference's architect: no cost term
                    F.cross_entropy(net(xa), ya).backward()
                    a_opt.step()
                    _set_grad(weights + gammas, True)
                frac = cosine_lr(step, total, 1.0, final_lr=cfg.lr_min / cfg.lr)
                w_opt.param_groups[0]["lr"] = cfg.lr * frac
                w_opt.param_groups[1]["lr"] = cfg.gamma_lr * frac
                w_opt.zero_grad(set_to_none=True)
                logits = net(x)
                ce = F.cross_entropy(logits, y)
                cost = complexity_loss(net, macs)
                (ce + cfg.bitops_lambda * cost).backward()
                torch.nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
                w_opt.step()
                step += 1
                run_ce += float(ce.detach()) * len(y)
                run_correct += float((logits.argmax(1) == y).sum())
                run_n += len(y)
                wall = wall0 + time.perf_counter() - t0
                if bar is not None:
                    bar.set_postfix(ce=f"{float(ce.detach()):.3f}", cost=f"{float(cost.detach()):.2f}",
                                    arch="on" if step > warm else "warm-up")
                    bar.update(1)
                end = step % spe == 0 or step >= last
                if step % trace_every == 0 or end:
                    record_trace(step)
                if end:
                    rec = {"epoch": epoch, "step": step, "train_ce": run_ce / max(run_n, 1),
                           "train_acc": 100.0 * run_correct / max(run_n, 1),
                           "complexity": float(cost.detach()),
                           "expected_mbitops": trace[-1]["expected_mbitops"],
                           "arch_on": step > warm, "wall_s": wall}
                    history.append(rec)
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    run_ce = run_correct = run_n = 0.0
                    save(step)
                    break
                if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                    save(step)
    finally:
        log.close()
        if bar is not None:
            bar.close()
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
