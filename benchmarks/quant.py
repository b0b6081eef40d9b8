"""nablaQDARTS on Fashion-MNIST: accuracy vs BitOps of searched mixed precision vs uniform QAT.

Rows, in one run (each retrained from scratch with the same recipe, test accuracy on
the same test images):

* ``float``      -- PC-DARTS search with float ops only (32/32 bits, lambda 0), its
                    genotype retrained at 32/32 bits everywhere;
* ``uniform-8``, ``uniform-4`` -- that same float genotype retrained with QAT at 8/8 and
                    4/4 bits in every cell layer (stem and classifier at 8/8);
* ``qdarts-lambda-<x>`` -- nablaQDARTS searches over {2, 4, 8} bits per conv for weights
                    and activations at each of `--lambdas` (default four), each genotype
                    retrained with QAT.

Goal (the paper's, at our scale): a nablaQDARTS network with >= 18x fewer BitOps than
``float`` at <= 0.5 points lower accuracy, one with >= 100x fewer within 2 points, and
nablaQDARTS ahead of uniform quantization at equal BitOps.

Sizing: the `small` preset (a 3-cell, 2-node net, C=8 search / C=12 retrain, 1,024 +
1,024 search images, 4,000 retraining images, 5,000 test images) takes about 45 minutes
for all seven rows on one core (OMP_NUM_THREADS=1). Scale up with ``--preset full`` or
``--set KEY=VALUE`` (e.g. ``--set retrain_epochs=20 --set retrain_subset=null``).

Results go to results/quant.{json,md,png} after every row; runs (checkpoints) to
``--runs``. Rerunning skips finished rows and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.quant.config import QuantConfig
from weightshare.quant.genotype import load_genotype
from weightshare.quant.retrain import retrain
from weightshare.quant.search import search

NAME = "quant"


def lam_name(lam: float) -> str:
    return f"qdarts-lambda-{lam:.0e}".replace("e-0", "e-").replace("e+0", "e+")


def bits_summary(layers: dict) -> dict:
    """Per layer [w, a] bits plus counts and the MAC-weighted mean bits product."""
    from collections import Counter

    macs = sum(r["macs"] for r in layers.values())
    return {
        "per_layer": {n: [r["w_bits"], r["a_bits"]] for n, r in layers.items()},
        "counts": dict(Counter(f"{r['w_bits']}/{r['a_bits']}" for r in layers.values())),
        "mean_bits_product": sum(r["bitops"] for r in layers.values()) / max(macs, 1),
    }


def row_from(name: str, search_s: float, ret: dict, lam: float | None) -> dict:
    return {"name": name, "bitops": ret["bitops"], "macs": ret["macs"],
            "acc": round(ret["test_acc"], 2), "search_s": round(search_s, 1),
            "retrain_s": round(ret["retrain_s"], 1), "lambda": lam,
            "bits": bits_summary(ret["layers"])}


def goals(rows: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    if "float" not in by:
        return {}
    f = by["float"]
    q = [r for r in rows if r["name"].startswith("qdarts")]
    for r in rows:
        r["reduction_x"] = round(f["bitops"] / r["bitops"], 1)
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


def report(rows: list[dict], cfg: QuantConfig, args: argparse.Namespace, out: Path) -> None:
    g = goals(rows)
    headers = ["row", "BitOps", "x fewer than float", "MACs", "top-1 %", "vs float (pt)",
               "mean w*a bits", "search s", "retrain s"]
    table = markdown_table(headers, [
        [r["name"], f"{r['bitops'] / 1e6:.1f} M", r.get("reduction_x", ""),
         f"{r['macs'] / 1e6:.2f} M", r["acc"], r.get("acc_delta", ""),
         round(r["bits"]["mean_bits_product"], 1), r["search_s"], r["retrain_s"]]
        for r in rows])
    finished = len(rows) == 3 + len(args.lambdas)
    lines = []
    if g:
        def status(ok: bool) -> str:
            # a goal not yet reached while rows are missing is pending, not failed
            return "met" if ok else ("not met" if finished else "pending (rows missing)")

        met = g["met"]
        ahead = "; ".join(f"{u}: {', '.join(w) if w else 'none'}"
                          for u, w in g["ahead_of_uniform"].items())
        lines += [
            "## Goals",
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
    lines += [
        "## Setup",
        "",
        f"Preset `{args.preset}` with overrides {args.set or []}: search net C={cfg.C}, "
        f"{cfg.layers} cells x {cfg.steps} nodes, partial channels k={cfg.partial_k}, "
        f"{cfg.train_subset} + {cfg.arch_size} search images (weights + architecture), "
        f"{cfg.epochs} search epochs (architecture on after {cfg.warmup_epochs}); retraining "
        f"at C={cfg.retrain_C or cfg.C} on {cfg.retrain_subset} images for "
        f"{cfg.retrain_epochs} epochs, test on {cfg.test_subset} Fashion-MNIST test images.",
        "BitOps = sum over conv layers of MACs x weight bits x activation bits, per image "
        "(pools, additions, BN not counted); stem and classifier at 8/8 bits in all quantized "
        "rows, 32/32 in `float`. Uniform rows reuse the float search (their search s is "
        "that search's). One seed per row: differences under ~0.5 pt are within run-to-run "
        "noise at this size.",
    ]
    payload = {"rows": rows, "goals": g, "config": cfg.to_dict(), "preset": args.preset,
               "lambdas": args.lambdas, "finished": finished}
    write_results(NAME, payload, table, out,
                  title="nablaQDARTS on Fashion-MNIST: accuracy vs BitOps",
                  notes="\n".join(lines))
    plot(rows, out / f"{NAME}.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"float": ("k", "s"), "uniform": ("tab:blue", "o"), "qdarts": ("tab:red", "^")}
    for r in rows:
        kind = r["name"].split("-")[0]
        color, marker = styles.get(kind, ("gray", "x"))
        ax.scatter(r["bitops"], r["acc"], color=color, marker=marker, s=50)
        ax.annotate(r["name"], (r["bitops"], r["acc"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("BitOps per image (log)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("nablaQDARTS vs float and uniform QAT (Fashion-MNIST)")
    save_plot(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1],
                    help="BitOps weights (loss per MBitOp per image), one search each")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="Override a quant option (repeatable)")
    ap.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "quant_bench")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--progress", action="store_true", help="tqdm bars (noisy in a log)")
    args = ap.parse_args()
    cfg = QuantConfig.load(args.preset, args.set).replace(progress=args.progress)
    args.runs.mkdir(parents=True, exist_ok=True)
    rows_path = args.runs / "rows.json"
    rows: list[dict] = json.loads(rows_path.read_text()) if rows_path.is_file() else []
    done = {r["name"] for r in rows}

    def finish(row: dict) -> None:
        rows.append(row)
        rows_path.write_text(json.dumps(rows, indent=1))
        report(rows, cfg, args, args.out)
        print(f"[{time.strftime('%H:%M:%S')}] {row['name']}: {row['acc']:.2f} %, "
              f"{row['bitops'] / 1e6:.1f} M BitOps, search {row['search_s']:.0f} s, "
              f"retrain {row['retrain_s']:.0f} s", flush=True)

    float_cfg = cfg.replace(bits=[32], fixed_bits=32, bitops_lambda=0.0)
    plan = [("float", None), ("uniform-8", 8), ("uniform-4", 4)] + \
        [(lam_name(lam), lam) for lam in args.lambdas]
    float_search_s = math.nan
    for name, arg in plan:
        if name in done:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        if name == "float" or name.startswith("uniform"):
            fs = search(float_cfg, args.runs / "float" / "search", resume=True)
            float_search_s = fs.summary["search_s"]
            geno = load_genotype(args.runs / "float" / "search" / "genotype.json")
            if name == "float":
                ret = retrain(float_cfg, geno, args.runs / "float" / "retrain", resume=True)
                finish(row_from(name, float_search_s, ret.summary, None))
            else:
                ret = retrain(cfg, geno.uniform(arg, cfg.fixed_bits), args.runs / name,
                              resume=True)
                finish(row_from(name, float_search_s, ret.summary, None))
        else:
            qcfg = cfg.replace(bitops_lambda=arg)
            s = search(qcfg, args.runs / name / "search", resume=True)
            ret = retrain(qcfg, s.genotype, args.runs / name / "retrain", resume=True)
            finish(row_from(name, s.summary["search_s"], ret.summary, arg))
    if rows and not any(r["name"] not in done for r in rows):
        report(rows, cfg, args, args.out)  # nothing new: refresh the report (e.g. new format)
    print("done", flush=True)


if __name__ == "__main__":
    main()
