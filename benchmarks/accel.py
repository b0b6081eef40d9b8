"""SUSHI SubGraph-cache simulator and FastSwitch delta loading on the deployed frontier.

Steps, on one checkpoint (default: the reference SuperNet, checkpoints/reference/) and
the SubNets the serving benchmark deployed (`results/serving_profile.json`:
configs and measured test accuracies):

1. Simulator: for each device preset and on-chip buffer size, replay a bursty
   serving trace (gamma, cv2 4) with every cache policy (none, lru,
   subgraph-stationary) and scheduler (static, cache-aware); rows of off-chip
   bytes per query, modeled latency and energy, mean accuracy, targets met.
2. FastSwitch (real, this machine): every ordered pair of deployed SubNets,
   delta switch (safetensors slices) vs loading the whole extracted model.
3. Live (`--live`, on by default): the real server (`weightshare serve`) started
   twice on the checkpoint and deployed SubNets, in the normal mode (whole
   SuperNet resident) and with `--switch-mode delta`, each in a fresh process,
   replaying the same short bursty trace (`--live-seconds`) from the load
   generator: SLO attainment, accuracy, p99, SubNet switches, bytes and time of
   delta switches (the server's Prometheus counters), weights held, peak RSS.
4. Goals: SubGraph Stationary + cache-aware vs no caching at the same buffer
   (latency -25%, off-chip energy -75%, accuracy no lower); delta reads >= 2x
   fewer bytes and less time than full loads on average.

Writes results/accel.json, accel.md and accel.png. `--quick` uses fewer
buffer sizes, a shorter trace and fewer timing repeats. `--live-only` runs
only step 3 and writes accel_live.json / accel_live.md instead (a check that
leaves the full results alone).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.accel.cache import list_caches
from weightshare.accel.device import get_device
from weightshare.accel.run import fastswitch_pairs, load_deployment, sweep
from weightshare.accel.sim import AccelModel
from weightshare.experiments.fastswitch_live import format_live_table, live_switching

DEFAULT_CKPT = REPO_ROOT / "checkpoints" / "reference" / "checkpoint.pt"  # the reference SuperNet
DEFAULT_FRONTIER = RESULTS_DIR / "serving_profile.json"
BASELINE = ("none", "static")
SUSHI = ("subgraph-stationary", "cache-aware")


def goals(rows: list[dict], fast: list[dict]) -> list[dict]:
    out = []
    key = {(r["device"], r["buffer_kb"], r["policy"], r["scheduler"]): r for r in rows}
    for dev, kb in sorted({(r["device"], r["buffer_kb"]) for r in rows}):
        base, sushi = key[(dev, kb, *BASELINE)], key[(dev, kb, *SUSHI)]
        lat = 1 - sushi["latency_ms"] / base["latency_ms"]
        energy = 1 - sushi["offchip_energy_mj"] / base["offchip_energy_mj"]
        out.append({"device": dev, "buffer_kb": kb, "latency_saving": round(lat, 4),
                    "offchip_energy_saving": round(energy, 4),
                    "acc_delta": round(sushi["mean_acc"] - base["mean_acc"], 4),
                    "latency_goal": lat >= 0.25, "energy_goal": energy >= 0.75,
                    "acc_goal": sushi["mean_acc"] >= base["mean_acc"] - 1e-9})
    return out


def live_step(args: argparse.Namespace) -> dict[str, Any]:
    """Step 3: the real server, normal vs delta switch mode, on the same trace."""
    from weightshare.serve.stack import StackConfig

    with tempfile.TemporaryDirectory(prefix="accel-live-") as tmp:
        opts: dict[str, Any] = {"threads": 1}
        frontier = Path(args.frontier)
        data = json.loads(frontier.read_text())
        if isinstance(data, dict) and data.get("format") == "weightshare-serve-profile":
            # The serving benchmark's profile: reused when it matches this machine and
            # checkpoint; a copy, because a mismatch re-measures and rewrites the file.
            shutil.copy(frontier, Path(tmp) / "profile.json")
            opts["max_batch"] = max(data["batch_sizes"])
        opts["profile"] = str(Path(tmp) / "profile.json")
        base = StackConfig(checkpoint=args.checkpoint, deploy=args.frontier,
                           profile_runs=args.live_profile_runs, **opts)
        return live_switching(base, seconds=args.live_seconds, cv2=args.live_cv2,
                              policy=args.live_policy, log=print)


def live_notes(live: dict[str, Any]) -> str:
    headers, rows = format_live_table(live)
    return "\n".join([
        "## Live: the real server, normal vs `--switch-mode delta` (this machine)", "",
        f"Trace `{live['trace']}` ({live['requests']} requests), SLO {live['slo_ms']:g} ms, "
        f"policy {live['policy']}, same checkpoint, deployed SubNets and profile; each mode "
        "in a fresh server process, the load generator in another. Switches: batches on "
        "another SubNet than the batch before (`weightshare_subnet_switches_total`); delta "
        "loads, MB read and seconds: the delta backend's switches "
        "(`weightshare_switch_bytes_total`, `weightshare_switch_seconds_total`). Weights "
        "held: the whole SuperNet (normal) vs the largest SubNet footprint the delta backend "
        "held (fp32). Peak RSS is the whole server process: in delta mode it still loads the "
        "SuperNet for its runtime and profile and keeps a SuperNet-shaped skeleton, so it "
        "shows no saving; the saving is in weights held, which is what a device holding "
        "one SubNet needs.", "",
        markdown_table(headers, rows), ""])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({r["device"] for r in rows})
    fig, axes = plt.subplots(len(devices), 2, figsize=(10, 3.6 * len(devices)), squeeze=False)
    for i, dev in enumerate(devices):
        for policy in list_caches():
            pts = sorted((r["buffer_kb"], r) for r in rows if r["device"] == dev
                         and r["policy"] == policy and r["scheduler"] == "cache-aware")
            xs = [kb for kb, _ in pts]
            axes[i][0].plot(xs, [r["offchip_bytes_per_query"] / 1e3 for _, r in pts], "o-",
                            label=policy)
            axes[i][1].plot(xs, [r["latency_ms"] for _, r in pts], "o-", label=policy)
        axes[i][0].set_ylabel(f"{dev}: off-chip KB / query")
        axes[i][1].set_ylabel(f"{dev}: modeled latency (ms)")
        for ax in axes[i]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("on-chip buffer (KiB)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("SUSHI simulator, cache-aware scheduler, one curve per cache policy")
    save_plot(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    ap.add_argument("--frontier", default=str(DEFAULT_FRONTIER))
    ap.add_argument("--devices", default="fpga-small,mcu")
    ap.add_argument("--buffers-kb", default="32,64,128,256,512,768,1024,1536,2048")
    ap.add_argument("--trace", default="gamma:rate=50,cv2=4,duration=30,seed=0")
    ap.add_argument("--load", type=float, default=0.5)
    ap.add_argument("--slo-factor", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-serial-variant", dest="serial_variant", action="store_false",
                    help="Skip the fpga-small variant without transfer/compute overlap.")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                    help="Also run the real server in normal and delta switch mode.")
    ap.add_argument("--live-only", action="store_true",
                    help="Only the live step; writes accel_live.json/.md, not accel.json.")
    ap.add_argument("--live-seconds", type=float, default=8.0,
                    help="Length of the trace replayed against each server.")
    ap.add_argument("--live-cv2", type=float, default=8.0)
    ap.add_argument("--live-policy", default="slackfit")
    ap.add_argument("--live-profile-runs", type=int, default=10,
                    help="Timed runs per batch size if the profile must be re-measured.")
    ap.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)
    if args.quick:
        args.buffers_kb, args.repeats = "64,512,2048", 2
        args.trace = "gamma:rate=50,cv2=4,duration=5,seed=0"

    if args.live_only:
        live = live_step(args)
        write_results("accel_live", {"checkpoint": args.checkpoint, "frontier": args.frontier,
                                     "live": live}, live_notes(live), Path(args.out_dir),
                      title="FastSwitch in the real server")
        print("\n".join(live_notes(live).splitlines()[4:]))
        return 0

    net, deployed = load_deployment(args.checkpoint, args.frontier)
    model = AccelModel.from_supernet(net, deployed)
    devices = [get_device(d) for d in args.devices.split(",")]
    if args.serial_variant and "fpga-small" in args.devices.split(","):
        # Sensitivity, not a preset: the same board without double buffering, where weight
        # transfer adds to compute instead of hiding behind it.
        devices.append(replace(get_device("fpga-small"), name="fpga-small/serial",
                               overlap=False))
    buffers = [float(b) for b in args.buffers_kb.split(",")]
    rows = sweep(model, devices, buffers, list_caches(), ["static", "cache-aware"], args.trace,
                 load=args.load, slo_factor=args.slo_factor)
    fast = fastswitch_pairs(net, deployed, repeats=args.repeats)
    g = goals(rows, fast)
    mean = {k: statistics.fmean(r[k] for r in fast)
            for k in ("delta_bytes", "full_bytes", "delta_ms", "full_ms")}
    fs_goal = {"bytes_ratio": round(mean["full_bytes"] / mean["delta_bytes"], 3),
               "time_ratio": round(mean["full_ms"] / mean["delta_ms"], 3),
               **{f"mean_{k}": round(v, 4) for k, v in mean.items()}}
    fs_goal["goal_met"] = fs_goal["bytes_ratio"] >= 2 and fs_goal["time_ratio"] > 1
    live = live_step(args) if args.live else None
    bits = {d.name: d.bits for d in devices}
    payload = {
        "checkpoint": args.checkpoint, "frontier": args.frontier, "trace": args.trace,
        "load": args.load, "slo_factor": args.slo_factor, "quick": args.quick,
        "devices": [d.__dict__ for d in devices], "weight_bits": bits,
        "deployed": [{"name": d.name, "subnet": d.subnet.to_dict(), "acc": d.acc,
                      "weight_bytes_int8": model.weight_bytes(model.get(d.name), 8),
                      "macs": model.get(d.name).macs} for d in deployed],
        "rows": rows, "goals": g, "fastswitch": fast, "fastswitch_summary": fs_goal,
    }
    if live is not None:
        payload["live"] = live
    table = markdown_table(
        ["device", "buffer KiB", "policy", "scheduler", "off-chip KB/q", "hit rate", "latency ms",
         "energy mJ", "off-chip mJ", "acc %", "met %"],
        [[r["device"], r["buffer_kb"], r["policy"], r["scheduler"],
          round(r["offchip_bytes_per_query"] / 1e3, 1), round(r["hit_rate"], 3),
          round(r["latency_ms"], 4), round(r["energy_mj"], 4), round(r["offchip_energy_mj"], 4),
          round(r["mean_acc"], 2), round(100 * r["target_met"], 1)] for r in rows])
    gtable = markdown_table(
        ["device", "buffer KiB", "latency saving", "off-chip energy saving", "acc delta",
         "latency >= 25%", "energy >= 75%", "acc no lower"],
        [[x["device"], x["buffer_kb"], f"{100 * x['latency_saving']:.1f}%",
          f"{100 * x['offchip_energy_saving']:.1f}%", x["acc_delta"], x["latency_goal"],
          x["energy_goal"], x["acc_goal"]] for x in g])
    ftable = markdown_table(
        ["from", "to", "delta KB", "full KB", "delta ms", "full ms"],
        [[r["from"], r["to"], round(r["delta_bytes"] / 1e3, 1), round(r["full_bytes"] / 1e3, 1),
          r["delta_ms"], r["full_ms"]] for r in fast])
    notes = "\n".join([
        "## Goals: subgraph-stationary + cache-aware vs none + static, same buffer", "",
        gtable, "",
        "## FastSwitch: every ordered pair of deployed SubNets (this machine, warm page cache)",
        "",
        f"Mean over {len(fast)} pairs: delta {mean['delta_bytes'] / 1e3:.1f} KB in "
        f"{mean['delta_ms']:.2f} ms vs full {mean['full_bytes'] / 1e3:.1f} KB in "
        f"{mean['full_ms']:.2f} ms: {fs_goal['bytes_ratio']}x fewer bytes, "
        f"{fs_goal['time_ratio']}x faster.", "",
        ftable, "",
        live_notes(live) if live is not None else "",
        "## Model assumptions", "",
        "Weights at 8 bits; activations stay on chip and are not charged; a query takes "
        "max(compute, weight transfer) (double buffering); energy = MACs x pJ/MAC + off-chip "
        "bytes x pJ/B + every weight byte read once on chip. Caches only keep cells that "
        "stream through (no prefetch). The trace keeps its shape but is stretched so its mean "
        f"rate is {args.load} per uncached service time of the most accurate SubNet; each "
        f"query's target is {args.slo_factor}x that service time. Device presets: see "
        "`weightshare/accel/device.py`.",
    ])
    out = Path(args.out_dir)
    write_results("accel", payload, table, out, title="SUSHI simulator and FastSwitch",
                  notes=notes)
    plot(rows, out / "accel.png")
    for x in g:
        print(f"{x['device']:<11} {x['buffer_kb']:7g} KiB  latency -{100 * x['latency_saving']:5.1f}%"
              f"  off-chip energy -{100 * x['offchip_energy_saving']:5.1f}%  acc {x['acc_delta']:+.2f}")
    print(f"fastswitch: {fs_goal}")
    if live is not None:
        print("\n".join(live_notes(live).splitlines()[4:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
