"""Does the largest client's early share cost SuperFedNAS its small targets? An ablation.

SuperFedNAS (as the reference) gives the largest SubNet's client a share beta of the
aggregation that decays by cosine from 0.9 to 1/K over the first 80 % of the rounds.
In a short run the other SubNets' updates are diluted for most of it. This retrains the
SuperFedNAS arm of one finished `benchmarks/federated.py` cell with other decay
fractions (same data, clients, rounds and client compute) and tests the cell's
searched target SubNets on each, next to the cell's per-target FedAvg baseline.

Pass the same settings as the finished run, plus the cell and the fractions:

    python benchmarks/federated_share.py <federated.py's arguments> \\
        --space mbv3 --alpha 1 --decay-fractions 0.25
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, save_plot, write_results  # noqa: E402
from federated import SPACES, base_config, build_parser, parse_args, run_fed, test_acc  # noqa: E402

from weightshare.space import SubnetConfig  # noqa: E402


def main() -> None:
    p = build_parser(__doc__.splitlines()[0])
    p.add_argument("--space", choices=sorted(SPACES), required=True)
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--decay-fractions", type=float, nargs="+", default=[0.25],
                   help="fractions of the rounds over which beta decays (reference: 0.8)")
    a = parse_args(p)
    key = f"{a.space}/{a.alpha:g}"
    state = json.loads((a.work / "state.json").read_text())
    cell = state.get(key, {})
    if "fedavg_largest" not in cell:
        sys.exit(f"cell {key} of {a.work} has not finished; run benchmarks/federated.py first")
    base = base_config(a.space, a.alpha, a)
    work = a.work / a.space / f"alpha{a.alpha:g}"
    # the finished run's arm, at the default (the reference's) decay fraction
    arms: dict[str, dict[str, Any]] = {f"{base.decay_fraction:g}": {
        "history": work / "superfednas", "client_macs": cell["superfednas"]["client_macs"],
        "acc": {t["target"]: t["acc"] for t in cell["targets"]}}}
    for frac in a.decay_fractions:
        out = work / f"superfednas_decay{frac:g}"
        print(f"[{key}] SuperFedNAS, beta decaying over {frac:g} of {a.rounds} rounds",
              flush=True)
        run = run_fed(base.replace(decay_fraction=frac), out, a.parallel)
        arms[f"{frac:g}"] = {"history": out, "client_macs": run["client_macs"], "acc": {
            t["target"]: test_acc(out / "checkpoint.pt", base, SubnetConfig.from_json(t["subnet"]))
            for t in cell["targets"]}}
    rows = [{"target": t["target"], "macs": t["macs"], "per_target_acc":
             cell[f"per_target_{t['target']}"]["acc"],
             **{f"superfednas_decay{f}_acc": arm["acc"][t["target"]] for f, arm in arms.items()}}
            for t in cell["targets"]]
    fracs = list(arms)
    table = markdown_table(
        ["target", "MACs (M)", "per-target FedAvg %",
         *[f"SFN % (beta over {float(f):.0%} of rounds)" for f in fracs]],
        [[r["target"], r["macs"] / 1e6, r["per_target_acc"],
          *[r[f"superfednas_decay{f}_acc"] for f in fracs]] for r in rows])
    wins = {f: sum(r[f"superfednas_decay{f}_acc"] > r["per_target_acc"] for r in rows)
            for f in fracs}
    notes = (f"Cell {key} of `{a.work}` ({a.clients} clients, {a.per_round} per round, "
             f"{a.rounds} rounds, {a.local_epochs} local epochs, BN {base.bn}); the targets "
             "are that run's searched SubNets, tested after BN recalibration as there. "
             "SuperFedNAS beats the per-target baseline in: "
             + ", ".join(f"{wins[f]} of {len(rows)} (beta over {float(f):.0%})" for f in fracs)
             + ".")
    payload = {"cell": key, "work": str(a.work), "rows": rows,
               "client_macs": {f: arm["client_macs"] for f, arm in arms.items()}}
    write_results("federated_share", payload, table, a.out, title="Federated ablation: how "
                  "long the largest client's share decays", notes=notes)
    _plot(arms, key, a.out / "federated_share.png")
    print((a.out / "federated_share.md").read_text())


def _plot(arms: dict[str, dict[str, Any]], key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (frac, arm) in enumerate(arms.items()):
        rows = json.loads((arm["history"] / "history.json").read_text())["rounds"]
        for col, style in (("acc_largest", "-"), ("acc_smallest", "--")):
            pts = [(r["round"], r[col]) for r in rows if col in r]
            ax.plot(*zip(*pts, strict=True), style, marker=".", color=f"C{i}",
                    label=f"{col[4:]}, beta over {float(frac):.0%}")
    ax.set_title(f"SuperFedNAS, {key}")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_plot(fig, path)


if __name__ == "__main__":
    main()
