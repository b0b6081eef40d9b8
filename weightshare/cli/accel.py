"""Small-accelerator commands: `accel simulate` (SUSHI cache simulator) and `accel fastswitch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .core import (
    JsonOpt,
    app,
    emit_json,
)
from .serve import ServeCheckpointOpt

# ------------------------------------------------------------------------ accel
accel_app = typer.Typer(
    help="Small accelerators: SUSHI SubGraph-cache simulator and FastSwitch delta loading.",
    no_args_is_help=True,
)
app.add_typer(accel_app, name="accel")

AccelFrontierOpt = Annotated[
    Path, typer.Option("--frontier", "-f", metavar="F.json",
                       help="Deployed SubNets: a frontier file (`weightshare frontier`), a JSON "
                       'list of {"subnet": {...}, "acc": ...} or a serving profile; each needs '
                       "a measured accuracy.")
]


@accel_app.command("simulate")
def accel_simulate(
    checkpoint: ServeCheckpointOpt,
    frontier: AccelFrontierOpt,
    device: Annotated[str, typer.Option("--device", help="Device preset: fpga-small, mcu.")
                      ] = "fpga-small",
    buffer_kb: Annotated[list[float] | None, typer.Option(
        "--buffer-kb", help="On-chip buffer (KiB); repeatable (default: the preset's).")] = None,
    trace: Annotated[str, typer.Option(
        "--trace", help="Serving trace spec (shape only: stretched to --load).")
    ] = "gamma:cv2=4,duration=10",
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="Cache policy; repeatable (default: none, lru, subgraph-stationary).")
    ] = None,
    scheduler: Annotated[list[str] | None, typer.Option(
        "--scheduler", help="Scheduler; repeatable (default: static, cache-aware).")] = None,
    load: Annotated[float, typer.Option(
        "--load", help="Mean arrivals per uncached service time of the most accurate SubNet.")
    ] = 0.5,
    slo_factor: Annotated[float, typer.Option(
        "--slo-factor", help="Latency target = this x the most accurate SubNet's uncached "
        "service time.")] = 2.0,
    window: Annotated[int, typer.Option("--window", min=1,
                                        help="SubGraph Stationary: queries it looks back.")] = 32,
    every: Annotated[int, typer.Option("--every", min=1,
                                       help="SubGraph Stationary: update every N queries.")] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Replay a serving trace on a modeled accelerator with an on-chip weight cache: per
    (buffer, cache policy, scheduler) the off-chip bytes per query, modeled latency and
    energy, mean served accuracy and the fraction of latency targets met.

    Example:

        weightshare accel simulate --checkpoint ckpt.pt --frontier F.json --device fpga-small --buffer-kb 512 --trace gamma
    """
    from ..accel.cache import list_caches
    from ..accel.device import get_device
    from ..accel.run import load_deployment, sweep
    from ..accel.sim import AccelModel

    dev = get_device(device)
    net, deployed = load_deployment(checkpoint, frontier)
    model = AccelModel.from_supernet(net, deployed)
    rows = sweep(model, [dev], buffer_kb or [dev.buffer_bytes / 1024], policy or list_caches(),
                 scheduler or ["static", "cache-aware"], trace, load=load, slo_factor=slo_factor,
                 cache_options={"window": window, "every": every})
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"{'device':<11} {'buf KiB':>8} {'policy':<20} {'scheduler':<12} "
               f"{'offchip KB/q':>12} {'lat ms':>8} {'E mJ':>8} {'acc %':>6} {'met %':>6}")
    for r in rows:
        typer.echo(f"{r['device']:<11} {r['buffer_kb']:8g} {r['policy']:<20} "
                   f"{r['scheduler']:<12} {r['offchip_bytes_per_query'] / 1e3:12.1f} "
                   f"{r['latency_ms']:8.3f} {r['energy_mj']:8.4f} {r['mean_acc']:6.2f} "
                   f"{100 * r['target_met']:6.1f}")


@accel_app.command("fastswitch")
def accel_fastswitch(
    checkpoint: ServeCheckpointOpt,
    frontier: AccelFrontierOpt,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed switches per pair.")
                       ] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Measure FastSwitch on this machine: for every ordered pair of deployed SubNets, the
    bytes read and wall time of a delta switch (safetensors slices of the SuperNet) vs
    loading the target's whole extracted model (torch.load).

    Example:

        weightshare accel fastswitch --checkpoint ckpt.pt --frontier F.json --repeats 3
    """
    from ..accel.run import fastswitch_pairs, load_deployment

    net, deployed = load_deployment(checkpoint, frontier)
    rows = fastswitch_pairs(net, deployed, repeats=repeats)
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"{'from':<5} {'to':<5} {'delta KB':>9} {'full KB':>9} {'delta ms':>9} "
               f"{'full ms':>9}")
    for r in rows:
        typer.echo(f"{r['from']:<5} {r['to']:<5} {r['delta_bytes'] / 1e3:9.1f} "
                   f"{r['full_bytes'] / 1e3:9.1f} {r['delta_ms']:9.3f} {r['full_ms']:9.3f}")
    n = len(rows)
    typer.echo(f"mean: delta {sum(r['delta_bytes'] for r in rows) / n / 1e3:.1f} KB "
               f"{sum(r['delta_ms'] for r in rows) / n:.3f} ms, full "
               f"{sum(r['full_bytes'] for r in rows) / n / 1e3:.1f} KB "
               f"{sum(r['full_ms'] for r in rows) / n:.3f} ms")
