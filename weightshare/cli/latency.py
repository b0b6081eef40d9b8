"""Latency-table commands: `latency-table build` and `latency-table check` (per-op latency
tables, `weightshare.search.latency_table`); `profile` and `profile-check` are their old
names, kept for one release (`weightshare.cli.deprecated`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..space import SubnetConfig
from .core import JsonOpt, SeedOpt, app, emit_json, fmt_count
from .deprecated import add_deprecated_alias
from .search import CheckpointOpt, DeviceOpt, ThreadsOpt, _set_threads

__all__ = ["latency_app", "latency_table_build", "latency_table_check"]


def _cal_summary(cal: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if cal is None else {k: v for k, v in cal.items() if k != "subnets"}


latency_app = typer.Typer(help="Per-operator latency tables: build one on this machine, check "
                          "its error.", no_args_is_help=True)
app.add_typer(latency_app, name="latency-table")


@latency_app.command("build")
def latency_table_build(
    checkpoint: CheckpointOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="TABLE.json", help="Latency table to write.")
    ],
    device: DeviceOpt = "cpu",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size to time.")] = 1,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed calls per op and round.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls first.")] = 10,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Interleaved timing rounds (the fastest time is "
                          "kept: other processes only add time).")
    ] = 3,
    calibrate: Annotated[
        int, typer.Option("--calibrate", min=0, help="Also time this many SubNets end to end "
                          "and fit scale + offset to them (0: none). Kept only when it lowers "
                          "the leave-one-out error; those SubNets are left out of profile-check.")
    ] = 0,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a per-operator latency table of a SuperNet on this machine.

    Every elastic block is timed at each of its choices and input shapes (plus the
    fixed stem, final layers and head) in its real context: a few SubNets that
    together hold every choice are run whole, and each layer is timed on the previous
    layer's real output (warm-up, then the fastest of repeated timings; rounds
    interleaved). A SubNet's latency is predicted as the sum of its layers' entries
    (microseconds) plus the measured cost of an empty forward, optionally mapped by a
    scale + offset fitted to --calibrate end-to-end timings. The table records the
    device, batch, thread count, machine and the SuperNet it was made for; check its
    error with `weightshare latency-table check`. (Formerly `weightshare profile`.)

    Example:

        weightshare latency-table build -c runs/deps/checkpoint.pt --calibrate 8 -o cpu_table.json
    """
    from ..checkpoint import load_checkpoint
    from ..search.latency_build import build_latency_table

    _set_threads(threads)
    net = load_checkpoint(checkpoint).supernet.eval()
    table = build_latency_table(net, device=device, batch=batch, warmup=warmup, runs=runs,
                                rounds=rounds, calibrate=calibrate, progress=not as_json)
    table.save(output)
    sp = net.space
    ends = {w: table.predict_ms(sp, c) for w, c in (("smallest", sp.smallest()),
                                                     ("largest", sp.largest()))}
    if as_json:
        emit_json({"path": str(output), "entries": len(table.entries), "device": table.device,
                   "batch": table.batch, "threads": table.threads,
                   "overhead_us": table.overhead_us, **{f"{k}_ms": v for k, v in ends.items()},
                   "calibration": _cal_summary(table.calibration),
                   "build_s": table.meta["build_s"]})
        return
    typer.echo(f"wrote {output}: {len(table.entries)} ops timed on {table.device}, batch "
               f"{table.batch}, {table.threads} threads ({table.meta['build_s']:.1f} s)")
    typer.echo(f"per-forward overhead added to every prediction: {table.overhead_us:.1f} us")
    cal = table.calibration
    if cal is not None:
        verdict = ("applied" if cal["applied"] else "NOT applied (it did not lower the "
                   "leave-one-out error; timings were probably disturbed, retry on a quiet machine)")
        typer.echo(f"calibration on {cal['n']} SubNets: x{cal['fitted_scale']:.3f} "
                   f"{cal['fitted_offset_us']:+.0f} us, MAPE raw {cal['raw_mape']:.1f} % -> "
                   f"leave-one-out {cal['loo_mape']:.1f} %: {verdict}")
    typer.echo(f"predicted: smallest {ends['smallest']:.3f} ms, largest {ends['largest']:.3f} ms")


@latency_app.command("check")
def latency_table_check(
    checkpoint: CheckpointOpt,
    latency_table: Annotated[
        Path, typer.Option("--latency-table", "-t", metavar="TABLE", help="Table to check.")
    ],
    n: Annotated[int, typer.Option("-n", "--num", min=2, help="SubNets to time end to end.")] = 20,
    seed: SeedOpt = 0,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed calls per SubNet and round.")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Timing rounds per SubNet.")] = 3,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a latency table: time N extracted SubNets end to end (the smallest, the largest
    and random ones) on the table's device and batch, and report the table's error.

    Prints the mean absolute percentage error (MAPE) of the predicted latency and the
    Kendall rank correlation between predicted and measured latency. Run it on the
    machine (and thread count) the table was made on. (Formerly `weightshare profile-check`.)

    Example:

        weightshare latency-table check -c runs/deps/checkpoint.pt -t cpu_table.json -n 30
    """
    from ..checkpoint import load_checkpoint
    from ..search.latency_build import check_latency_table
    from ..search.latency_table import load_latency_table

    _set_threads(threads)
    net = load_checkpoint(checkpoint).supernet.eval()
    table = load_latency_table(latency_table, net)
    report = check_latency_table(table, net, n=n, seed=seed, runs=runs, rounds=rounds,
                                 progress=not as_json)
    if as_json:
        emit_json(report.to_dict())
        return
    typer.echo(f"{'predicted ms':>12}  {'raw sum ms':>10}  {'measured ms':>11}  {'error %':>7}  MACs")
    for r in sorted(report.rows, key=lambda r: r["measured_ms"]):
        cfg = SubnetConfig.from_dict(r["subnet"])
        err = 100 * (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
        typer.echo(f"{r['predicted_ms']:12.3f}  {r['raw_ms']:10.3f}  {r['measured_ms']:11.3f}  "
                   f"{err:7.1f}  {fmt_count(net.cost(cfg).macs)}")
    cal = table.calibration
    how = ("calibrated" if cal and cal.get("applied") else
           "calibration not applied" if cal else "uncalibrated")
    typer.echo(f"{report.n_subnets} SubNets ({how}; none of them used to calibrate): MAPE "
               f"{report.mape:.1f} % (raw sum: {report.mape_raw:.1f} %), Kendall tau "
               f"{report.kendall_tau:.3f}")
    if report.noise_pct == report.noise_pct:
        typer.echo(f"timing noise: the same SubNet's rounds differ by {report.noise_pct:.1f} % on "
                   "average; an error near that is the machine, not the table")
    if report.method == "isolated":
        typer.echo("note: this is a version-1 table (layers timed in isolation, which "
                   "underestimates); rebuild it with `weightshare latency-table build`")


add_deprecated_alias(app, "weightshare profile", "weightshare latency-table build",
                     latency_table_build)
add_deprecated_alias(app, "weightshare profile-check", "weightshare latency-table check",
                     latency_table_check)
