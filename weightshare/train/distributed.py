"""Data-parallel helpers: a no-op on one process, exact gradient averaging under torchrun.

We do not wrap the SuperNet in DistributedDataParallel: a sandwich step runs
several SubNets (several backward passes) before one optimizer step, and each
SubNet uses a different subset of the weights. Averaging the accumulated
gradients once per step, by hand, is simpler and exact. BN batch statistics are
synchronised (see `ElasticBatchNorm2d`) so N ranks compute what one process
with the global batch would.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist
from torch import nn

__all__ = ["setup", "rank", "local_rank", "world_size", "barrier", "all_reduce_grads",
           "broadcast_model", "sync_buffers", "is_distributed"]


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def setup() -> None:
    """Join the process group torchrun describes in the environment (once)."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    tdist.init_process_group(backend)


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def all_reduce_grads(model: nn.Module) -> None:
    """Average gradients over ranks; every rank trained the same SubNets (same seed)."""
    if not is_distributed():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset: offset + n].view_as(g))
        offset += n


def broadcast_model(model: nn.Module) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if not is_distributed():
        return
    for t in list(model.parameters()) + list(model.buffers()):
        tdist.broadcast(t.data, 0)


def sync_buffers(model: nn.Module) -> None:
    """Average BN running statistics (they match already with synchronised BN; cheap insurance)."""
    if not is_distributed():
        return
    for b in model.buffers():
        if b.is_floating_point():
            tdist.all_reduce(b.data)
            b.data /= world_size()
