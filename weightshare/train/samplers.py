"""Which SubNets a training step trains: uniform, compound (CompOFA), sandwich, phase-restricted.

Samplers are functions of (space, rng) looked up by name in `SAMPLERS`; the
rng is seeded from the global step by the caller, so a resumed run samples the
same SubNets as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..registry import Registry
from ..space import SearchSpace, SubnetConfig

__all__ = ["SAMPLERS", "sample_uniform", "sample_compound", "sandwich", "restrict", "coupled_expand"]


def sample_uniform(space: SearchSpace, rng: random.Random) -> SubnetConfig:
    return space.sample(rng)


def coupled_expand(space: SearchSpace, depth: int) -> float:
    """CompOFA's coupling: the i-th smallest depth goes with the i-th smallest expand ratio.

    For OFA's MobileNetV3 space: depth 2 -> expand 3, 3 -> 4, 4 -> 6.
    """
    d, e = space.depth_choices, space.expand_choices
    if len(d) == 1:
        return e[-1]
    i = d.index(depth)
    return e[round(i * (len(e) - 1) / (len(d) - 1))]


def sample_compound(space: SearchSpace, rng: random.Random) -> SubnetConfig:
    """Depth per unit at random; every block of a unit takes the expand coupled to its depth."""
    depths = tuple(rng.choice(space.depth_choices) for _ in range(space.num_units))
    expands = tuple(coupled_expand(space, d) for d in depths for _ in range(d))
    kernels = tuple(rng.choice(space.kernel_choices) for _ in range(sum(depths)))
    widths = tuple(rng.choice(space.width_choices) for _ in depths) if space.width_choices else ()
    res = rng.choice(space.resolution_choices) if space.resolution_choices else None
    return SubnetConfig(depths, expands, kernels, widths, res)


Sampler = Callable[[SearchSpace, random.Random], SubnetConfig]
SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.add("uniform", sample_uniform)
SAMPLERS.add("compound", sample_compound)


def sandwich(space: SearchSpace, rng: random.Random, num_random: int = 2,
             sampler: str = "uniform") -> list[SubnetConfig]:
    """The sandwich rule: largest, smallest, then `num_random` sampled SubNets."""
    draw = SAMPLERS.get(sampler)
    return [space.largest(), space.smallest(), *(draw(space, rng) for _ in range(num_random))]


def restrict(space: SearchSpace, depth: int | None = None, expand: int | None = None,
             kernel: int | None = None, width: int | None = None) -> SearchSpace:
    """The sub-space keeping only the `n` largest choices of each dimension (None = all).

    Progressive shrinking opens one dimension at a time this way; configs
    sampled from the sub-space are valid in the full space.
    """

    def top(choices: tuple, n: int | None) -> tuple:
        return choices if n is None or not choices else choices[-n:]

    return SearchSpace(
        num_units=space.num_units,
        depth_choices=top(space.depth_choices, depth),
        expand_choices=top(space.expand_choices, expand),
        kernel_choices=top(space.kernel_choices, kernel),
        width_choices=top(space.width_choices, width),
        resolution_choices=space.resolution_choices,
        default_resolution=space.default_resolution,
    )
