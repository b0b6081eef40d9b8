"""DepS ablation: when to start shrinking (25 / 50 / 75% of the run) and the beta ramp on/off.

The paper found starting at 50% best and the epsilon ramp to avoid a loss spike
when the small SubNets join. Each variant trains in its own resumable run
folder with the same preset, seed and evaluation set; results go to
benchmarks/results/deps_ablation.{json,md,png}.

    python benchmarks/deps_ablation.py --preset small --set train_subset=5000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, machine_info, markdown_table, save_plot, write_results  # noqa: E402
from train_cost import run_method  # noqa: E402

from weightshare.train import TrainConfig  # noqa: E402

VARIANTS = {
    "shrink@25%": {"shrink_at": 0.25},
    "shrink@50%": {"shrink_at": 0.5},
    "shrink@75%": {"shrink_at": 0.75},
    "shrink@50%, no beta ramp": {"shrink_at": 0.5, "beta_ramp_epochs": 0.0},
}


def loss_spike(run_dir: Path, shrink_step: int, window: int = 5) -> float:
    """Mean loss of the largest SubNet just after the shrink point minus just before it."""
    losses = {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            losses[rec["step"]] = rec["loss"]
    before = [losses[s] for s in range(shrink_step - window + 1, shrink_step + 1) if s in losses]
    after = [losses[s] for s in range(shrink_step + 1, shrink_step + window + 1) if s in losses]
    if not before or not after:
        return float("nan")
    return sum(after) / len(after) - sum(before) / len(before)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--runs-dir", default="runs/deps_ablation")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    base = TrainConfig.load(args.preset, args.overrides).replace(method="deps")
    runs = Path(args.runs_dir)
    rows, variants = [], {}
    for i, (name, change) in enumerate(VARIANTS.items()):
        cfg = base.replace(out=str(runs / f"v{i}"), **change)
        s = run_method(name, cfg)
        shrink = round(s["total_steps"] * cfg.shrink_at)
        spike = loss_spike(Path(cfg.out), shrink)
        variants[name] = {"config": change, "acc": s["acc"], "train_macs": s["train_macs"],
                          "wall_s": s["wall_s"], "loss_jump_at_shrink": spike,
                          "curve": sorted([r["macs"], r["acc"]] for r in s["eval"])}
        rows.append([name, s["acc"]["smallest"], s["acc"]["largest"], s["acc"]["mean"],
                     s["train_macs"] / 1e12, spike])
    table = markdown_table(["variant", "smallest %", "largest %", "mean %", "train T-MACs",
                            "loss jump at shrink"], rows)
    payload = {"preset": args.preset, "overrides": args.overrides, "epochs": base.epochs,
               "machine": machine_info(), "variants": variants}
    out = Path(args.out)
    write_results("deps_ablation", payload, table, out, title="DepS ablation")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in variants.items():
        ax.plot([c[0] / 1e6 for c in v["curve"]], [c[1] for c in v["curve"]], marker="o", ms=3,
                label=name)
    ax.set_xlabel("SubNet MACs (millions)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("DepS ablation: shrink start and beta ramp")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_plot(fig, out / "deps_ablation.png")
    print(table)


if __name__ == "__main__":
    main()
