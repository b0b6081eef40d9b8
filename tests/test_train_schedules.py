"""Schedules and method plans at their boundaries (pure functions: no training needed)."""

from __future__ import annotations

import math
import random

import pytest

from weightshare.space import SearchSpace
from weightshare.train.methods import MethodSettings, make_method
from weightshare.train.samplers import coupled_expand, restrict, sample_compound, sandwich
from weightshare.train.schedules import (
    OFA_PHASES,
    cosine_lr,
    deps_beta,
    deps_shrink_step,
    phase_lr,
    phase_table,
)

SPACE = SearchSpace(5, (2, 3, 4), (3, 4, 6), (3, 5, 7), default_resolution=28)


def rng(step: int = 0) -> random.Random:
    return random.Random(step)


def test_cosine_lr_endpoints_and_warmup():
    assert cosine_lr(0, 100, 0.4) == pytest.approx(0.4)
    assert cosine_lr(50, 100, 0.4) == pytest.approx(0.2)
    assert cosine_lr(100, 100, 0.4) == pytest.approx(0.0)
    assert cosine_lr(0, 100, 0.4, warmup_steps=10) == pytest.approx(0.04)
    assert cosine_lr(9, 100, 0.4, warmup_steps=10) == pytest.approx(0.4)
    assert cosine_lr(10, 100, 0.4, warmup_steps=10) == pytest.approx(0.4)
    assert cosine_lr(55, 100, 0.4, warmup_steps=10) == pytest.approx(0.2)


def test_deps_shrink_point_and_beta_ramp():
    assert deps_shrink_step(1000, 0.5) == 500
    assert deps_beta(499, 500, 50) == 0.0
    assert deps_beta(500, 500, 50, epsilon=1e-3) == pytest.approx(1e-3)
    assert deps_beta(525, 500, 50, epsilon=0.0) == pytest.approx(0.5)
    assert deps_beta(549, 500, 50) < 1.0
    assert deps_beta(550, 500, 50) == 1.0
    assert deps_beta(10_000, 500, 50) == 1.0
    assert deps_beta(500, 500, 0) == 1.0  # ramp off
    with pytest.raises(ValueError):
        deps_shrink_step(10, 1.5)


def test_deps_plan_before_and_after_shrink():
    s = MethodSettings(lr=0.1, shrink_at=0.5, beta_ramp_steps=10, dropout=0.1)
    plan = make_method("deps", s)
    total = 200
    before = plan(99, total, SPACE, rng())
    assert before.phase == "full" and len(before.tasks) == 1 and not before.reorder
    assert before.beta == 0.0
    assert before.tasks[0].subnet == SPACE.largest() and before.tasks[0].loss == "ce"
    assert before.tasks[0].dropout == 0.1
    at = plan(100, total, SPACE, rng())
    assert at.phase == "shrink" and at.reorder and len(at.tasks) == 4
    assert [t.loss for t in at.tasks] == ["ce", "kd_inplace", "kd_inplace", "kd_inplace"]
    assert at.tasks[0].subnet == SPACE.largest() and at.tasks[1].subnet == SPACE.smallest()
    assert at.tasks[0].weight == 1.0 and at.tasks[1].weight == pytest.approx(1e-3)
    assert at.tasks[1].dropout == 0.0  # dropout only on the largest
    after = plan(101, total, SPACE, rng())
    assert not after.reorder and after.tasks[1].weight > at.tasks[1].weight
    assert plan(110, total, SPACE, rng()).tasks[2].weight == 1.0
    # one cosine over the whole run: no restart at the shrink point
    assert before.lr > at.lr > after.lr
    assert at.lr == pytest.approx(cosine_lr(100, total, 0.1))


def test_bignas_sandwich_from_step_zero():
    plan = make_method("bignas", MethodSettings(lr=0.1))
    p = plan(0, 100, SPACE, rng())
    assert len(p.tasks) == 4 and all(t.weight == 1.0 for t in p.tasks)
    assert p.tasks[0].subnet == SPACE.largest() and p.tasks[1].subnet == SPACE.smallest()


def test_full_trains_only_the_largest():
    plan = make_method("full", MethodSettings(lr=0.1))
    for step in (0, 50, 99):
        p = plan(step, 100, SPACE, rng(step))
        assert [t.subnet for t in p.tasks] == [SPACE.largest()]


def test_ofa_phase_table_matches_paper_epochs():
    table = phase_table(OFA_PHASES, 605)
    assert [(p.name, a, b) for p, a, b in table] == [
        ("teacher", 0, 180), ("kernel", 180, 305), ("depth-1", 305, 330),
        ("depth-2", 330, 455), ("expand-1", 455, 480), ("expand-2", 480, 605),
    ]
    assert sum(p.epochs for p in OFA_PHASES) == 605


