"""Fine-tune one chosen SubNet a few epochs further, with KD from the SuperNet's largest.

After search picks the SubNet for a target, a short fine-tune recovers the
accuracy that weight sharing costs it (OFA: a few epochs of KD). The SubNet is
trained *through the SuperNet* (its slices of the shared weights, kernel
transforms included) rather than as a detached copy: gradients reach exactly
the weights `SuperNet.extract` copies out, so the result is again an ordinary
SuperNet checkpoint, which `weightshare export -c OUT --subnet SUBNET`,
`evaluate` and `cost` read unchanged. Other SubNets of that checkpoint share the
changed weights and are no longer meaningful: the file is specialized, says so
in its meta (``finetuned_subnet``) and keeps BN statistics for that SubNet only.

Training: SGD with Nesterov momentum, cosine learning rate over all steps,
loss = CE(label smoothing) + kd_ratio * soft CE against the softmax of the
*original* SuperNet's largest SubNet (a frozen copy, extracted once; always
loaded from the source checkpoint, so a resumed run has the same teacher).

Resumable: OUT is rewritten atomically every epoch (and every `save_every`
steps) with the optimizer state and the step count in ``train_state.finetune``;
calling again with the same arguments continues from there (the data order is a
pure function of seed, epoch and batch, see `weightshare.data.Loader`), and a
finished OUT is not trained again.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import Dataset, Loader
from ..models import SuperNet
from ..space import SearchSpace, SubnetConfig
from ..train.common import param_groups, soft_cross_entropy, step_seed
from ..train.evaluate import recalibrated_accuracy
from ..train.precision import resolve_precision, to_memory_format
from ..train.run import Run, check_resume
from ..train.schedules import cosine_lr
from .common import SearchError, same_identity, supernet_identity

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "load_subnet_choice"]


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    lr: float = 0.01  # well below training's 0.1: the weights are already good
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    kd_ratio: float = 1.0
    warmup_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise SearchError(f"epochs and batch_size must be >= 1, got {self.epochs}, "
                             f"{self.batch_size}")
        if self.lr <= 0 or self.kd_ratio < 0 or self.weight_decay < 0:
            raise SearchError("lr must be > 0 and kd_ratio, weight_decay >= 0")


@dataclass
class FinetuneResult:
    path: Path
    subnet: SubnetConfig
    acc_before: float  # test top-1 after BN recalibration, before fine-tuning
    acc_after: float
    epochs: int
    steps: int
    seconds: float
    resumed_from_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["subnet"] = str(self.path), self.subnet.to_dict()
        return d


# ------------------------------------------------------------------------------ subnet input
def load_subnet_choice(text: str, space: SearchSpace, target: str | None = None) -> SubnetConfig:
    """A SubNet from what `search` writes or prints, or a plain SubnetConfig.

    Accepts: 'largest' / 'smallest'; SubnetConfig JSON (text or file); `search --json`
    output ({"subnet": ...}, or with --targets a list of them, picked by `target`
    name); a frontier file ({"frontier": [...]}, picked by index `target`).
    """
    word = text.strip()
    if word.lower() in ("largest", "smallest"):
        return space.largest() if word.lower() == "largest" else space.smallest()
    if word.startswith(("{", "[")):
        raw, where = word, "--subnet"
    else:
        path = Path(word).expanduser()
        if not path.is_file():
            raise SearchError(f"--subnet {text!r} is neither JSON, an existing file, 'largest' "
                             "nor 'smallest'")
        raw, where = path.read_text(encoding="utf-8"), str(path)
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        raise SearchError(f"{where}: not JSON ({err})") from None
    if isinstance(doc, dict) and isinstance(doc.get("frontier"), list):
        doc = _pick(doc["frontier"], target, where, by_index=True)
    elif isinstance(doc, list):
        doc = _pick(doc, target, where, by_index=False)
    if isinstance(doc, dict) and isinstance(doc.get("subnet"), dict):
        doc = doc["subnet"]
    try:
        return space.validate(SubnetConfig.from_dict(doc))
    except (KeyError, TypeError, ValueError) as err:
        raise SearchError(f"{where}: not a SubNet of this SuperNet ({err})") from None


def _pick(rows: list, target: str | None, where: str, *, by_index: bool) -> Any:
    if by_index:
        if target is None:
            raise SearchError(f"{where} is a frontier of {len(rows)} SubNets; choose one with "
                             f"--target INDEX (0..{len(rows) - 1})")
        try:
            return rows[int(target)]
        except (ValueError, IndexError):
            raise SearchError(f"--target {target!r}: {where} has frontier indices "
                             f"0..{len(rows) - 1}") from None
    names = [r.get("name") for r in rows if isinstance(r, dict)]
    if target is None:
        if len(rows) == 1:
            return rows[0]
        raise SearchError(f"{where} holds {len(rows)} targets {names}; choose one with --target")
    for r in rows:
        if isinstance(r, dict) and r.get("name") == target:
            return r
    raise SearchError(f"--target {target!r} is not in {where}; it holds {names}")


# ----------------------------------------------------------------------------------- training
def _teacher(source: SuperNet, device: torch.device) -> nn.Module:
    teacher = source.extract(source.space.largest()).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def finetune(checkpoint: str | os.PathLike, subnet: SubnetConfig, data: Dataset,
             output: str | os.PathLike, config: FinetuneConfig = FinetuneConfig(), *,
             device: str | torch.device = "cpu", save_every: int | None = None,
             progress: bool = False,
             on_step: Callable[[int, float], None] | None = None) -> FinetuneResult:
    """Fine-tune `subnet` of `checkpoint` on `data.train`; write the SuperNet checkpoint `output`.

    Resumes when `output` already holds an unfinished fine-tune of the same SubNet
    and source; refuses an `output` that holds anything else.
    """
    device = torch.device(device)
    checkpoint, output = Path(checkpoint), Path(output)
    if checkpoint.resolve() == output.resolve():
        raise SearchError("-o must differ from --checkpoint: the source stays the teacher")
    src = load_checkpoint(checkpoint, map_location=device)
    source = src.supernet.eval()
    cfg = source.space.validate(subnet)
    settings = asdict(config)
    # `output` is resumed whenever it exists, once it proved to be this fine-tune
    run = Run(output.parent, output.name, resume=True, claim=False)

    state: dict[str, Any] | None = None
    if run.resuming:
        prev = load_checkpoint(output, map_location=device)
        state = (prev.train_state or {}).get("finetune")
        if (not isinstance(state, dict) or state.get("subnet") != cfg.to_dict()
                or not same_identity(state.get("source_identity"),
                                     supernet_identity(source))):
            raise SearchError(f"{output} exists and is not a fine-tune of this SubNet of "
                              f"{checkpoint}; remove it or choose another -o")
        check_resume(output, {"config": state.get("config")}, {"config": settings},
                     error=SearchError, option="-o")
        net = prev.supernet
        run.restore(state["step"], state.get("history", []), state.get("seconds", 0.0))
    else:
        net = copy.deepcopy(source)
        # Every stored BN statistic belongs to the weights before fine-tuning.
        net.subnet_norms.clear()

    loader = Loader(data.train, data, config.batch_size, train=True, seed=config.seed,
                    resolution=cfg.resolution, device=device)
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise SearchError(f"the training split ({len(data.train)} images) holds no full batch of "
                         f"{config.batch_size}; lower --batch-size")
    total = config.epochs * steps_per_epoch
    # The training loop's channels_last layout; fp32 (a short fine-tune needs no loss scaler).
    precision = resolve_precision(device, "off")
    to_memory_format(net, precision)
    opt = torch.optim.SGD(param_groups(net, config.weight_decay), lr=config.lr,
                          momentum=config.momentum, nesterov=config.momentum > 0)

    run.restart_clock()  # the seconds count the accuracy measurements too
    if state is None:
        acc_before = recalibrated_accuracy(source, cfg, data, device=device)
        state = {"subnet": cfg.to_dict(), "source": str(checkpoint),
                 "source_identity": supernet_identity(source), "config": settings,
                 "step": 0, "done": False, "acc_before": acc_before, "history": [],
                 "seconds": 0.0}
    else:
        if state.get("optimizer"):
            opt.load_state_dict(state["optimizer"])
        acc_before = float(state["acc_before"])
    start = run.step
    history = run.history

    def save(step: int, done: bool, acc_after: float | None = None) -> None:
        state.update(step=step, done=done, optimizer=opt.state_dict(), history=history,
                     seconds=run.tick())
        if acc_after is not None:
            state["acc_after"] = acc_after
        # Only the fine-tuned SubNet's BN statistics mean anything in this file.
        kept = {cfg: net.subnet_norms[cfg]} if cfg in net.subnet_norms else {}
        net.subnet_norms.clear()
        net.subnet_norms.update(kept)
        save_checkpoint(output, net, train_state={"config": (src.train_state or {}).get("config"),
                                                  "finetune": state},
                        meta={**(src.meta or {}), "created_by": "weightshare finetune",
                              "finetuned_subnet": cfg.to_json(), "source": str(checkpoint)})

    if not state.get("done"):
        teacher = to_memory_format(_teacher(source, device), precision)
        run.start(total=total, steps_per_epoch=steps_per_epoch, desc="finetune",
                  progress=progress, log=False, restart_clock=False)
        running, counted = 0.0, 0
        dropout = float(net.config.get("dropout", 0.0) or 0.0)
        net.train()
        try:
            for b in run.batches(loader):
                lr = cosine_lr(b.step, total, config.lr, config.warmup_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                torch.manual_seed(step_seed(config.seed, b.step))  # dropout masks
                x = precision.input(b.x)
                with precision.autocast():
                    logits = net(x, cfg, dropout=dropout).float()
                loss = F.cross_entropy(logits, b.y, label_smoothing=config.label_smoothing)
                if config.kd_ratio > 0:
                    with torch.no_grad(), precision.autocast():
                        soft = F.softmax(teacher(x).float(), dim=1)
                    loss = loss + config.kd_ratio * soft_cross_entropy(logits, soft)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                step = run.advance(loss=f"{value:.3f}", lr=f"{lr:.2g}")
                running, counted = running + value, counted + 1
                if on_step is not None:
                    on_step(step, value)
                if step % steps_per_epoch == 0:
                    run.record_epoch({"epoch": step // steps_per_epoch,
                                      "loss": running / max(1, counted)})
                    running, counted = 0.0, 0
                    save(step, False)
                elif run.save_due(save_every):
                    save(step, False)
        finally:
            run.close()
        net.eval()
        acc_after = recalibrated_accuracy(net, cfg, data, device=device)
        save(total, True, acc_after)
    else:
        acc_after = float(state["acc_after"])
    return FinetuneResult(output, cfg, acc_before, acc_after, config.epochs, total,
                          float(state.get("seconds", run.tick())), start, history)
