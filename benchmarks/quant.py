"""nablaQDARTS on Fashion-MNIST: accuracy vs BitOps of searched mixed precision vs uniform QAT.

Rows, in one run (each retrained from scratch with the same recipe, once per retraining
seed -- `--seeds` -- on the same images, test accuracy on the same test images):

* ``float``      -- PC-DARTS search with float ops only (32/32 bits, lambda 0), its
                    genotype retrained at 32/32 bits everywhere;
* ``uniform-<b>`` -- that same float genotype retrained with QAT at b/b bits in every
                    cell layer (`--uniform`, default 4 and 2; stem and classifier float);
* ``qdarts-lambda-<x>`` -- nablaQDARTS searches over {2, 4} bits (the reference's
                    default) at each of `--lambdas`, each genotype retrained with QAT.

BitOps (headline) = the searched cells only, as the reference counts them (its stem and
classifier are float and uncounted); the JSON and the table also give the total with the
float stem and classifier at 32 x 32 bits.

Goal (the paper's, at our scale): a nablaQDARTS network with >= 18x fewer BitOps than
``float`` at <= 0.5 points lower accuracy, one with >= 100x fewer within 2 points, and
nablaQDARTS ahead of uniform quantization at equal BitOps (mean over the seeds).

Sizing: the `small` preset (3 cells x 2 nodes, C=8 search / C=12 retrain, 1,024 + 1,024
search images for 5 epochs, 3,000 retraining images for 3 epochs, 5,000 test images)
with 3 lambdas and 2 seeds takes about 45 minutes on one core (OMP_NUM_THREADS=1).
Scale up with ``--preset full`` or ``--set KEY=VALUE``.

Results go to results/quant.{json,md,png} after every retraining; runs (checkpoints) to
``--runs``. Rerunning the same command skips finished runs and resumes an interrupted one;
``--report-only`` writes the report from the finished runs without training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import (
    REPO_ROOT,
    RESULTS_DIR,
    command_line,
    markdown_table,
    save_plot,
    write_results,
)

from weightshare.quant.config import QuantConfig
from weightshare.quant.genotype import load_genotype
from weightshare.quant.retrain import retrain
from weightshare.quant.search import search
from weightshare.quant.train_utils import load_data

NAME = "quant"


def lam_name(lam: float) -> str:
    return f"qdarts-lambda-{lam:.0e}".replace("e-0", "e-").replace("e+0", "e+")


def bits_summary(layers: dict) -> dict:
    """Per cell layer [w, a] bits plus counts and the MAC-weighted mean bits product."""
    from collections import Counter

    cells = {n: r for n, r in layers.items() if n.startswith("cells.")}
    macs = sum(r["macs"] for r in cells.values())
    return {
        "per_layer": {n: [r["w_bits"], r["a_bits"]] for n, r in cells.items()},
        "counts": dict(Counter(f"{r['w_bits']}/{r['a_bits']}" for r in cells.values())),
        "mean_bits_product": sum(r["bitops"] for r in cells.values()) / max(macs, 1),
    }


def make_row(name: str, search_s: float, rets: list[dict], seeds: list[int],
             lam: float | None) -> dict:
    first = rets[0]
    accs = [round(r["test_acc"], 2) for r in rets]
    return {"name": name, "bitops": first["bitops"], "macs": first["macs"],
            "total_bitops": first["total_bitops"], "total_macs": first["total_macs"],
            "acc": round(statistics.mean(accs), 2), "accs": accs, "seeds": seeds,
            "acc_spread": round(max(accs) - min(accs), 2),
            "search_s": round(search_s, 1),
            "retrain_s": round(sum(r["retrain_s"] for r in rets), 1), "lambda": lam,
            "bits": bits_summary(first["layers"])}


def goals(rows: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    if "float" not in by:
        return {}
    f = by["float"]
    q = [r for r in rows if r["name"].startswith("qdarts")]
    for r in rows:
        r["reduction_x"] = round(f["bitops"] / r["bitops"], 1)
        r["total_reduction_x"] = round(f["total_bitops"] / r["total_bitops"], 1)
        r["acc_delta"] = round(r["acc"] - f["acc"], 2)
    g18 = [r["name"] for r in q if r["reduction_x"] >= 18 and r["acc_delta"] >= -0.5]
    g100 = [r["name"] for r in q if r["reduction_x"] >= 100 and r["acc_delta"] >= -2.0]
    ahead = {}
    for u in (r for r in rows if r["name"].startswith("uniform")):
        # "ahead at equal BitOps": some searched network at no more BitOps, at least as accurate
        winners = [r["name"] for r in q if r["bitops"] <= u["bitops"] and r["acc"] >= u["acc"]]
        ahead[u["name"]] = winners
    return {"18x_within_0.5pt": g18, "100x_within_2pt": g100, "ahead_of_uniform": ahead,
            "met": {"18x_within_0.5pt": bool(g18), "100x_within_2pt": bool(g100),
                    "ahead_of_uniform": bool(ahead) and all(ahead.values())}}


def report(rows: list[dict], traces: dict, cfg: QuantConfig, args: argparse.Namespace,
           out: Path) -> None:
    g = goals(rows)
    headers = ["row", "BitOps (cells)", "x fewer", "BitOps (all layers)", "x fewer (all)",
               "MACs (cells)", "top-1 % (mean)", "per seed", "vs float (pt)",
               "mean w*a bits", "search s", "retrain s"]
    table = markdown_table(headers, [
        [r["name"], f"{r['bitops'] / 1e6:.2f} M", r.get("reduction_x", ""),
         f"{r['total_bitops'] / 1e6:.1f} M", r.get("total_reduction_x", ""),
         f"{r['macs'] / 1e6:.2f} M", r["acc"], " / ".join(f"{a:.2f}" for a in r["accs"]),
         r.get("acc_delta", ""), round(r["bits"]["mean_bits_product"], 1), r["search_s"],
         r["retrain_s"]]
        for r in rows])
    finished = len(rows) == 1 + len(args.uniform) + len(args.lambdas) and all(
        len(r["accs"]) == len(args.seeds) for r in rows)
    lines = []
    if not finished:
        resume = command_line().replace(" --report-only", "")
        lines += ["**PARTIAL RESULTS: the run has not finished (rows or seeds missing). "
                  f"Resume it with `OMP_NUM_THREADS=1 {resume}` (finished runs are reused).**",
                  ""]
    if g:
        def status(ok: bool) -> str:
            # a goal not yet reached while rows are missing is pending, not failed
            return "met" if ok else ("not met" if finished else "pending (rows missing)")

        met = g["met"]
        ahead = "; ".join(f"{u}: {', '.join(w) if w else 'none'}"
                          for u, w in g["ahead_of_uniform"].items())
        lines += [
            "## Goals (mean top-1 over the retraining seeds, headline BitOps)",
            "",
            f"- >= 18x fewer BitOps than float at <= 0.5 pt lower accuracy: "
            f"**{status(met['18x_within_0.5pt'])}**"
            + (f" ({', '.join(g['18x_within_0.5pt'])})" if g["18x_within_0.5pt"] else ""),
            f"- >= 100x fewer BitOps within 2 pt: **{status(met['100x_within_2pt'])}**"
            + (f" ({', '.join(g['100x_within_2pt'])})" if g["100x_within_2pt"] else ""),
            "- ahead of uniform QAT at equal BitOps (a searched net with <= its BitOps and >= "
            f"its accuracy): **{status(met['ahead_of_uniform'])}**"
            + (f" -- {ahead}" if ahead else ""),
            "",
        ]
    moved = {n: t["gammas_moved"] for n, t in traces.items()}
    if moved:
        lines += ["## Did the gammas move?", "",
                  "Largest |P(2 bits) - P(2 bits at start)| over the gamma pairs at the end "
                  "of each search, and how many of the pairs' argmax chose 2 bits "
                  "(weights / activations):", ""]
        for n, t in traces.items():
            lines.append(f"- {n}: max shift {t['gammas_moved']:.3f}; 2-bit argmax "
                         f"{t['two_bit_w']}/{t['pairs']} weights, "
                         f"{t['two_bit_a']}/{t['pairs']} activations; expected cell MBitOps "
                         f"{t['mbitops_start']:.2f} -> {t['mbitops_end']:.2f}")
        lines.append("")
    lines += [
        "## Setup",
        "",
        f"Preset `{args.preset}` with overrides {args.set or []}: search net C={cfg.C}, "
        f"{cfg.layers} cells x {cfg.steps} nodes, partial channels k={cfg.partial_k}, bits "
        f"{cfg.bits}, {cfg.train_subset} + {cfg.arch_size} search images (weights + "
        f"architecture), {cfg.epochs} search epochs of batch {cfg.batch_size} (architecture on "
        f"after {cfg.warmup_epochs}); retraining at C={cfg.retrain_C or cfg.C} on "
        f"{cfg.retrain_subset} images for {cfg.retrain_epochs} epochs, seeds {args.seeds} "
        f"(weight init and batch order; same images), test on {cfg.test_subset} Fashion-MNIST "
        "test images.",
        "BitOps = sum over conv layers of MACs x weight bits x activation bits, per image "
        "(pools, additions, BN not counted). Headline: the searched cells only, as the "
        "reference counts; 'all layers' adds the float stem and classifier at 32 x 32. The "
        "architecture step is cross-entropy only; lambda weighs the reference's complexity "
        "loss in the weight/gamma step. Uniform rows reuse the float search (their search s "
        "is that search's). 'per seed' shows the run-to-run noise of the short QAT.",
    ]
    payload = {"rows": rows, "goals": g, "config": cfg.to_dict(), "preset": args.preset,
               "lambdas": args.lambdas, "seeds": args.seeds, "uniform": args.uniform,
               "search_traces": traces, "finished": finished}
    write_results(NAME, payload, table, out,
                  title="nablaQDARTS on Fashion-MNIST: accuracy vs BitOps",
                  notes="\n".join(lines))
    plot(rows, traces, out / f"{NAME}.png")


def trace_summary(trace: list[dict]) -> dict:
    """What the plots and the 'did the gammas move' lines need from a search trace."""
    first, last = trace[0]["gammas"], trace[-1]["gammas"]
    shift = max(abs(last[n][side][0] - first[n][side][0]) for n in last for side in (0, 1))
    return {
        "steps": [t["step"] for t in trace],
        "expected_mbitops": [t["expected_mbitops"] for t in trace],
        "complexity": [t["complexity"] for t in trace],
        # P(first bit width = 2 bits) per gamma pair and side over the search
        "p2": {n: [[t["gammas"][n][0][0] for t in trace], [t["gammas"][n][1][0] for t in trace]]
               for n in last},
        "gammas_moved": shift, "pairs": len(last),
        "two_bit_w": sum(last[n][0][0] > 0.5 for n in last),
        "two_bit_a": sum(last[n][1][0] > 0.5 for n in last),
        "mbitops_start": trace[0]["expected_mbitops"],
        "mbitops_end": trace[-1]["expected_mbitops"],
    }


def plot(rows: list[dict], traces: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(traces)
    fig, axes = plt.subplots(1, 2 + n, figsize=(5.2 * (2 + n), 4.2), squeeze=False)
    ax = axes[0][0]
    styles = {"float": ("k", "s"), "uniform": ("tab:blue", "o"), "qdarts": ("tab:red", "^")}
    for r in rows:
        kind = r["name"].split("-")[0]
        color, marker = styles.get(kind, ("gray", "x"))
        ax.scatter([r["bitops"]] * len(r["accs"]), r["accs"], color=color, marker=marker,
                   s=18, alpha=0.5)
        ax.scatter(r["bitops"], r["acc"], color=color, marker=marker, s=60)
        ax.annotate(r["name"], (r["bitops"], r["acc"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("BitOps per image, searched cells (log)")
    ax.set_ylabel("test top-1 (%): mean (large), seeds (small)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("accuracy vs BitOps")
    ax = axes[0][1]
    for name, t in traces.items():
        ax.plot(t["steps"], t["expected_mbitops"], label=name)
    ax.set_xlabel("search step")
    ax.set_ylabel("expected MBitOps of the derived cells")
    ax.set_title("expected BitOps over the search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for i, (name, t) in enumerate(traces.items()):
        ax = axes[0][2 + i]
        for pw, pa in t["p2"].values():
            ax.plot(t["steps"], pw, color="tab:red", lw=0.7, alpha=0.6)
            ax.plot(t["steps"], pa, color="tab:blue", lw=0.7, alpha=0.6, ls="--")
        ax.plot([], [], color="tab:red", label="weights")
        ax.plot([], [], color="tab:blue", ls="--", label="activations")
        ax.axhline(0.5, color="k", lw=0.5)
        ax.set_ylim(0, 1)
        ax.set_xlabel("search step")
        ax.set_ylabel("softmax(gamma): P(2 bits)")
        ax.set_title(f"{name}: {t['pairs']} gamma pairs", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_plot(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[3e-2, 1e-1, 3e-1],
                    help="weights of the complexity loss, one search each")
    ap.add_argument("--uniform", type=int, nargs="*", default=[4, 2],
                    help="uniform QAT baselines (bits in every cell layer)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                    help="retraining seeds (init and batch order) per row")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="Override a quant option (repeatable)")
    ap.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "quant_bench_v2")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--progress", action="store_true", help="tqdm bars (noisy in a log)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: write the report from the finished runs in --runs "
                    "(marked partial if any is missing)")
    args = ap.parse_args()
    cfg = QuantConfig.load(args.preset, args.set).replace(progress=args.progress)
    args.runs.mkdir(parents=True, exist_ok=True)
    # the same retraining images for every row and seed: seeds change init and order only
    rdata = None if args.report_only else load_data(cfg, cfg.retrain_subset)
    rows: list[dict] = []
    traces: dict[str, dict] = {}

    def run_search(c: QuantConfig, folder: Path):
        """(summary, genotype) of a search: run or resumed, or read (None if unfinished)."""
        if args.report_only:
            if not (folder / "search.json").is_file():
                return None, None
            return (json.loads((folder / "search.json").read_text()),
                    load_genotype(folder / "genotype.json"))
        res = search(c, folder, resume=True)
        return res.summary, res.genotype

    def retrain_seeds(name: str, c: QuantConfig, geno, search_s: float,
                      lam: float | None) -> None:
        rets, done_seeds = [], []
        for s in args.seeds:
            run = args.runs / name / (f"retrain-seed{s}" if s else "retrain")
            fresh = not (run / "retrain.json").is_file()
            if args.report_only:
                if fresh:
                    continue
                rets.append(json.loads((run / "retrain.json").read_text()))
            else:
                rets.append(retrain(c.replace(seed=s), geno, run, resume=True,
                                    data=rdata).summary)
            done_seeds.append(s)
            row = make_row(name, search_s, rets, done_seeds, lam)
            rows[:] = [r for r in rows if r["name"] != name] + [row]
            report(rows, traces, cfg, args, args.out)
            if fresh:
                print(f"[{time.strftime('%H:%M:%S')}] {name} seed {s}: "
                      f"{rets[-1]['test_acc']:.2f} %, {row['bitops'] / 1e6:.2f} M BitOps "
                      f"(cells), retrain {rets[-1]['retrain_s']:.0f} s", flush=True)

    float_cfg = cfg.replace(bits=[32], fixed_bits=32, bitops_lambda=0.0)
    print(f"[{time.strftime('%H:%M:%S')}] float search ...", flush=True)
    fsum, geno = run_search(float_cfg, args.runs / "float" / "search")
    if geno is None:
        print("no finished float search in --runs: nothing to report")
        return
    retrain_seeds("float", float_cfg, geno, fsum["search_s"], None)
    for b in args.uniform:
        retrain_seeds(f"uniform-{b}", cfg, geno.uniform(b, cfg.fixed_bits), fsum["search_s"],
                      None)
    for lam in args.lambdas:
        name = lam_name(lam)
        print(f"[{time.strftime('%H:%M:%S')}] {name} search ...", flush=True)
        qcfg = cfg.replace(bitops_lambda=lam)
        ssum, sgeno = run_search(qcfg, args.runs / name / "search")
        if sgeno is None:
            continue
        traces[name] = trace_summary(ssum["trace"])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: search {ssum['search_s']:.0f} s, "
              f"{sgeno.summary()}", flush=True)
        retrain_seeds(name, qcfg, sgeno, ssum["search_s"], lam)
    report(rows, traces, cfg, args, args.out)
    print("done", flush=True)


if __name__ == "__main__":
    main()
