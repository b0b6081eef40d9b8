"""Helpers shared by the scripts in `benchmarks/`.

Every benchmark writes `results/NAME.json` (its numbers, the machine, the exact
command that reproduces it and a timestamp) and `results/NAME.md` (the same as a
Markdown table), optionally a PNG plot. Typical use::

    from common import interleaved_latency, markdown_table, save_plot, write_results

    lat = interleaved_latency({"a": fa, "b": fb}, rounds=5, runs=30)
    table = markdown_table(["variant", "median ms"], [[k, v["median_ms"]] for k, v in lat.items()])
    write_results("my_bench", {"latency": lat}, table, out_dir, title="My benchmark")

`machine_info()` never records the host name, so results can be published.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from weightshare.metrics import measure_latency

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "command_line",
    "interleaved_latency",
    "machine_info",
    "markdown_table",
    "save_plot",
    "write_results",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)  # kB -> GiB
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """The machine and software a result was measured on (no host name)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": _ram_gib(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One-line summary of `machine_info()` for Markdown reports."""
    return (
        f"{info['cpu']}, {info['usable_cores']}/{info['logical_cores']} cores usable, "
        f"{info['ram_gib']} GiB RAM, torch {info['torch']} ({info['torch_threads']} threads), "
        f"Python {info['python']}, {info['platform']}"
    )


def command_line() -> str:
    """The command that reproduces this run: `python benchmarks/SCRIPT.py ARGS`."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_str = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_str = str(script)
    return shlex.join(["python", script_str, *sys.argv[1:]])


# ------------------------------------------------------------------ measuring
def interleaved_latency(fns: Mapping[str, Callable[[], object]], *, rounds: int = 5,
                        runs: int = 30, warmup: int = 5,
                        min_seconds: float = 0.0) -> dict[str, dict[str, Any]]:
    """Time several variants in alternating rounds so machine noise hits all alike.

    Each round runs `weightshare.metrics.measure_latency` (`warmup` untimed calls,
    then >= `runs` timed ones) once per variant; the order is reversed every other
    round (A B, B A, ...) so no variant always runs first. Per variant returns
    `median_ms` (median of the round medians), `p99_ms` (the worst round's p99),
    `runs` (timed calls in all) and `round_medians_ms`.
    """
    names = list(fns)
    per: dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            per[n].append(measure_latency(fns[n], warmup=warmup, runs=runs,
                                          min_seconds=min_seconds))
    return {
        n: {
            "median_ms": statistics.median(lat.median_ms for lat in per[n]),
            "p99_ms": max(lat.p99_ms for lat in per[n]),
            "runs": sum(lat.runs for lat in per[n]),
            "round_medians_ms": [lat.median_ms for lat in per[n]],
        }
        for n in names
    }


# ------------------------------------------------------------------- writing
def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats get 2 decimals (3 significant digits below 1)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, payload: Mapping[str, Any], table_md: str,
                  out_dir: str | Path = RESULTS_DIR, *, title: str | None = None,
                  notes: str = "") -> tuple[Path, Path]:
    """Write `NAME.json` (payload + machine + command + timestamp) and `NAME.md`.

    Returns the two paths. `notes` is Markdown placed under the table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    command = command_line()
    data = {
        **payload,
        "machine": machine,
        "command": command,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md = [
        f"# {title or name}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine_line(machine)}",
        "",
        table_md.rstrip("\n"),
        "",
    ]
    if notes:
        md += [notes.rstrip("\n"), ""]
    md_path = out / f"{name}.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    return json_path, md_path


def save_plot(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG (tight bounding box) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