def test_ofa_plans_at_each_phase_change():
    plan = make_method("ofa", MethodSettings(lr=0.96))
    total = 605
    p = plan(179, total, SPACE, rng())
    assert p.phase == "teacher" and [t.subnet for t in p.tasks] == [SPACE.largest()]
    p = plan(180, total, SPACE, rng())
    assert p.phase == "kernel" and p.freeze_teacher and all(t.loss == "kd_teacher" for t in p.tasks)
    assert not plan(181, total, SPACE, rng()).freeze_teacher
    for step in range(181, 305, 17):  # kernel phase: depth and expand stay maximal
        t = plan(step, total, SPACE, rng(step)).tasks[0].subnet
        assert set(t.depths) == {4} and set(t.expands) == {6}
    depth1 = [plan(s, total, SPACE, rng(s)) for s in range(305, 330)]
    assert all(p.phase == "depth-1" and len(p.tasks) == 2 for p in depth1)
    seen = {d for p in depth1 for t in p.tasks for d in t.subnet.depths}
    assert seen == {3, 4} and all(set(t.subnet.expands) == {6} for p in depth1 for t in p.tasks)
    depth2 = {d for s in range(330, 455) for t in plan(s, total, SPACE, rng(s)).tasks for d in t.subnet.depths}
    assert depth2 == {2, 3, 4}
    p = plan(455, total, SPACE, rng())
    assert p.phase == "expand-1" and p.reorder and len(p.tasks) == 4
    assert not plan(456, total, SPACE, rng()).reorder
    exp1 = {e for s in range(455, 480) for t in plan(s, total, SPACE, rng(s)).tasks for e in t.subnet.expands}
    assert exp1 == {4, 6}
    p = plan(480, total, SPACE, rng())
    assert p.phase == "expand-2" and p.reorder


def test_ofa_phase_lrs_restart_in_paper_proportions():
    table = phase_table(OFA_PHASES, 605)
    assert phase_lr(table, 0, 0.96) == pytest.approx(0.96)
    # kernel phase warms up for 5 of its 125 epochs, then peaks at the base LR
    assert phase_lr(table, 180, 0.96) == pytest.approx(0.96 / 5)
    assert phase_lr(table, 185, 0.96) == pytest.approx(0.96)
    assert phase_lr(table, 305, 0.96) == pytest.approx(0.08)
    # depth-2 and expand-2 warm up for 5 epochs too (OFA's train_ofa_net.py), then peak
    assert phase_lr(table, 330, 0.96) == pytest.approx(0.24 / 5)
    assert phase_lr(table, 335, 0.96) == pytest.approx(0.24)
    assert phase_lr(table, 455, 0.96) == pytest.approx(0.08)
    assert phase_lr(table, 480, 0.96) == pytest.approx(0.24 / 5)
    assert phase_lr(table, 485, 0.96) == pytest.approx(0.24)
    assert phase_lr(table, 604, 0.96) < 0.01


def test_compound_coupling():
    assert [coupled_expand(SPACE, d) for d in (2, 3, 4)] == [3, 4, 6]
    for seed in range(20):
        cfg = sample_compound(SPACE, rng(seed))
        SPACE.validate(cfg)
        for unit, _, e, _ in cfg.unit_blocks():
            assert e == coupled_expand(SPACE, cfg.depths[unit])
    compofa = make_method("compofa", MethodSettings(lr=0.1))
    late = compofa(440, 455, SPACE, rng())
    assert late.phase == "compound-2" and len(late.tasks) == 4
    bignas_c = make_method("bignas", MethodSettings(lr=0.1, sampler="compound"))
    for t in bignas_c(0, 10, SPACE, rng()).tasks[2:]:
        assert all(e == coupled_expand(SPACE, t.subnet.depths[u]) for u, _, e, _ in t.subnet.unit_blocks())


def test_restrict_and_sandwich():
    sub = restrict(SPACE, depth=2, expand=1)
    assert sub.depth_choices == (3, 4) and sub.expand_choices == (6,)
    assert sub.kernel_choices == SPACE.kernel_choices
    s = sandwich(SPACE, rng(), num_random=3)
    assert len(s) == 5 and s[0] == SPACE.largest() and s[1] == SPACE.smallest()
    with pytest.raises(ValueError, match="unknown sampler"):
        sandwich(SPACE, rng(), sampler="nope")


def test_plans_are_deterministic_per_step():
    plan = make_method("bignas", MethodSettings(lr=0.1))
    assert plan(7, 100, SPACE, rng(7)) == plan(7, 100, SPACE, rng(7))
    assert plan(7, 100, SPACE, rng(7)) != plan(8, 100, SPACE, rng(8))


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="choose from"):
        make_method("nas", MethodSettings(lr=0.1))
    assert not math.isnan(cosine_lr(3, 3, 0.1))
