"""SuperFedNAS vs per-target FedAvg vs FedAvg-of-the-largest, at equal client compute.

For each Dirichlet alpha, in one run (Flower simulation, Fashion-MNIST):

1. SuperFedNAS trains one SuperNet for `--rounds` rounds; its clients spend C MACs.
2. Specialization: for 3 MAC targets, a constrained NSGA-II over the trained
   SuperNet (accuracy measured on the server's calibration images, never the
   test set) picks a SubNet; its test accuracy after BN recalibration is reported.
3. Per-target baseline: FedAvg trains each of those 3 architectures from scratch,
   separately, with C/3 client MACs each (C in all: the same total as step 1).
4. FedAvg of the largest network alone with C client MACs, then the same 3 SubNets
   are extracted from it (BN recalibrated, no weight-shared training).

Results are written after every step, and a rerun resumes (finished steps are
read back; an interrupted federated run resumes from its checkpoint).

    python benchmarks/federated.py --alphas 100 1 0.1 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, markdown_table, save_plot, write_results  # noqa: E402

from weightshare.checkpoint import load_checkpoint  # noqa: E402
from weightshare.fed.client import load_fed_dataset  # noqa: E402
from weightshare.fed.config import FedConfig  # noqa: E402
from weightshare.fed.simulate import simulate  # noqa: E402
from weightshare.io import atomic_write_text  # noqa: E402
from weightshare.search.nsga import Evaluator  # noqa: E402
from weightshare.search.specialize import measured_accuracy, specialize_targets  # noqa: E402
from weightshare.search.targets import Target  # noqa: E402
from weightshare.space import SubnetConfig  # noqa: E402
from weightshare.train.evaluate import accuracy, recalibrate  # noqa: E402

TARGETS = (("small", 0.15), ("medium", 0.45), ("large", 0.8))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[100.0, 1.0, 0.1])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--rounds", type=int, default=20, help="SuperFedNAS rounds (sets C)")
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=12000)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--calib-size", type=int, default=1000)
    p.add_argument("--set", dest="supernet_args", default='{"width_mult": 0.5, "stem_stride": 2}',
                   help="SuperNet constructor arguments (JSON)")
    p.add_argument("--search-pop", type=int, default=16)
    p.add_argument("--search-gens", type=int, default=5)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("runs/fed_bench"))
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    return p.parse_args()


def test_acc(ckpt: Path, cfg: FedConfig, subnet: SubnetConfig) -> float:
    net = load_checkpoint(ckpt).supernet
    ds = load_fed_dataset(cfg)
    recalibrate(net, subnet, ds)
    return accuracy(net, subnet, ds)


def run_fed(cfg: FedConfig, out: Path, parallel: int, budget: float = 0.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    hist = simulate(cfg, out, parallel=parallel, max_client_macs=budget)
    last = hist["rounds"][-1]
    return {"rounds": len(hist["rounds"]), "client_macs": last["total_client_macs"],
            "seconds": time.perf_counter() - t0, "last": last}


def bench_alpha(alpha: float, a: argparse.Namespace, state: dict[str, Any],
                save: Any) -> None:
    key = str(alpha)
    st = state.setdefault(key, {})
    base = FedConfig(supernet_args=json.loads(a.supernet_args), clients=a.clients,
                     per_round=a.per_round, rounds=a.rounds, alpha=alpha,
                     local_epochs=a.local_epochs, train_subset=a.train_subset,
                     test_subset=a.test_subset, calib_size=a.calib_size, eval_every=a.rounds)
    work = a.work / f"alpha{alpha:g}"
    if "superfednas" not in st:
        print(f"[alpha {alpha:g}] SuperFedNAS, {a.rounds} rounds", flush=True)
        st["superfednas"] = run_fed(base, work / "superfednas", a.parallel)
        save()
    budget = st["superfednas"]["client_macs"]
    sfn_ckpt = work / "superfednas" / "checkpoint.pt"
    if "targets" not in st:
        net = load_checkpoint(sfn_ckpt).supernet
        ds = load_fed_dataset(base)
        lo, hi = (net.cost(net.space.smallest()).macs, net.cost(net.space.largest()).macs)
        targets = [Target(name, max_macs=lo + f * (hi - lo)) for name, f in TARGETS]
        t0 = time.perf_counter()
        res = specialize_targets(net, Evaluator(net, measured_accuracy(net, ds)), targets,
                                 pop_size=a.search_pop, generations=a.search_gens)
        st["search_s"] = time.perf_counter() - t0
        st["targets"] = [{"target": r.target.name, "max_macs": r.target.max_macs,
                          "subnet": r.best.subnet.to_json(), "macs": int(r.best.costs["macs"]),
                          "acc": test_acc(sfn_ckpt, base, r.best.subnet)} for r in res]
        save()
    for t in st["targets"]:
        name = f"per_target_{t['target']}"
        if name not in st:
            print(f"[alpha {alpha:g}] FedAvg of the {t['target']} target network", flush=True)
            cfg = base.replace(mode="fedavg", subnet=t["subnet"], rounds=50 * a.rounds,
                               eval_every=100 * a.rounds)
            r = run_fed(cfg, work / name, a.parallel, budget / len(st["targets"]))
            r["acc"] = r["last"]["acc_subnet"]
            st[name] = r
            save()
    if "fedavg_largest" not in st:
        print(f"[alpha {alpha:g}] FedAvg of the largest network", flush=True)
        cfg = base.replace(mode="fedavg", rounds=50 * a.rounds, eval_every=100 * a.rounds)
        r = run_fed(cfg, work / "fedavg_largest", a.parallel, budget)
        ckpt = work / "fedavg_largest" / "checkpoint.pt"
        r["extract_acc"] = {t["target"]: test_acc(ckpt, base, SubnetConfig.from_json(t["subnet"]))
                            for t in st["targets"]}
        st["fedavg_largest"] = r
        save()


def rows_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, st in state.items():
        if "fedavg_largest" not in st:
            continue
        for t in st["targets"]:
            pt = st[f"per_target_{t['target']}"]
            rows.append({
                "alpha": float(key), "target": t["target"], "max_macs": t["max_macs"],
                "superfednas_acc": t["acc"], "superfednas_macs": t["macs"],
                "superfednas_client_macs": st["superfednas"]["client_macs"],
                "superfednas_rounds": st["superfednas"]["rounds"],
                "per_target_acc": pt["acc"], "per_target_client_macs": pt["client_macs"],
                "per_target_rounds": pt["rounds"],
                "fedavg_largest_extract_acc": st["fedavg_largest"]["extract_acc"][t["target"]],
                "fedavg_largest_client_macs": st["fedavg_largest"]["client_macs"],
                "fedavg_largest_rounds": st["fedavg_largest"]["rounds"],
                "subnet": json.loads(t["subnet"]),
            })
    return rows


def report(state: dict[str, Any], a: argparse.Namespace) -> None:
    rows = rows_of(state)
    if not rows:
        return
    table = markdown_table(
        ["alpha", "target", "MACs (M)", "SuperFedNAS %", "per-target %", "FedAvg-largest "
         "+ extract %", "client T-MACs: SFN / per-target / largest", "rounds: SFN / PT / L"],
        [[r["alpha"], r["target"], r["superfednas_macs"] / 1e6, r["superfednas_acc"],
          r["per_target_acc"], r["fedavg_largest_extract_acc"],
          f"{r['superfednas_client_macs'] / 1e12:.3f} / {r['per_target_client_macs'] / 1e12:.3f}"
          f" / {r['fedavg_largest_client_macs'] / 1e12:.3f}",
          f"{r['superfednas_rounds']} / {r['per_target_rounds']} / {r['fedavg_largest_rounds']}"]
         for r in rows])
    wins = [r for r in rows if r["superfednas_acc"] > r["per_target_acc"]]
    notes = [
        f"SuperFedNAS beats the per-target baseline in {len(wins)} of {len(rows)} "
        "(alpha, target) cells; per-target client MACs are each a third of SuperFedNAS's "
        "(the three together equal it).",
        f"Setup: {a.clients} clients, {a.per_round} per round, {a.local_epochs} local epoch(s), "
        f"{a.train_subset} Fashion-MNIST training images split by Dirichlet(alpha), "
        f"SuperNet ofa_mbv3_small with {a.supernet_args}; test accuracy on "
        f"{a.test_subset} test images after BN recalibration on {a.calib_size} server images.",
    ]
    payload = {"clients": a.clients, "per_round": a.per_round, "dataset": "fashion-mnist",
               "rows": rows, "runs": state}
    write_results("federated", payload, table, a.out, title="Federated: SuperFedNAS vs "
                  "per-target FedAvg at equal client compute", notes="\n\n".join(notes))
    _plot(rows, a.out / "federated.png")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({r["alpha"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(alphas), figsize=(4.2 * len(alphas), 3.6), squeeze=False)
    for ax, alpha in zip(axes[0], alphas, strict=True):
        sub = sorted((r for r in rows if r["alpha"] == alpha), key=lambda r: r["superfednas_macs"])
        x = [r["superfednas_macs"] / 1e6 for r in sub]
        for key, label in (("superfednas_acc", "SuperFedNAS + search"),
                           ("per_target_acc", "per-target FedAvg (C/3 each)"),
                           ("fedavg_largest_extract_acc", "FedAvg largest + extract")):
            ax.plot(x, [r[key] for r in sub], marker="o", label=label)
        ax.set_title(f"alpha = {alpha:g}")
        ax.set_xlabel("SubNet MACs (M)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_plot(fig, path)


def main() -> None:
    a = parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    state_path = a.work / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}

    def save() -> None:
        atomic_write_text(state_path, json.dumps(state, indent=1, default=float))
        report(state, a)

    for alpha in a.alphas:
        bench_alpha(alpha, a, state, save)
    save()
    print((a.out / "federated.md").read_text())


if __name__ == "__main__":
    main()
