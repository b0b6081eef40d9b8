"""BN recalibration, top-1 evaluation and the fixed evaluation set of SubNets.

After weight-shared training the shared BN statistics fit no SubNet in
particular; each SubNet is evaluated (and later served) with its own statistics
recomputed on a held-out slice of the training set (OFA: ~2000 images). They
are stored on the SuperNet (`subnet_norms`) and saved in the checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Dataset, EpochBatches, ImageSet, make_loader
from ..models import SuperNet
from ..nn import NormContext, StatsRecorder
from ..space import SubnetConfig

__all__ = ["recalibrate", "classify", "accuracy", "recalibrated_accuracy", "evaluation_subnets",
           "evaluate_subnets"]


def _batches(data: ImageSet, dataset: Dataset, batch_size: int, device: torch.device,
             resolution: int | None) -> EpochBatches:
    return make_loader(data, dataset, batch_size, train=False, resolution=resolution,
                       device=device)


@torch.no_grad()
def recalibrate(net: SuperNet, subnet: SubnetConfig, dataset: Dataset, *, batch_size: int = 250,
                device: torch.device | str = "cpu") -> None:
    """Recompute `subnet`'s BN statistics over `dataset.calib` and store them on `net`."""
    was_training = net.training
    net.eval()
    rec = StatsRecorder()
    norm = NormContext(recorder=rec)
    res = subnet.resolution
    for x, _ in _batches(dataset.calib, dataset, batch_size, torch.device(device), res):
        net(x, subnet, norm=norm)
    net.set_subnet_stats(subnet, rec.result())
    net.train(was_training)


@torch.no_grad()
def classify(model: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]]
             ) -> dict[str, float]:
    """Top-1 accuracy in percent, mean cross-entropy and count of `model` over `batches`.

    The one accuracy computation: SuperNet SubNets (`accuracy`), a fine-tuned SubNet
    (`recalibrated_accuracy`) and quantized networks (`quant`) all count through it.
    The caller puts the model in eval mode.
    """
    correct, loss, n = 0, 0.0, 0
    for x, y in batches:
        logits = model(x)
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return {"acc": 100.0 * correct / max(1, n), "loss": loss / max(1, n), "n": n}


@torch.no_grad()
def accuracy(net: SuperNet, subnet: SubnetConfig, dataset: Dataset, data: ImageSet | None = None,
             *, batch_size: int = 500, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in percent of `subnet` on `data` (default: the test split)."""
    was_training = net.training
    net.eval()
    data = data if data is not None else dataset.test
    batches = _batches(data, dataset, batch_size, torch.device(device), subnet.resolution)
    acc = classify(lambda x: net(x, subnet), batches)["acc"]
    net.train(was_training)
    return acc


def recalibrated_accuracy(net: SuperNet, subnet: SubnetConfig, dataset: Dataset, *,
                          device: torch.device | str = "cpu", reuse: bool = False) -> float:
    """Test top-1 of `subnet` after recomputing its BN statistics on calib (`reuse`: only
    when `net` holds none for it): the number `weightshare evaluate` reports."""
    if not (reuse and subnet in net.subnet_norms):
        recalibrate(net, subnet, dataset, device=device)
    return accuracy(net, subnet, dataset, device=device)


def evaluation_subnets(net: SuperNet, n_spread: int = 12, seed: int = 0,
                       pool: int = 3000) -> list[SubnetConfig]:
    """The 4 corners plus `n_spread` SubNets spread evenly in MACs between smallest and largest.

    A seeded pool of random SubNets is drawn; for each of `n_spread` MAC targets
    evenly spaced strictly between the smallest's and the largest's MACs, the
    closest unused pool member is taken. Every method evaluates on this same set.
    """
    space = net.space
    corners = space.corners()
    rng = random.Random(seed)
    candidates = list({space.sample(rng) for _ in range(pool)} - set(corners))
    candidates.sort(key=lambda c: c.to_json())  # set order is not deterministic
    macs = {c: net.cost(c).macs for c in candidates}
    lo, hi = net.cost(space.smallest()).macs, net.cost(space.largest()).macs
    chosen: list[SubnetConfig] = []
    for i in range(1, n_spread + 1):
        target = lo + (hi - lo) * i / (n_spread + 1)
        best = min((c for c in candidates if c not in chosen),
                   key=lambda c: abs(macs[c] - target))
        chosen.append(best)
    return corners + chosen


def evaluate_subnets(net: SuperNet, subnets: Iterable[SubnetConfig], dataset: Dataset, *,
                     device: torch.device | str = "cpu", progress: bool = False) -> list[dict]:
    """Recalibrate then test every SubNet: [{"subnet", "macs", "params", "acc"}]."""
    subnets = list(subnets)
    rows = []
    bar = None
    if progress:
        from ..progress import progress as tqdm

        bar = tqdm(total=len(subnets), desc="evaluate", leave=False)
    for cfg in subnets:
        recalibrate(net, cfg, dataset, device=device)
        cost = net.cost(cfg)
        rows.append({"subnet": cfg.to_dict(), "macs": cost.macs, "params": cost.params,
                     "acc": accuracy(net, cfg, dataset, device=device)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows
