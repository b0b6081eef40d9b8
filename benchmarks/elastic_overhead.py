"""Elastic overhead: `supernet(x, subnet)` vs the extracted static model, on this CPU.

For the smallest, a middle and the largest SubNet of a SuperNet, at batch 1 and
64, times the elastic forward (weights sliced per call) and `extract(subnet)`
(an ordinary torch model computing the same function) with
`weightshare.metrics.measure_latency`, interleaving the two in alternating
rounds so machine noise hits both alike. Both run the same SubNet on the same
input with the same thread count, in eval mode under `torch.no_grad()`.

The middle SubNet is, among `--samples` draws of `space.sample` (seed
`--seed`), the one whose MACs are closest to the mean of the smallest's and the
largest's. The project's goal: elastic within 1.3x of static at batch 64.

    python benchmarks/elastic_overhead.py                      # ofa_mbv3_small
    python benchmarks/elastic_overhead.py --supernet ofa_resnet_small
    python benchmarks/elastic_overhead.py --quick              # smoke test

Writes `elastic_overhead[_SUPERNET].{json,md,png}` to `--out` (the SuperNet is
named in the file name unless it is the default, ofa_mbv3_small).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path

import torch
from common import RESULTS_DIR, interleaved_latency, markdown_table, save_plot, write_results

import weightshare as ws

DEFAULT_SUPERNET = "ofa_mbv3_small"
BATCHES = (1, 64)
TARGET = 1.3  # the project's goal for batch 64


def pick_subnets(net: ws.SuperNet, samples: int, seed: int) -> dict[str, ws.SubnetConfig]:
    """Smallest, middle (sampled, MACs closest to the mean of the extremes) and largest."""
    small, large = net.space.smallest(), net.space.largest()
    target = (net.cost(small).macs + net.cost(large).macs) / 2
    rng = random.Random(seed)
    drawn = [net.space.sample(rng) for _ in range(samples)]
    middle = min(drawn, key=lambda s: abs(net.cost(s).macs - target))
    return {"smallest": small, "middle": middle, "largest": large}


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    net = ws.create_supernet(args.supernet).eval()
    subnets = pick_subnets(net, args.samples, args.seed)
    results = []
    with torch.no_grad():
        for label, cfg in subnets.items():
            static = net.extract(cfg).eval()
            cost = net.cost(cfg)
            for batch in BATCHES:
                gen = torch.Generator().manual_seed(batch)
                x = torch.randn(batch, *net.input_shape(cfg), generator=gen)
                max_diff = (net(x, cfg) - static(x)).abs().max().item()

                def elastic(x=x, cfg=cfg):
                    return net(x, cfg)

                def extracted(x=x, static=static):
                    return static(x)

                lat = interleaved_latency({"elastic": elastic, "static": extracted},
                                          rounds=args.rounds, runs=args.runs,
                                          warmup=args.warmup, min_seconds=args.min_seconds)
                e, s = lat["elastic"], lat["static"]
                round_ratios = [a / b for a, b in zip(e["round_medians_ms"],
                                                      s["round_medians_ms"], strict=True)]
                row = {
                    "subnet": label,
                    "config": cfg.to_dict(),
                    "macs": cost.macs,
                    "params": cost.params,
                    "batch": batch,
                    "elastic": e,
                    "static": s,
                    "ratio": e["median_ms"] / s["median_ms"],
                    "round_ratios": round_ratios,
                    "max_abs_output_diff": max_diff,
                }
                results.append(row)
                print(f"{label:8s} batch {batch:3d}: elastic {e['median_ms']:8.3f} ms  "
                      f"static {s['median_ms']:8.3f} ms  ratio {row['ratio']:.3f}  "
                      f"(paired rounds {_spread(round_ratios)})", flush=True)
    return {
        "benchmark": "elastic_overhead",
        "supernet": args.supernet,
        "threads": torch.get_num_threads(),
        "settings": {"rounds": args.rounds, "runs_per_round": args.runs, "warmup": args.warmup,
                     "min_seconds_per_round": args.min_seconds, "samples": args.samples,
                     "seed": args.seed, "quick": args.quick, "batches": list(BATCHES)},
        "target_ratio_batch64": TARGET,
        # other processes on the machine: 1/5/15-minute load averages at start and end
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "results": results,
    }


def _spread(values: list[float]) -> str:
    """`median (q1-q3)` of the paired per-round ratios."""
    if len(values) < 2:
        return f"{values[0]:.2f}"
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{statistics.median(values):.2f} ({q1:.2f}-{q3:.2f})"


def table(payload: dict) -> str:
    headers = ["SubNet", "MMACs", "batch", "elastic median ms", "elastic p99 ms",
               "static median ms", "static p99 ms", "elastic/static", "paired rounds: median (IQR)"]
    rows = [
        [r["subnet"], f"{r['macs'] / 1e6:.1f}", r["batch"], r["elastic"]["median_ms"],
         r["elastic"]["p99_ms"], r["static"]["median_ms"], r["static"]["p99_ms"],
         f"{r['ratio']:.2f}x", _spread(r["round_ratios"])]
        for r in payload["results"]
    ]
    return markdown_table(headers, rows)


def notes(payload: dict) -> str:
    b64 = [r for r in payload["results"] if r["batch"] == 64]
    worst = max(b64, key=lambda r: r["ratio"])
    verdict = "met" if worst["ratio"] <= TARGET else "NOT met"
    st = payload["settings"]
    diff = max(r["max_abs_output_diff"] for r in payload["results"])
    return (
        f"Goal elastic/static <= {TARGET}x at batch 64: **{verdict}** (worst: "
        f"{worst['subnet']}, {worst['ratio']:.2f}x).\n\n"
        f"{payload['threads']} torch threads; eval mode, `torch.no_grad()`. Each cell: "
        f"{st['rounds']} alternating rounds per variant of >= {st['runs_per_round']} timed runs "
        f"(and >= {st['min_seconds_per_round']} s) after {st['warmup']} warm-up calls; median = "
        f"median of the round medians, p99 = worst round's p99; elastic/static = ratio of the "
        f"medians; paired rounds = elastic/static of each round's back-to-back pair (median and "
        f"interquartile range, a gauge of the noise). Load average (1 min) "
        f"{payload['load_average']['start'][0]:.1f} at start, "
        f"{payload['load_average']['end'][0]:.1f} at end (other processes on the machine). "
        f"Both variants run the same SubNet on the same input (max |output difference| {diff:.1e}). Middle SubNet: "
        f"of {st['samples']} `space.sample` draws (seed {st['seed']}), MACs closest to the mean "
        f"of smallest and largest.\n"
    )


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(5.5 * len(BATCHES), 4.2))
    for ax, batch in zip(axes, BATCHES, strict=True):
        rows = [r for r in payload["results"] if r["batch"] == batch]
        xs = range(len(rows))
        w = 0.38
        el = [r["elastic"]["median_ms"] for r in rows]
        st = [r["static"]["median_ms"] for r in rows]
        ax.bar([i - w / 2 for i in xs], el, w, label="elastic  supernet(x, s)", color="tab:orange")
        ax.bar([i + w / 2 for i in xs], st, w, label="static  extract(s)(x)", color="tab:blue")
        for i, r in enumerate(rows):
            ax.annotate(f"{r['ratio']:.2f}x", (i, max(el[i], st[i])), ha="center", va="bottom",
                        xytext=(0, 3), textcoords="offset points", fontsize=10, weight="bold")
        ax.set_xticks(list(xs), [f"{r['subnet']}\n{r['macs'] / 1e6:.1f} MMACs" for r in rows])
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"batch {batch}")
        ax.set_ylim(0, max(el + st) * 1.18)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{payload['supernet']}: elastic vs extracted forward, "
                 f"{payload['threads']} CPU threads (ratio = elastic/static)")
    save_plot(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", default=DEFAULT_SUPERNET, choices=ws.list_supernets())
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's default; recorded either way)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per variant per round")
    p.add_argument("--rounds", type=int, default=10, help="alternating rounds per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before each round")
    p.add_argument("--min-seconds", type=float, default=0.25,
                   help="each round also runs at least this long (more runs at batch 1)")
    p.add_argument("--samples", type=int, default=200, help="draws to pick the middle SubNet")
    p.add_argument("--seed", type=int, default=0, help="seed of those draws")
    p.add_argument("--quick", action="store_true", help="a smoke test: few rounds and runs")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.runs, args.warmup, args.min_seconds = 2, 3, 1, 0.0

    payload = run(args)
    name = "elastic_overhead"
    if args.supernet != DEFAULT_SUPERNET:
        name += f"_{args.supernet}"
    tbl = table(payload)
    json_path, md_path = write_results(name, payload, tbl, args.out,
                                       title=f"Elastic overhead: {args.supernet}",
                                       notes=notes(payload))
    png_path = Path(args.out) / f"{name}.png"
    plot(payload, png_path)
    print()
    print(tbl)
    print(notes(payload))
    print(f"wrote {json_path}, {md_path}, {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
