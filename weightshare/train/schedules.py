"""Pure schedule functions of the training step: learning rate, DepS's beta, OFA's phases.

Everything is a function of (global step, totals) with no state, so a resumed
run recomputes exactly the schedule an uninterrupted run would follow, and each
boundary can be unit-tested by evaluating one step before and after it.
Fractions of the budget follow the papers (REFERENCE.md section 2); steps are
rounded to whole optimizer steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "cosine_lr",
    "deps_shrink_step",
    "deps_beta",
    "Phase",
    "OFA_PHASES",
    "COMPOFA_PHASES",
    "phase_table",
    "phase_at",
    "phase_lr",
]


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0,
              final_lr: float = 0.0) -> float:
    """Linear warm-up to `base_lr`, then one cosine decay to `final_lr` at `total_steps`."""
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * t))


def deps_shrink_step(total_steps: int, shrink_fraction: float) -> int:
    """First step of shrinking: DepS starts at `shrink_fraction` (0.5) of the run."""
    if not 0.0 <= shrink_fraction <= 1.0:
        raise ValueError(f"shrink fraction must be in [0, 1], got {shrink_fraction}")
    return round(total_steps * shrink_fraction)


def deps_beta(step: int, shrink_step: int, ramp_steps: int, epsilon: float = 1e-3) -> float:
    """Weight of the smaller SubNets' gradients (epsilon-shrinking).

    0 before shrinking; `epsilon` at the shrink step, rising linearly per step to
    1 at `shrink_step + ramp_steps`, then 1. `ramp_steps = 0` turns the ramp off.
    """
    if step < shrink_step:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    t = (step - shrink_step) / ramp_steps
    return 1.0 if t >= 1.0 else epsilon + (1.0 - epsilon) * t


@dataclass(frozen=True)
class Phase:
    """One phase of progressive shrinking.

    epochs: the paper's length of this phase (only proportions matter here).
    lr: peak LR relative to the run's base LR; each phase restarts its own cosine.
    warmup_epochs: part of `epochs` spent warming up the LR.
    depth/expand/kernel/width: how many of the *largest* choices each dimension
    may take in this phase (None = all); the teacher phase allows 1 of each.
    compound: sample depth and expand coupled (CompOFA).
    """

    name: str
    epochs: float
    lr: float
    warmup_epochs: float = 0.0
    depth: int | None = None
    expand: int | None = None
    kernel: int | None = None
    width: int | None = None
    compound: bool = False
    subnets_per_step: int = 1
    reorder: bool = False


# OFA's 605-epoch schedule (REFERENCE.md section 2). LRs relative to the elastic-kernel
# phase (0.96 : 0.08 : 0.24 on OFA's global batch); the teacher trains at the same base LR.
# SubNets per step follow OFA's dynamic_batch_size (1 for kernel, 2 for depth, 4 for expand).
# The 125-epoch phases are OFA's 120 epochs plus its 5 warm-up epochs (train_ofa_net.py:
# kernel, depth phase 2 and expand phase 2 set warmup_epochs=5; the 25-epoch phases none).
OFA_PHASES: tuple[Phase, ...] = (
    Phase("teacher", 180, 1.0, depth=1, expand=1, kernel=1, width=1),
    Phase("kernel", 125, 1.0, warmup_epochs=5, depth=1, expand=1, width=1),
    Phase("depth-1", 25, 0.08 / 0.96, depth=2, expand=1, width=1, subnets_per_step=2),
    Phase("depth-2", 125, 0.24 / 0.96, warmup_epochs=5, expand=1, width=1, subnets_per_step=2),
    Phase("expand-1", 25, 0.08 / 0.96, expand=2, width=2, subnets_per_step=4, reorder=True),
    Phase("expand-2", 125, 0.24 / 0.96, warmup_epochs=5, subnets_per_step=4, reorder=True),
)

# CompOFA: the same teacher and kernel phases, then depth and expand shrink together
# (coupled), first over the two largest pairs, then all: the separate depth and
# expand phases of OFA collapse into one (REFERENCE.md gives only the 330-epoch
# total, so the split below keeps OFA's proportions for the phases it retains).
COMPOFA_PHASES: tuple[Phase, ...] = (
    Phase("teacher", 180, 1.0, depth=1, expand=1, kernel=1, width=1),
    Phase("kernel", 125, 1.0, warmup_epochs=5, depth=1, expand=1, width=1),
    Phase("compound-1", 25, 0.08 / 0.96, depth=2, expand=2, width=2, compound=True,
          subnets_per_step=4, reorder=True),
    Phase("compound-2", 125, 0.24 / 0.96, compound=True, subnets_per_step=4, reorder=True),
)


def phase_table(phases: tuple[Phase, ...], total_steps: int) -> list[tuple[Phase, int, int]]:
    """(phase, first step, end step) for each phase, proportional to the paper's epochs."""
    total_epochs = sum(p.epochs for p in phases)
    out, start, acc = [], 0, 0.0
    for i, p in enumerate(phases):
        acc += p.epochs
        end = total_steps if i == len(phases) - 1 else round(total_steps * acc / total_epochs)
        out.append((p, start, end))
        start = end
    return out


def phase_at(table: list[tuple[Phase, int, int]], step: int) -> tuple[Phase, int, int]:
    """The phase containing `step` (the last phase for steps past the end)."""
    for entry in table:
        if entry[1] <= step < entry[2]:
            return entry
    return table[-1]


def phase_lr(table: list[tuple[Phase, int, int]], step: int, base_lr: float) -> float:
    """OFA: each phase runs its own warm-up + cosine from `base_lr * phase.lr`."""
    phase, start, end = phase_at(table, step)
    length = max(1, end - start)
    warm = round(length * phase.warmup_epochs / phase.epochs) if phase.epochs else 0
    return cosine_lr(step - start, length, base_lr * phase.lr, warm)
