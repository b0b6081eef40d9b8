"""Once-for-all training methods as pure step planners: DepS, OFA, BigNAS, CompOFA, full.

A method decides, for a global step, which SubNets to train, with which loss
and gradient weight, at which LR, and whether channels are reordered or the
OFA teacher is frozen first. It never touches tensors: the shared loop in
`loop.py` executes the plan. That keeps every method a few readable lines and
lets tests check plans at their boundaries without training anything.

Losses a task may ask for:
  "ce"          label-smoothed cross-entropy (the largest SubNet / full network)
  "kd_inplace"  soft cross-entropy to the detached predictions of this step's
                first task, the largest SubNet (BigNAS / DepS in-place KD, T = 1)
  "kd_teacher"  cross-entropy + kd_ratio x soft cross-entropy to a *fixed*
                teacher frozen at the end of OFA's first phase
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..registry import Registry
from ..space import SearchSpace, SubnetConfig
from .samplers import SAMPLERS, restrict, sandwich
from .schedules import (
    COMPOFA_PHASES,
    OFA_PHASES,
    Phase,
    cosine_lr,
    deps_beta,
    deps_shrink_step,
    phase_at,
    phase_lr,
    phase_table,
)

__all__ = ["Task", "StepPlan", "MethodSettings", "METHODS", "make_method", "method_names"]


@dataclass(frozen=True)
class Task:
    subnet: SubnetConfig
    loss: str
    weight: float = 1.0
    dropout: float = 0.0


@dataclass(frozen=True)
class StepPlan:
    tasks: tuple[Task, ...]
    lr: float
    phase: str
    beta: float = 1.0
    reorder: bool = False          # reorder channels by importance before this step
    freeze_teacher: bool = False   # copy the current weights as the fixed teacher first


@dataclass(frozen=True)
class MethodSettings:
    """The knobs the methods read (a view of TrainConfig)."""

    lr: float
    warmup_steps: int = 0
    dropout: float = 0.1
    shrink_at: float = 0.5
    beta_ramp_steps: int = 0
    beta_epsilon: float = 1e-3
    num_random: int = 2
    sampler: str = "uniform"


Planner = Callable[[int, int, SearchSpace, random.Random], StepPlan]


def _largest_only(space: SearchSpace, s: MethodSettings, lr: float, phase: str) -> StepPlan:
    return StepPlan((Task(space.largest(), "ce", 1.0, s.dropout),), lr, phase)


def _sandwich_tasks(space: SearchSpace, rng: random.Random, s: MethodSettings,
                    beta: float) -> tuple[Task, ...]:
    big, *rest = sandwich(space, rng, s.num_random, s.sampler)
    return (Task(big, "ce", 1.0, s.dropout), *(Task(c, "kd_inplace", beta) for c in rest))


def plan_full(s: MethodSettings) -> Planner:
    def plan(step: int, total: int, space: SearchSpace, rng: random.Random) -> StepPlan:
        return _largest_only(space, s, cosine_lr(step, total, s.lr, s.warmup_steps), "full")

    return plan


def plan_bignas(s: MethodSettings) -> Planner:
    def plan(step: int, total: int, space: SearchSpace, rng: random.Random) -> StepPlan:
        lr = cosine_lr(step, total, s.lr, s.warmup_steps)
        return StepPlan(_sandwich_tasks(space, rng, s, 1.0), lr, "sandwich")

    return plan


def plan_deps(s: MethodSettings) -> Planner:
    """Delayed epsilon-Shrinking: largest alone until `shrink_at`, then a beta-ramped sandwich."""

    def plan(step: int, total: int, space: SearchSpace, rng: random.Random) -> StepPlan:
        lr = cosine_lr(step, total, s.lr, s.warmup_steps)  # one cosine, no restart
        shrink = deps_shrink_step(total, s.shrink_at)
        if step < shrink:  # beta 0: no smaller SubNet contributes yet
            return replace(_largest_only(space, s, lr, "full"), beta=0.0)
        beta = deps_beta(step, shrink, s.beta_ramp_steps, s.beta_epsilon)
        return StepPlan(_sandwich_tasks(space, rng, s, beta), lr, "shrink", beta,
                        reorder=step == shrink)

    return plan


def _plan_progressive(phases: tuple[Phase, ...], s: MethodSettings) -> Planner:
    def plan(step: int, total: int, space: SearchSpace, rng: random.Random) -> StepPlan:
        table = phase_table(phases, total)
        phase, start, _ = phase_at(table, step)
        lr = phase_lr(table, step, s.lr)
        if phase.name == "teacher":
            return _largest_only(space, s, lr, phase.name)
        sub = restrict(space, phase.depth, phase.expand, phase.kernel, phase.width)
        draw = SAMPLERS["compound" if phase.compound else "uniform"]
        tasks = tuple(Task(draw(sub, rng), "kd_teacher") for _ in range(phase.subnets_per_step))
        first_after_teacher = table[0][0].name == "teacher" and step == table[1][1]
        return StepPlan(tasks, lr, phase.name, reorder=phase.reorder and step == start,
                        freeze_teacher=first_after_teacher)

    return plan


def plan_ofa(s: MethodSettings) -> Planner:
    return _plan_progressive(OFA_PHASES, s)


def plan_compofa(s: MethodSettings) -> Planner:
    return _plan_progressive(COMPOFA_PHASES, s)


# A new training method: a planner factory here (or anywhere, with METHODS.add), and its
# paper epoch budget below; the shared loop, tests and `weightshare train` pick it up.
METHODS: Registry[Callable[[MethodSettings], Planner]] = Registry("training method")
for _name, _planner in (("deps", plan_deps), ("ofa", plan_ofa), ("bignas", plan_bignas),
                        ("compofa", plan_compofa), ("full", plan_full)):
    METHODS.add(_name, _planner)

# Relative epoch budgets of the papers (DepS 270 : BigNAS 400 : OFA 605 : CompOFA 330).
PAPER_EPOCHS = {"deps": 270, "bignas": 400, "ofa": 605, "compofa": 330, "full": 180}


def method_names() -> list[str]:
    return METHODS.names()


def make_method(name: str, settings: MethodSettings) -> Planner:
    planner = METHODS.get(name)
    SAMPLERS.get(settings.sampler)  # fail now, not at the first step
    return planner(settings)
