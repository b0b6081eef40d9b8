"""Shared builders for the serving tests: a tiny SuperNet checkpoint and its serving stack.

Imported by the other test_serve_* files (pytest finds no tests here).
"""

from __future__ import annotations

from pathlib import Path

import torch

import weightshare as ws
from weightshare.checkpoint import save_checkpoint
from weightshare.serve.stack import Stack, StackConfig, build_stack

TINY = {"width_mult": 0.25, "kernel_choices": (3, 5), "feature_dim": 32,
        "unit_widths": (16, 16, 24, 24, 32)}
DATASET = {"n_train": 256, "n_test": 128, "calib_size": 64}


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = ws.create_supernet("ofa_mbv3_small", **TINY)
    return save_checkpoint(folder / "tiny.pt", net)


def tiny_config(ckpt: Path, **kw) -> StackConfig:
    # keep_dominated: these stacks deploy exactly the N SubNets spread in MACs (a random
    # tiny SuperNet has no meaningful frontier); frontier filtering has its own tests.
    base = {"num_subnets": 3, "dataset": "synthetic", "dataset_options": DATASET,
            "max_batch": 4, "profile_runs": 3, "threads": 1, "keep_dominated": True}
    base.update(kw)
    return StackConfig(checkpoint=str(ckpt), **base)


def tiny_stack(ckpt: Path, **kw) -> Stack:
    return build_stack(tiny_config(ckpt, **kw))
