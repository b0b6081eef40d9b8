"""The one training loop every method shares: plan a step, run its tasks, one optimizer step.

Also: checkpoints after every epoch (atomic; `resume=True` continues a killed
run and reaches the same weights, because data order, augmentation, SubNet
sampling and dropout are all functions of (seed, step)), DDP under torchrun
(gradients all-reduced by hand after the step's several backward passes, BN
statistics synchronised across ranks so 2 ranks compute what 1 would), cost
accounting in MACs. The run folder, resume checks, step log (JSONL, TensorBoard),
progress bar and epoch/start-batch loop are the shared scaffold in `train.run`.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import Dataset, EpochBatches, load_dataset, make_loader
from ..models import SuperNet, create_supernet
from ..space import SubnetConfig
from . import distributed as dist
from .common import param_groups, pick_device, soft_cross_entropy, step_seed
from .config import TrainConfig
from .evaluate import accuracy, evaluate_subnets, evaluation_subnets, recalibrate
from .methods import MethodSettings, StepPlan, make_method
from .precision import Precision, resolve_precision, to_memory_format
from .run import Run, check_resume

__all__ = ["train", "prepare", "Session", "TrainResult", "build_supernet", "step_seed",
           "step_macs", "planned_train_macs"]


@dataclass
class TrainResult:
    supernet: SuperNet
    out_dir: Path
    summary: dict[str, Any]


def build_supernet(cfg: TrainConfig, data: Dataset) -> SuperNet:
    if cfg.init_from:  # a pretrained start, e.g. a converted model (train/pretrained.py)
        from .pretrained import load_initial_supernet

        return load_initial_supernet(cfg.init_from, data)
    args = {"num_classes": data.num_classes, "in_channels": data.in_channels,
            "resolution": data.image_size, **cfg.supernet_args}
    return create_supernet(cfg.supernet, **args)


def step_macs(plan: StepPlan, macs: Callable[[SubnetConfig], int], largest: SubnetConfig,
              batch: int) -> float:
    """Training MACs of one planned step: 3x forward MACs per trained SubNet (forward +
    backward), 1x for a SubNet with zero weight, plus one teacher forward for OFA's KD."""
    total = sum((3 if t.weight > 0 else 1) * macs(t.subnet) for t in plan.tasks)
    if any(t.loss == "kd_teacher" for t in plan.tasks):
        total += macs(largest)
    return float(total * batch)


