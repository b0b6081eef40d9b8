"""The search space: a value that names one SubNet, and the set of allowed values.

`SubnetConfig` is an immutable, hashable value. It lists a depth per unit and an
expand ratio and a kernel size for each *active* block only (``sum(depths)``
entries), so two configs are equal exactly when they denote the same network:
OFA's fixed-length lists carry values for skipped blocks, which makes equal
networks compare unequal and breaks caches keyed by SubNet (per-SubNet BN
statistics, profiles). Fixed-length vectors, needed by predictors and genetic
search, come from `SearchSpace.encode` and `SearchSpace.to_genome`.

This module imports no torch, so search and scheduling code can use it cheaply.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

__all__ = ["SubnetConfig", "SearchSpace"]


def _num(v: float) -> float | int:
    """Integers print as integers in JSON (expand 3, not 3.0)."""
    return int(v) if float(v).is_integer() else float(v)


@dataclass(frozen=True)
class SubnetConfig:
    """One SubNet of a SuperNet.

    depths: blocks run in each unit (the first `d` of the unit's blocks).
    expands, kernels: one value per active block, unit after unit.
    widths: per-unit width multiplier (ResNet spaces); empty when width is fixed.
    resolution: input side in pixels; None when the space has a fixed resolution.
    """

    depths: tuple[int, ...]
    expands: tuple[float, ...]
    kernels: tuple[int, ...]
    widths: tuple[float, ...] = ()
    resolution: int | None = None

    def __post_init__(self) -> None:
        # Accept lists (from JSON or user code) but store tuples, so the value stays hashable.
        for name in ("depths", "expands", "kernels", "widths"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "expands", tuple(_num(e) for e in self.expands))
        object.__setattr__(self, "widths", tuple(_num(w) for w in self.widths))
        if len(self.expands) != sum(self.depths) or len(self.kernels) != sum(self.depths):
            raise ConfigError(
                f"SubnetConfig needs one expand and one kernel per active block: depths "
                f"{list(self.depths)} make {sum(self.depths)} blocks, got {len(self.expands)} "
                f"expands and {len(self.kernels)} kernels"
            )

    def unit_blocks(self) -> Iterator[tuple[int, int, float, int]]:
        """Yield (unit, index in unit, expand, kernel) for every active block."""
        pos = 0
        for unit, depth in enumerate(self.depths):
            for i in range(depth):
                yield unit, i, self.expands[pos], self.kernels[pos]
                pos += 1

    def to_dict(self) -> dict:
        out: dict = {
            "depths": list(self.depths),
            "expands": list(self.expands),
            "kernels": list(self.kernels),
        }
        if self.widths:
            out["widths"] = list(self.widths)
        if self.resolution is not None:
            out["resolution"] = self.resolution
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> SubnetConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a SubnetConfig is a JSON object, got {type(data).__name__}")
        known = {"depths", "expands", "kernels", "widths", "resolution"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown SubnetConfig field(s) {sorted(unknown)}; allowed: {sorted(known)}"
            )
        missing = {"depths", "expands", "kernels"} - set(data)
        if missing:
            raise ConfigError(f"SubnetConfig is missing field(s) {sorted(missing)}")
        return cls(
            depths=tuple(int(d) for d in data["depths"]),
            expands=tuple(data["expands"]),
            kernels=tuple(int(k) for k in data["kernels"]),
            widths=tuple(data.get("widths", ())),
            resolution=data.get("resolution"),
        )

    @classmethod
    def from_json(cls, text: str) -> SubnetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"not valid SubnetConfig JSON: {err}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class SearchSpace:
    """The allowed SubNets of one SuperNet.

    `num_units` units of up to `max(depth_choices)` blocks. Optional elastic
    dimensions are empty tuples when fixed (`width_choices`, `resolution_choices`).
    """

    num_units: int
    depth_choices: tuple[int, ...]
    expand_choices: tuple[float, ...]
    kernel_choices: tuple[int, ...]
    width_choices: tuple[float, ...] = ()
    resolution_choices: tuple[int, ...] = ()
    default_resolution: int = 224
    _genome_bounds: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth_choices", tuple(sorted(int(d) for d in self.depth_choices)))
        object.__setattr__(
            self, "expand_choices", tuple(sorted(_num(e) for e in self.expand_choices))
        )
        object.__setattr__(
            self, "kernel_choices", tuple(sorted(int(k) for k in self.kernel_choices))
        )
        object.__setattr__(self, "width_choices", tuple(sorted(_num(w) for w in self.width_choices)))
        object.__setattr__(
            self, "resolution_choices", tuple(sorted(int(r) for r in self.resolution_choices))
        )
        if self.num_units < 1 or not self.depth_choices or min(self.depth_choices) < 1:
            raise ConfigError("a SearchSpace needs >= 1 unit and depth choices >= 1")
        if not self.expand_choices or not self.kernel_choices:
            raise ConfigError("a SearchSpace needs at least one expand and one kernel choice")
        bounds = [len(self.depth_choices)] * self.num_units
        bounds += [len(self.expand_choices)] * self.max_blocks
        bounds += [len(self.kernel_choices)] * self.max_blocks
        bounds += [len(self.width_choices)] * (self.num_units if self.width_choices else 0)
        bounds += [len(self.resolution_choices)] if self.resolution_choices else []
        object.__setattr__(self, "_genome_bounds", tuple(bounds))

    # ------------------------------------------------------------------ basics
    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def max_blocks(self) -> int:
        return self.num_units * self.max_depth

    @property
    def resolution(self) -> int:
        """The resolution SubNets with `resolution=None` run at (the space's default)."""
        return self.default_resolution

    def resolution_of(self, cfg: SubnetConfig) -> int:
        return cfg.resolution if cfg.resolution is not None else self.default_resolution

    def _make(self, depth: int, expand: float, kernel: int, width: float | None,
              resolution: int | None) -> SubnetConfig:
        n = self.num_units * depth
        return SubnetConfig(
            depths=(depth,) * self.num_units,
            expands=(expand,) * n,
            kernels=(kernel,) * n,
            widths=(width,) * self.num_units if width is not None else (),
            resolution=resolution,
        )

    def largest(self) -> SubnetConfig:
        return self._make(
            self.depth_choices[-1], self.expand_choices[-1], self.kernel_choices[-1],
            self.width_choices[-1] if self.width_choices else None,
            self.resolution_choices[-1] if self.resolution_choices else None,
        )

    def smallest(self) -> SubnetConfig:
        return self._make(
            self.depth_choices[0], self.expand_choices[0], self.kernel_choices[0],
            self.width_choices[0] if self.width_choices else None,
            self.resolution_choices[0] if self.resolution_choices else None,
        )

    def corners(self) -> list[SubnetConfig]:
        """The 4 corners of depth x expand: min/max depth x min/max expand ratio.

        The (min, min) corner is `smallest()` and the (max, max) corner is
        `largest()`; the two mixed corners use the largest kernel and width.
        These are the SubNets DepS validates on; duplicates are removed when a
        dimension has one choice.
        """
        out: list[SubnetConfig] = [self.smallest()]
        for d, e in ((self.depth_choices[0], self.expand_choices[-1]),
                     (self.depth_choices[-1], self.expand_choices[0])):
            out.append(self._make(
                d, e, self.kernel_choices[-1],
                self.width_choices[-1] if self.width_choices else None,
                self.resolution_choices[-1] if self.resolution_choices else None,
            ))
        out.append(self.largest())
        return list(dict.fromkeys(out))

    def size(self) -> int:
        """Number of distinct SubNets (skipped blocks carry no choices)."""
        per_block = len(self.expand_choices) * len(self.kernel_choices)
        per_unit = sum(per_block**d for d in self.depth_choices)
        per_unit *= max(1, len(self.width_choices))
        return per_unit**self.num_units * max(1, len(self.resolution_choices))

    # -------------------------------------------------------------- validation
    def validate(self, cfg: SubnetConfig) -> SubnetConfig:
        """Return `cfg` if it belongs to this space, else raise ValueError naming the field."""
        _validate_cached(self, cfg)
        return cfg

    def _check(self, cfg: SubnetConfig) -> None:
        if not isinstance(cfg, SubnetConfig):
            raise ConfigError(f"expected a SubnetConfig, got {type(cfg).__name__}")
        if len(cfg.depths) != self.num_units:
            raise ConfigError(
                f"depths has {len(cfg.depths)} values, this space has {self.num_units} units"
            )
        if self.width_choices and len(cfg.widths) != self.num_units:
            raise ConfigError(
                f"widths has {len(cfg.widths)} values, this space needs one per unit "
                f"({self.num_units}) from {list(self.width_choices)}"
            )
        for field_name, values, allowed, label in (
            ("depths", cfg.depths, self.depth_choices, "depths"),
            ("expands", cfg.expands, self.expand_choices, "expand ratios"),
            ("kernels", cfg.kernels, self.kernel_choices, "kernel sizes"),
            ("widths", cfg.widths if self.width_choices else (), self.width_choices, "widths"),
        ):
            for i, v in enumerate(values):
                if v not in allowed:
                    raise ConfigError(
                        f"{field_name}[{i}]={v} is not allowed; allowed {label}: {list(allowed)}"
                    )
        if cfg.widths and not self.width_choices:
            raise ConfigError("widths must be empty: width is not elastic in this space")
        if self.resolution_choices:
            if cfg.resolution is not None and cfg.resolution not in self.resolution_choices:
                raise ConfigError(
                    f"resolution={cfg.resolution} is not allowed; allowed resolutions: "
                    f"{list(self.resolution_choices)}"
                )
        elif cfg.resolution not in (None, self.default_resolution):
            raise ConfigError(
                f"resolution={cfg.resolution} is not allowed; this space runs at "
                f"{self.default_resolution} only (leave resolution out)"
            )

    def contains(self, cfg: SubnetConfig) -> bool:
        try:
            self.validate(cfg)
        except ValueError:
            return False
        return True

    # ----------------------------------------------------------------- sampling
    def sample(self, rng: random.Random) -> SubnetConfig:
        """A SubNet drawn uniformly per gene (depth per unit, then each active block)."""
        return self.from_genome(self._random_genome(rng))

    def _random_genome(self, rng: random.Random) -> list[int]:
        return [rng.randrange(b) for b in self._genome_bounds]

    def mutate(self, cfg: SubnetConfig, rng: random.Random, prob: float = 0.1) -> SubnetConfig:
        """Resample each gene with probability `prob` (OFA's evolution: 0.1).

        Genes of blocks that are skipped in `cfg` start random, so a depth that
        grows gets random new blocks instead of always the smallest.
        """
        genome = self._fill_inactive(self.to_genome(cfg), cfg, rng)
        for i, b in enumerate(self._genome_bounds):
            if rng.random() < prob:
                genome[i] = rng.randrange(b)
        return self.from_genome(genome)

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
        """Uniform crossover: every gene from either parent with probability 1/2."""
        ga = self._fill_inactive(self.to_genome(a), a, rng)
        gb = self._fill_inactive(self.to_genome(b), b, rng)
        return self.from_genome([x if rng.random() < 0.5 else y for x, y in zip(ga, gb, strict=True)])

    def _fill_inactive(self, genome: list[int], cfg: SubnetConfig, rng: random.Random) -> list[int]:
        n, md = self.num_units, self.max_depth
        for u, d in enumerate(cfg.depths):
            for i in range(d, md):
                genome[n + u * md + i] = rng.randrange(len(self.expand_choices))
                genome[n + self.max_blocks + u * md + i] = rng.randrange(len(self.kernel_choices))
        return genome

    def enumerate(self, limit: int = 1_000_000) -> Iterator[SubnetConfig]:
        """Every SubNet, for spaces small enough to list (e.g. CompOFA-coupled ones)."""
        if self.size() > limit:
            raise ConfigError(f"space has {self.size():,} SubNets, more than limit={limit:,}")
        import itertools

        unit_options: list[list[tuple[int, tuple[float, ...], tuple[int, ...], float | None]]] = []
        blocks = list(itertools.product(self.expand_choices, self.kernel_choices))
        widths: Sequence[float | None] = self.width_choices or (None,)
        for _ in range(self.num_units):
            opts = []
            for d in self.depth_choices:
                for combo in itertools.product(blocks, repeat=d):
                    for w in widths:
                        opts.append((d, tuple(c[0] for c in combo), tuple(c[1] for c in combo), w))
            unit_options.append(opts)
        resolutions: Sequence[int | None] = self.resolution_choices or (None,)
        for units in itertools.product(*unit_options):
            for r in resolutions:
                yield SubnetConfig(
                    depths=tuple(u[0] for u in units),
                    expands=tuple(e for u in units for e in u[1]),
                    kernels=tuple(k for u in units for k in u[2]),
                    widths=tuple(u[3] for u in units) if self.width_choices else (),
                    resolution=r,
                )

    # ------------------------------------------------------------------ vectors
    @property
    def genome_bounds(self) -> tuple[int, ...]:
        """Number of choices of each integer gene (for pymoo's integer variables)."""
        return self._genome_bounds

    def to_genome(self, cfg: SubnetConfig) -> list[int]:
        """Fixed-length integer genome: choice indices; skipped blocks hold 0."""
        self.validate(cfg)
        md = self.max_depth
        genome = [self.depth_choices.index(d) for d in cfg.depths]
        exp = [0] * self.max_blocks
        ker = [0] * self.max_blocks
        for unit, i, e, k in cfg.unit_blocks():
            exp[unit * md + i] = self.expand_choices.index(e)
            ker[unit * md + i] = self.kernel_choices.index(k)
        genome += exp + ker
        if self.width_choices:
            genome += [self.width_choices.index(w) for w in cfg.widths]
        if self.resolution_choices:
            r = cfg.resolution if cfg.resolution is not None else self.resolution_choices[-1]
            genome.append(self.resolution_choices.index(r))
        return genome

    def from_genome(self, genome: Sequence[int]) -> SubnetConfig:
        if len(genome) != len(self._genome_bounds):
            raise ConfigError(f"genome has {len(genome)} genes, expected {len(self._genome_bounds)}")
        g = [int(x) for x in genome]
        for i, (x, b) in enumerate(zip(g, self._genome_bounds, strict=True)):
            if not 0 <= x < b:
                raise ConfigError(f"gene {i}={x} out of range [0, {b})")
        n, md, mb = self.num_units, self.max_depth, self.max_blocks
        depths = tuple(self.depth_choices[x] for x in g[:n])
        expands, kernels = [], []
        for u, d in enumerate(depths):
            for i in range(d):
                expands.append(self.expand_choices[g[n + u * md + i]])
                kernels.append(self.kernel_choices[g[n + mb + u * md + i]])
        pos = n + 2 * mb
        widths: tuple[float, ...] = ()
        if self.width_choices:
            widths = tuple(self.width_choices[x] for x in g[pos : pos + n])
            pos += n
        resolution = self.resolution_choices[g[pos]] if self.resolution_choices else None
        return SubnetConfig(depths, tuple(expands), tuple(kernels), widths, resolution)

    @property
    def encoding_size(self) -> int:
        return (
            self.num_units * len(self.depth_choices)
            + self.max_blocks * (len(self.expand_choices) + len(self.kernel_choices))
            + self.num_units * len(self.width_choices)
            + len(self.resolution_choices)
        )

    def encode(self, cfg: SubnetConfig) -> list[float]:
        """One-hot feature vector of fixed length (OFA's predictor encoding).

        Skipped blocks are all-zero, so the vector is a function of the network.
        """
        self.validate(cfg)
        vec = [0.0] * self.encoding_size
        nd, ne, nk = len(self.depth_choices), len(self.expand_choices), len(self.kernel_choices)
        for u, d in enumerate(cfg.depths):
            vec[u * nd + self.depth_choices.index(d)] = 1.0
        base = self.num_units * nd
        for unit, i, e, k in cfg.unit_blocks():
            slot = base + (unit * self.max_depth + i) * (ne + nk)
            vec[slot + self.expand_choices.index(e)] = 1.0
            vec[slot + ne + self.kernel_choices.index(k)] = 1.0
        base += self.max_blocks * (ne + nk)
        if self.width_choices:
            nw = len(self.width_choices)
            for u, w in enumerate(cfg.widths):
                vec[base + u * nw + self.width_choices.index(w)] = 1.0
            base += self.num_units * nw
        if self.resolution_choices:
            r = cfg.resolution if cfg.resolution is not None else self.resolution_choices[-1]
            vec[base + self.resolution_choices.index(r)] = 1.0
        return vec

    # ---------------------------------------------------------------- (de)serial
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_genome_bounds", None)
        for k in ("depth_choices", "expand_choices", "kernel_choices", "width_choices",
                  "resolution_choices"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    def summary(self) -> str:
        parts = [
            f"{self.num_units} units x up to {self.max_depth} blocks",
            f"depth {list(self.depth_choices)}",
            f"expand {list(self.expand_choices)}",
            f"kernel {list(self.kernel_choices)}",
        ]
        if self.width_choices:
            parts.append(f"width {list(self.width_choices)}")
        if self.resolution_choices:
            parts.append(f"resolution {list(self.resolution_choices)}")
        else:
            parts.append(f"resolution {self.default_resolution}")
        return ", ".join(parts) + f"; {self.size():,} SubNets (~10^{math.log10(self.size()):.1f})"


@functools.lru_cache(maxsize=65536)
def _validate_cached(space: SearchSpace, cfg: SubnetConfig) -> None:
    # Both are frozen values, so a config valid once stays valid: forward() can
    # validate every call at the cost of a dict lookup.
    space._check(cfg)
