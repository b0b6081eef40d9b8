"""Start a training run from a checkpoint's weights (`TrainConfig.init_from`, `--from CKPT`).

The typical source is a converted model (`weightshare convert`): a trained
network is DepS's "partially trained full network", so its run can start with
importance reordering and go straight to the sandwich (`shrink_at=0`). Any
weightshare checkpoint works; only its SuperNet and weights are taken (not its
optimizer or step: that is `--resume`), and its per-SubNet BN statistics are
dropped, because training moves the weights they were measured for.
"""

from __future__ import annotations

from ..checkpoint import CheckpointError, load_checkpoint
from ..data import Dataset
from ..models import SuperNet

__all__ = ["load_initial_supernet"]


def load_initial_supernet(path: str, data: Dataset) -> SuperNet:
    """The SuperNet of checkpoint `path`, checked to fit `data` (classes, channels, size)."""
    net = load_checkpoint(path).supernet
    have = (net.num_classes, net.in_channels, net.space.resolution)
    want = (data.num_classes, data.in_channels, data.image_size)
    if have != want:
        raise CheckpointError(
            f"{path} holds a SuperNet for {have[0]} classes, {have[1]} channel(s), {have[2]} px; "
            f"dataset {data.name!r} has {want[0]} classes, {want[1]} channel(s), {want[2]} px"
        )
    net.subnet_norms.clear()
    return net