def planned_train_macs(cfg: TrainConfig, net: SuperNet, steps_per_epoch: int) -> float:
    """The training MACs a run of `cfg` will spend, from its plans alone (no training).

    Exact for the loop above: plans are pure functions of the step and seed.
    """
    plan_step = make_method(cfg.method, _settings(cfg, steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    cache: dict[SubnetConfig, int] = {}

    def macs(c: SubnetConfig) -> int:
        if c not in cache:
            cache[c] = net.cost(c).macs
        return cache[c]

    largest = net.space.largest()
    return sum(step_macs(plan_step(s, total, net.space, random.Random(step_seed(cfg.seed, s))),
                         macs, largest, cfg.batch_size) for s in range(total))


class _Runner:
    """Executes StepPlans on one SuperNet; holds what the plans refer to (teacher, optimizer)."""

    def __init__(self, cfg: TrainConfig, net: SuperNet, data: Dataset, device: torch.device,
                 precision: Precision) -> None:
        self.cfg, self.net, self.data, self.device = cfg, net, data, device
        self.precision = precision
        self.scaler = precision.scaler()  # fp16 only: bf16 and fp32 need no loss scaling
        self.optimizer = torch.optim.SGD(param_groups(net, cfg.weight_decay), lr=cfg.lr,
                                         momentum=cfg.momentum,
                                         nesterov=cfg.nesterov and cfg.momentum > 0)
        self.teacher: SuperNet | None = None
        self._macs: dict[SubnetConfig, int] = {}

    def macs(self, subnet: SubnetConfig) -> int:
        if subnet not in self._macs:
            self._macs[subnet] = self.net.cost(subnet).macs
        return self._macs[subnet]

    def freeze_teacher(self) -> None:
        self.teacher = copy.deepcopy(self.net).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def run(self, plan: StepPlan, x: Tensor, y: Tensor, step: int) -> tuple[float, float]:
        """One optimizer step; returns (loss of the first task, training MACs spent)."""
        if plan.freeze_teacher:
            self.freeze_teacher()
        if plan.reorder:
            self.net.reorder_channels(self.optimizer)
        for group in self.optimizer.param_groups:
            group["lr"] = plan.lr
        torch.manual_seed(step_seed(self.cfg.seed, step, dist.rank()))  # dropout masks
        self.net.train()
        batch = len(y) * dist.world_size()
        x = self.precision.input(x)
        soft: Tensor | None = None
        teacher_soft: Tensor | None = None
        first_loss = 0.0
        for i, task in enumerate(plan.tasks):
            with self.precision.autocast():
                logits = self.net(x, task.subnet, dropout=task.dropout)
            logits = logits.float()  # losses and soft targets in fp32 under any autocast
            if task.loss == "ce":
                loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
            elif task.loss == "kd_inplace":
                if soft is None:
                    raise RuntimeError("in-place KD needs the largest SubNet as the step's first task")
                loss = soft_cross_entropy(logits, soft)
            elif task.loss == "kd_teacher":
                if teacher_soft is None:
                    teacher_soft = self._teacher_probs(x)
                loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
                loss = loss + self.cfg.kd_ratio * soft_cross_entropy(logits, teacher_soft)
            else:
                raise ValueError(f"unknown loss {task.loss!r}")
            if i == 0:
                first_loss = float(loss.detach())
                soft = F.softmax(logits.detach(), dim=1)
            if task.weight > 0:
                scaled = task.weight * loss
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        dist.all_reduce_grads(self.net)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return first_loss, step_macs(plan, self.macs, self.net.space.largest(), batch)

    @torch.no_grad()
    def _teacher_probs(self, x: Tensor) -> Tensor:
        if self.teacher is None:
            raise RuntimeError("KD from a fixed teacher requested before the teacher was frozen")
        with self.precision.autocast():
            logits = self.teacher(x, self.teacher.space.largest())
        return F.softmax(logits.float(), dim=1)


def _settings(cfg: TrainConfig, steps_per_epoch: int) -> MethodSettings:
    return MethodSettings(
        lr=cfg.lr,
        warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
        dropout=cfg.dropout,
        shrink_at=cfg.shrink_at,
        beta_ramp_steps=round(cfg.beta_ramp * steps_per_epoch),
        beta_epsilon=cfg.beta_epsilon,
        num_random=cfg.num_random,
        sampler=cfg.sampler,
    )


@dataclass
class Session:
    """A training run set up (or resumed) up to its next step: what `train` then iterates."""

    cfg: TrainConfig
    run: Run
    data: Dataset
    device: torch.device
    net: SuperNet
    loader: EpochBatches
    plan_step: Callable[..., StepPlan]
    runner: _Runner | None  # None when `done`
    train_macs: float = 0.0
    final_state: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] | None = None  # results.json of a run that finished already


def prepare(cfg: TrainConfig, *, resume: bool = False, data: Dataset | None = None) -> Session:
    """Set up a run of `cfg` in `cfg.out`: data, SuperNet, loader, optimizer; on `resume`,
    everything its checkpoint holds (weights, optimizer, scaler, teacher, step, history)."""
    dist.setup()
    device = pick_device(cfg.device)
    run = Run(Path(cfg.out), "checkpoint.pt", resume=resume, primary=dist.rank() == 0)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, calib_size=cfg.calib_size, seed=cfg.seed,
                            train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                            **cfg.dataset_args)
    torch.manual_seed(cfg.seed)
    net = build_supernet(cfg, data)
    loader = make_loader(data.train, data, cfg.batch_size // dist.world_size(), train=True,
                    seed=cfg.seed, augment=cfg.augment, device=device, rank=dist.rank(),
                    world_size=dist.world_size())
    spe = len(loader)
    total = cfg.epochs * spe
    plan_step = make_method(cfg.method, _settings(cfg, spe))
    session = Session(cfg, run, data, device, net, loader, plan_step, None)
    state: dict[str, Any] = {}
    if run.resuming:
        ck = load_checkpoint(run.path)
        session.net = net = ck.supernet
        state = ck.train_state
        check_resume(run.path, state.get("config", {}), {"method": cfg.method},
                     what="training method", missing_ok=True)
        run.restore(state.get("step", 0), state.get("history", []), state.get("wall_s", 0.0))
        session.train_macs = float(state.get("train_macs", 0.0))
        session.final_state.update(state)
        done = run.out / "results.json"
        if run.step >= total and done.exists():  # finished already: nothing to redo
            session.net = net.to(device)
            session.done = json.loads(done.read_text())
            return session
    precision = resolve_precision(device, cfg.amp, cfg.channels_last)
    to_memory_format(net.to(device), precision)
    dist.broadcast_model(net)
    session.runner = runner = _Runner(cfg, net, data, device, precision)
    if state:
        runner.optimizer.load_state_dict(state["optimizer"])
        if runner.scaler is not None and state.get("scaler"):
            runner.scaler.load_state_dict(state["scaler"])
        if state.get("teacher") is not None:
            runner.teacher = copy.deepcopy(net)
            runner.teacher.load_state_dict(state["teacher"])
            runner.teacher.eval().requires_grad_(False)
    return session


def train(cfg: TrainConfig, *, resume: bool = False, data: Dataset | None = None) -> TrainResult:
    """Train a SuperNet with `cfg.method`; checkpoints and logs go to `cfg.out`."""
    session = prepare(cfg, resume=resume, data=data)
    run, net, data, device = session.run, session.net, session.data, session.device
    out, ckpt_path = run.out, run.path
    if session.done is not None:
        return TrainResult(net, out, session.done)
    runner, loader, plan_step = session.runner, session.loader, session.plan_step
    spe = len(loader)
    total = cfg.epochs * spe
    train_macs, final_state = session.train_macs, session.final_state
    history = run.history

    def checkpoint(step: int) -> None:
        state = {
            "step": step, "epoch": step // spe, "steps_per_epoch": spe, "total_steps": total,
            "config": cfg.to_dict(), "optimizer": runner.optimizer.state_dict(),
            "history": history, "train_macs": train_macs, "wall_s": run.wall_s,
            "teacher": runner.teacher.state_dict() if runner.teacher is not None else None,
            "scaler": runner.scaler.state_dict() if runner.scaler is not None else None,
        }
        final_state.update(state)
        if run.primary:
            save_checkpoint(ckpt_path, net, train_state=state, meta={"method": cfg.method})
        dist.barrier()

    run.start(total=total, steps_per_epoch=spe, max_steps=cfg.max_steps, desc=cfg.method,
              progress=cfg.progress, tensorboard=cfg.tensorboard)
    epoch_macs = 0.0
    try:
        for b in run.batches(loader):
            plan = plan_step(b.step, total, net.space, random.Random(step_seed(cfg.seed, b.step)))
            loss, spent = runner.run(plan, b.x, b.y, b.step)
            train_macs += spent
            epoch_macs += spent
            step = run.advance(loss=f"{loss:.3f}", lr=f"{plan.lr:.4f}", phase=plan.phase,
                               beta=f"{plan.beta:.2f}")
            run.log.write({"kind": "train", "step": step, "epoch": b.epoch, "phase": plan.phase,
                           "loss": loss, "lr": plan.lr, "beta": plan.beta,
                           "subnets": len(plan.tasks), "train_macs": train_macs,
                           "wall_s": run.wall_s})
            end_of_epoch = step % spe == 0
            if run.save_due(cfg.save_every_steps) and not end_of_epoch:
                checkpoint(step)
            if run.epoch_done:
                dist.sync_buffers(net)
                record = {"kind": "epoch", "step": step, "epoch": (step - 1) // spe,
                          "epoch_train_macs": epoch_macs, "train_macs": train_macs,
                          "wall_s": run.wall_s}
                if cfg.eval_every and (step // spe) % cfg.eval_every == 0 and step < total:
                    record.update(_corner_eval(net, data, device))
                run.record_epoch(record)
                epoch_macs = 0.0
                checkpoint(step)
    finally:
        run.end_progress()
    step, wall = run.step, run.wall_s
    summary: dict[str, Any] = {"method": cfg.method, "steps": step, "total_steps": total,
                               "epochs": cfg.epochs, "train_macs": train_macs, "wall_s": wall,
                               "train_images": len(data.train), "calib_images": len(data.calib),
                               "test_images": len(data.test),
                               "history": history, "config": cfg.to_dict()}
    if step >= total and run.primary:
        subnets = evaluation_subnets(net, cfg.eval_spread, cfg.eval_seed)
        rows = evaluate_subnets(net, subnets, data, device=device, progress=cfg.progress)
        summary["eval"] = rows
        summary.update(_summarise(rows, net))
        # Same training state, now with every evaluated SubNet's own BN statistics.
        save_checkpoint(ckpt_path, net, train_state=final_state, meta={"method": cfg.method})
        (out / "results.json").write_text(json.dumps(summary, indent=1))
        run.log.write({"kind": "final", **{k: v for k, v in summary.items()
                                           if k not in ("eval", "history", "config")}})
    run.close()
    dist.barrier()
    return TrainResult(net, out, summary)


def _summarise(rows: list[dict], net: SuperNet) -> dict[str, Any]:
    by_json = {SubnetConfig.from_dict(r["subnet"]): r["acc"] for r in rows}
    sp = net.space
    return {"acc": {"smallest": by_json.get(sp.smallest()), "largest": by_json.get(sp.largest()),
                    "mean": sum(r["acc"] for r in rows) / len(rows)}}


def _corner_eval(net: SuperNet, data: Dataset, device: torch.device) -> dict[str, float]:
    """Accuracy of the smallest and largest SubNet after recalibration (a quick progress check)."""
    out = {}
    saved = dict(net.subnet_norms)
    for name, cfg in (("acc_smallest", net.space.smallest()), ("acc_largest", net.space.largest())):
        recalibrate(net, cfg, data, device=device)
        out[name] = accuracy(net, cfg, data, device=device)
    net.subnet_norms.clear()
    net.subnet_norms.update(saved)
    return out
