"""Small pieces every search module needs: atomic writes, rank correlation, SuperNet identity.

Kept apart so the latency table, the predictor, NSGA-II and the frontier agree on
how a file is written (temp file + rename, so a kill never leaves half a file),
how a ranking is scored (Kendall tau-b) and how a file names the SuperNet it was
made for (name + constructor config + search space).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import WeightshareError
from ..io import atomic_write_text
from ..io import read_json as io_read_json

if TYPE_CHECKING:
    from ..models import SuperNet

__all__ = [
    "SearchError",
    "atomic_write_text",
    "kendall_tau",
    "mape",
    "supernet_identity",
    "same_identity",
    "with_defaults",
    "check_identity",
    "read_json",
]


class SearchError(WeightshareError, ValueError):
    """A search input is unusable: a foreign table or predictor, a corrupt file, an infeasible target.

    A ValueError, so the command line reports it as a user error (one line, exit 2).
    """


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or corrupt one is an error naming `what` it should be."""
    return io_read_json(path, what, SearchError)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired sequences (ties handled); nan when undefined."""
    from scipy.stats import kendalltau

    if len(x) != len(y):
        raise ValueError(f"kendall_tau needs paired values, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return float("nan")
    return float(kendalltau(list(x), list(y)).statistic)


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error of `predicted` against `measured`, in percent."""
    if len(predicted) != len(measured) or not measured:
        raise ValueError("mape needs as many predictions as measurements, at least one")
    return 100.0 * sum(abs(p - m) / m for p, m in zip(predicted, measured, strict=True)) / len(
        measured)


def supernet_identity(net: SuperNet) -> dict[str, Any]:
    """What a file stores to say which SuperNet it describes (plain JSON values)."""
    from ..checkpoint import plain

    return {"name": net.name, "config": plain(net.config), "space": plain(net.space.to_dict())}


def with_defaults(identity: Any) -> Any:
    """`identity` with its config completed by the SuperNet's constructor defaults.

    A constructor option added later (with a default that builds the old network) is
    missing from files written before it; filling defaults on both sides keeps those
    files matching while an option set to another value still does not match.
    """
    from ..checkpoint import plain
    from ..models.base import supernet_defaults
    from ..registry import UnknownNameError

    if not isinstance(identity, dict) or not isinstance(identity.get("config"), dict):
        return identity
    try:
        defaults = plain(supernet_defaults(identity["name"]))
    except UnknownNameError:  # nothing to fill; the names will differ
        return identity
    config = json.loads(json.dumps({**defaults, **identity["config"]}))
    return {**identity, "config": config}


def same_identity(a: Any, b: Any) -> bool:
    """Whether two `supernet_identity` values describe the same SuperNet."""
    return with_defaults(json.loads(json.dumps(a))) == with_defaults(json.loads(json.dumps(b)))


def check_identity(stored: Any, net: SuperNet, path: str | os.PathLike, what: str) -> None:
    """Raise SearchError unless `stored` (from `supernet_identity`) describes `net`."""
    mine = with_defaults(json.loads(json.dumps(supernet_identity(net))))
    if not isinstance(stored, dict):
        raise SearchError(f"{path}: this {what} does not say which SuperNet it was made for")
    stored = with_defaults(stored)
    if stored.get("name") != mine["name"] or stored.get("config") != mine["config"]:
        raise SearchError(
            f"{path}: this {what} was made for SuperNet {stored.get('name')!r} with config "
            f"{stored.get('config')}, not for this checkpoint's {mine['name']!r} with "
            f"{mine['config']}; make a new one for this checkpoint"
        )
    if stored.get("space") != mine["space"]:
        raise SearchError(f"{path}: this {what} was made for another search space")
