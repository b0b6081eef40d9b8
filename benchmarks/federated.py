"""SuperFedNAS vs per-target FedAvg vs FedAvg-of-the-largest, at equal client compute.

For each search space (headline: the elastic ResNet `ofa_resnet_small`, as the
paper's CIFAR runs; second: `ofa_mbv3_small`) and each Dirichlet alpha, in one
run (Flower simulation, Fashion-MNIST), with the reference's client training
(plain SGD 0.1, 5 local epochs, batch 64, clip 1, BN fixed to the identity,
equal client weights; docs/federated.md):

1. SuperFedNAS trains one SuperNet for `--rounds` rounds; its clients spend C MACs.
2. Specialization: for 3 MAC targets, a constrained NSGA-II over the trained
   SuperNet (accuracy measured on the server's calibration images, never the
   test set) picks a SubNet; its test accuracy after BN recalibration is reported.
3. Per-target baseline: FedAvg trains each of those 3 architectures from scratch,
   separately, with exactly C/3 client MACs each (C in all: the same total as
   step 1; the last round's clients stop at their share of what is left).
4. FedAvg of the largest network alone with C client MACs, then the same 3 SubNets
   are extracted from it (BN recalibrated, no weight-shared training).

Results are written after every step, and a rerun resumes (finished steps are
read back; an interrupted federated run resumes from its checkpoint). The same
command started again on another core shares the work: each (space, alpha) cell
is trained by one process at a time (a cell another process holds is skipped),
and every process writes the table of all cells finished so far.

    python benchmarks/federated.py --alphas 100 1 0.1 --rounds 20
    python benchmarks/federated.py --quick --work /tmp/fed_smoke --out /tmp/fed_smoke/results
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
from weightshare.io import atomic_write_text, hold_lock  # noqa: E402
from weightshare.search.nsga import Evaluator  # noqa: E402
from weightshare.search.predictor import holdout_split  # noqa: E402
from weightshare.search.specialize import measured_accuracy, specialize_targets  # noqa: E402
from weightshare.search.targets import Target  # noqa: E402
from weightshare.space import SubnetConfig  # noqa: E402
from weightshare.train.evaluate import accuracy, recalibrate  # noqa: E402

TARGETS = (("small", 0.15), ("medium", 0.45), ("large", 0.8))
# name -> (SuperNet, constructor arguments for 28 px grayscale images on a CPU)
SPACES = {
    "resnet": ("ofa_resnet_small", {"in_channels": 1, "resolution": 28, "width_mult": 0.25}),
    "mbv3": ("ofa_mbv3_small", {"width_mult": 0.5, "stem_stride": 2}),
}
# `--bn auto`: the reference's default (BN fixed to the identity) is for its ResNet; a
# MobileNetV3 without BN does not learn here (measured: train loss stayed at ln 10 for
# 14 rounds at alpha 100), so it keeps trained BN, recalibrated on the server.
SPACE_BN = {"resnet": "identity", "mbv3": "train"}


def build_parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    """The run's settings; `federated_share.py` adds its own to the same parser."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--spaces", nargs="+", choices=sorted(SPACES), default=["resnet", "mbv3"],
                   help="search spaces, the first is the headline table")
    p.add_argument("--alphas", type=float, nargs="+", default=[100.0, 1.0, 0.1])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--rounds", type=int, default=20, help="SuperFedNAS rounds (sets C)")
    p.add_argument("--local-epochs", type=int, default=5)
    p.add_argument("--bn", choices=["auto", "identity", "train"], default="auto",
                   help="identity: the reference's default (no --use_bn); auto: identity for "
                        "the ResNet, trained BN for MobileNetV3 (which does not learn without)")
    p.add_argument("--weighting", choices=["equal", "samples"], default="equal")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate every N rounds for the accuracy curves (0: rounds / 10)")
    p.add_argument("--train-subset", type=int, default=12000)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--calib-size", type=int, default=1000)
    p.add_argument("--search-pop", type=int, default=16)
    p.add_argument("--search-gens", type=int, default=5)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 alpha, 4 clients, 2 rounds, 1 local epoch, tiny data")
    p.add_argument("--work", type=Path, default=Path("runs/fed_bench"))
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    return p


def parse_args(p: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    a = (p or build_parser()).parse_args()
    if a.quick:
        a.alphas, a.clients, a.per_round, a.rounds, a.local_epochs = [1.0], 4, 2, 2, 1
        a.train_subset, a.test_subset, a.calib_size = 800, 300, 200
        a.search_pop, a.search_gens = 16, 5
    a.eval_every = a.eval_every or max(1, a.rounds // 10)
    return a


def bn_of(space: str, bn: str) -> str:
    return SPACE_BN[space] if bn == "auto" else bn


def search_accuracy(net: Any, ds: Any, bn: str) -> Any:
    """What the search ranks SubNets by: accuracy on half the server's calibration images
    (BN recalibrated on the other half when BN is trained; identity BN needs none)."""
    if bn == "train":
        return measured_accuracy(net, ds)
    _, held_out = holdout_split(ds)
    return lambda subnets: [accuracy(net, s, ds, held_out) for s in subnets]


def test_acc(ckpt: Path, cfg: FedConfig, subnet: SubnetConfig) -> float:
    net = load_checkpoint(ckpt).supernet
    ds = load_fed_dataset(cfg)
    if cfg.bn == "train":
        recalibrate(net, subnet, ds)
    return accuracy(net, subnet, ds)


def run_fed(cfg: FedConfig, out: Path, parallel: int, budget: float = 0.0) -> dict[str, Any]:
    t0 = time.perf_counter()
    hist = simulate(cfg, out, parallel=parallel, max_client_macs=budget)
    last = hist["rounds"][-1]
    return {"rounds": len(hist["rounds"]), "client_macs": last["total_client_macs"],
            "seconds": time.perf_counter() - t0, "last": last}


def base_config(space: str, alpha: float, a: argparse.Namespace) -> FedConfig:
    """The SuperFedNAS run of one (space, alpha) cell; the baselines change mode and subnet."""
    supernet, args = SPACES[space]
    return FedConfig(supernet=supernet, supernet_args=args, clients=a.clients,
                     per_round=a.per_round, rounds=a.rounds, alpha=alpha,
                     local_epochs=a.local_epochs, bn=bn_of(space, a.bn), weighting=a.weighting,
                     train_subset=a.train_subset, test_subset=a.test_subset,
                     calib_size=a.calib_size, eval_every=a.eval_every)


def bench_alpha(space: str, alpha: float, a: argparse.Namespace, state: SharedState,
                save: Any) -> None:
    st = state.own(f"{space}/{alpha:g}")
    base = base_config(space, alpha, a)
    work = a.work / space / f"alpha{alpha:g}"
    tag = f"[{space}, alpha {alpha:g}]"
    if "superfednas" not in st:
        print(f"{tag} SuperFedNAS, {a.rounds} rounds", flush=True)
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
        res = specialize_targets(net, Evaluator(net, search_accuracy(net, ds, base.bn)), targets,
                                 pop_size=a.search_pop, generations=a.search_gens)
        st["search_s"] = time.perf_counter() - t0
        st["targets"] = [{"target": r.target.name, "max_macs": r.target.max_macs,
                          "subnet": r.best.subnet.to_json(), "macs": int(r.best.costs["macs"]),
                          "acc": test_acc(sfn_ckpt, base, r.best.subnet)} for r in res]
        save()
    for t in st["targets"]:
        name = f"per_target_{t['target']}"
        if name not in st:
            print(f"{tag} FedAvg of the {t['target']} target network", flush=True)
            cfg = base.replace(mode="fedavg", subnet=t["subnet"], rounds=50 * a.rounds)
            r = run_fed(cfg, work / name, a.parallel, budget / len(st["targets"]))
            r["acc"] = r["last"]["acc_subnet"]
            st[name] = r
            save()
    if "fedavg_largest" not in st:
        print(f"{tag} FedAvg of the largest network", flush=True)
        cfg = base.replace(mode="fedavg", rounds=50 * a.rounds)
        r = run_fed(cfg, work / "fedavg_largest", a.parallel, budget)
        ckpt = work / "fedavg_largest" / "checkpoint.pt"
        r["extract_acc"] = {t["target"]: test_acc(ckpt, base, SubnetConfig.from_json(t["subnet"]))
                            for t in st["targets"]}
        st["fedavg_largest"] = r
        save()


def rows_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, st in state.items():
        if "fedavg_largest" not in st or "/" not in key:
            continue  # unfinished, or a state file from before the spaces (alpha keys only)
        space, alpha = key.split("/")
        for t in st["targets"]:
            pt = st[f"per_target_{t['target']}"]
            rows.append({
                "space": space, "alpha": float(alpha), "target": t["target"],
                "max_macs": t["max_macs"],
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


def _table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(
        ["alpha", "target", "MACs (M)", "SuperFedNAS %", "per-target %", "FedAvg-largest "
         "+ extract %", "client T-MACs: SFN / per-target / largest", "rounds: SFN / PT / L"],
        [[r["alpha"], r["target"], r["superfednas_macs"] / 1e6, r["superfednas_acc"],
          r["per_target_acc"], r["fedavg_largest_extract_acc"],
          f"{r['superfednas_client_macs'] / 1e12:.4f} / {r['per_target_client_macs'] / 1e12:.4f}"
          f" / {r['fedavg_largest_client_macs'] / 1e12:.4f}",
          f"{r['superfednas_rounds']} / {r['per_target_rounds']} / {r['fedavg_largest_rounds']}"]
         for r in rows])


def report(state: dict[str, Any], a: argparse.Namespace) -> None:
    rows = rows_of(state)
    if not rows:
        return
    parts, notes = [], []
    done = {(r["space"], r["alpha"]) for r in rows}
    missing = [f"{space} alpha {alpha:g}" for space in a.spaces for alpha in a.alphas
               if (space, alpha) not in done]
    if missing:
        notes.append(f"**PARTIAL**: the run has not finished; still to come: {', '.join(missing)}.")
    for space in a.spaces:
        sub = [r for r in rows if r["space"] == space]
        if not sub:
            continue
        wins = [r for r in sub if r["superfednas_acc"] > r["per_target_acc"]]
        supernet, args = SPACES[space]
        bn = bn_of(space, a.bn)
        parts.append(f"### {supernet} {json.dumps(args)}, BN {bn}\n\n" + _table(sub)
                     + ("\n\nTest accuracy after BN recalibration on the server's "
                        f"{a.calib_size} calibration images." if bn == "train" else
                        "\n\nBN fixed to the identity: no recalibration."))
        notes.append(f"{supernet}: SuperFedNAS beats the per-target baseline in {len(wins)} of "
                     f"{len(sub)} (alpha, target) cells.")
    notes += [
        "Per-target client MACs are each exactly a third of SuperFedNAS's (the three together "
        "equal it; the last round's clients stop at their share of what is left).",
        f"Setup: {a.clients} clients, {a.per_round} per round, {a.rounds} SuperFedNAS rounds, "
        f"{a.local_epochs} local epoch(s), plain SGD 0.1, batch 64, clip 1, BN "
        + ", ".join(f"{s} {bn_of(s, a.bn)}" for s in a.spaces)
        + f", {a.weighting} client weights; {a.train_subset} Fashion-MNIST training images "
        f"split by Dirichlet(alpha); test accuracy on {a.test_subset} test images.",
    ]
    payload = {"clients": a.clients, "per_round": a.per_round, "rounds": a.rounds,
               "local_epochs": a.local_epochs, "bn": {s: bn_of(s, a.bn) for s in a.spaces},
               "weighting": a.weighting,
               "dataset": "fashion-mnist", "rows": rows, "runs": state}
    write_results("federated", payload, "\n".join(parts), a.out, title="Federated: SuperFedNAS "
                  "vs per-target FedAvg at equal client compute", notes="\n\n".join(notes))
    _plot(rows, a.out / "federated.png")
    _plot_curves(state, a, a.out / "federated_rounds.png")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["space"], r["alpha"]) for r in rows}, key=lambda c: (c[0], -c[1]))
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False)
    for ax, (space, alpha) in zip(axes[0], cells, strict=True):
        sub = sorted((r for r in rows if (r["space"], r["alpha"]) == (space, alpha)),
                     key=lambda r: r["superfednas_macs"])
        x = [r["superfednas_macs"] / 1e6 for r in sub]
        for key, label in (("superfednas_acc", "SuperFedNAS + search"),
                           ("per_target_acc", "per-target FedAvg (C/3 each)"),
                           ("fedavg_largest_extract_acc", "FedAvg largest + extract")):
            ax.plot(x, [r[key] for r in sub], marker="o", label=label)
        ax.set_title(f"{space}, alpha = {alpha:g}")
        ax.set_xlabel("SubNet MACs (M)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_plot(fig, path)


ARMS = ("superfednas", *(f"per_target_{name}" for name, _ in TARGETS), "fedavg_largest")
# the same arm in the same colour in every panel
CURVE_COLOURS = {label: f"C{i}" for i, label in enumerate((
    "SFN largest", "SFN smallest", "SFN corner1", "SFN corner2", *ARMS[1:]))}


def _plot_curves(state: dict[str, Any], a: argparse.Namespace, path: Path) -> None:
    """Test accuracy against spent client compute, every arm's evaluations (history.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in state if "/" in k]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        space, alpha = key.split("/")
        cell = a.work / space / f"alpha{alpha}"
        # this benchmark's arms only: an ablation (federated_share.py) trains beside them
        for arm in (arm for arm in ARMS if (cell / arm / "history.json").exists()):
            rows = json.loads((cell / arm / "history.json").read_text())["rounds"]
            cols = sorted({c for r in rows for c in r if c.startswith("acc_")})
            for col in cols if arm == "superfednas" else cols[:1]:
                pts = [(r["total_client_macs"] / 1e12, r[col]) for r in rows if col in r]
                if pts:
                    label = f"SFN {col[4:]}" if arm == "superfednas" else arm
                    ax.plot(*zip(*pts, strict=True), marker=".", label=label,
                            color=CURVE_COLOURS.get(label))
        ax.set_title(f"{space}, alpha = {alpha}")
        ax.set_xlabel("client training T-MACs")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    save_plot(fig, path)


class SharedState:
    """`state.json` of a --work folder that several processes may fill, one cell each.

    Each process writes back only the cells it holds (`own`); everything else is read
    from disk first, under a lock, so no process overwrites another's results.
    """

    def __init__(self, work: Path) -> None:
        self.path, self.lock = work / "state.json", work / ".state.lock"
        self.data: dict[str, Any] = {}
        self.owned: set[str] = set()
        self.sync()

    def own(self, key: str) -> dict[str, Any]:
        """This process now trains cell `key`: its state, as the disk has it now."""
        self.owned.add(key)
        self.sync()
        return self.data.setdefault(key, {})

    def sync(self) -> None:
        """Read the other processes' cells and write ours, atomically."""
        lock = hold_lock(self.lock, wait=True)
        try:
            disk = json.loads(self.path.read_text()) if self.path.exists() else {}
            mine = {k: self.data[k] for k in self.owned if k in self.data}
            self.data.clear()
            self.data.update({**disk, **mine})  # ours are the same objects bench_alpha fills
            if mine:
                atomic_write_text(self.path, json.dumps(self.data, indent=1, default=float))
        finally:
            lock.close()


def main() -> None:
    a = parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    shared = SharedState(a.work)

    def save() -> None:
        shared.sync()
        report(shared.data, a)

    for space in a.spaces:
        for alpha in a.alphas:
            cell = hold_lock(a.work / space / f"alpha{alpha:g}" / ".cell.lock")
            if cell is None:
                print(f"[{space}, alpha {alpha:g}] skipped: another process is training it",
                      flush=True)
                continue
            try:
                bench_alpha(space, alpha, a, shared, save)
            finally:
                cell.close()
    save()
    print((a.out / "federated.md").read_text())


if __name__ == "__main__":
    main()
