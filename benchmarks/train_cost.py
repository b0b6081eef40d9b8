"""Training cost vs accuracy of DepS and its baselines, in one run on this machine.

Trains `deps`, `bignas`, `ofa` and `full` with epochs in the papers' proportions
(DepS 270 : BigNAS 400 : OFA 605; `full` gets DepS's epochs), then DepS again at
the training MACs OFA used. Every method is evaluated on the same evaluation set
(4 corners + 12 SubNets spread in MACs, after BN recalibration).

Each method trains in its own run folder and is resumable: rerunning the same
command skips finished methods and resumes an interrupted one. Methods are
independent, so a second process on another core can take some of them
(`--methods ofa,full`): a method another process is training is skipped, and
every process writes the table of all methods finished so far. Results:
benchmarks/results/train_cost.{json,md,png}.

    python benchmarks/train_cost.py --preset small
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, machine_info, markdown_table, save_plot, write_results  # noqa: E402

from weightshare.data import load_dataset  # noqa: E402
from weightshare.models.base import supernet_defaults  # noqa: E402
from weightshare.train import PAPER_EPOCHS, TrainConfig, train  # noqa: E402
from weightshare.train.loop import build_supernet, planned_train_macs  # noqa: E402
from weightshare.train.run import RunBusyError  # noqa: E402

DEPS_AT_OFA = "deps@ofa-compute"
METHODS = ("deps", "bignas", "ofa", "full", DEPS_AT_OFA)


# With an elastic kernel, the DepS authors' code trains DepS and BigNAS with a smaller
# kernel as the plain centre of the larger (`--dy_conv_scaling_mode -1`) and only OFA with
# its learned kernel transforms; `full` trains the largest kernel alone (either is the same).
KERNEL_TRANSFORM = {"deps": False, "bignas": False, "ofa": True, "full": True}


def authors_kernels(method: str, supernet: str, supernet_args: dict[str, Any]) -> dict[str, Any]:
    """`supernet_args` with the method's kernel transform where the kernel is elastic,
    unless the caller set one. A fixed kernel has no transform to choose, and its
    arguments stay as they are (so runs started before this option still resume)."""
    args = {**supernet_defaults(supernet), **supernet_args}
    if "kernel_transform" in supernet_args or len(args.get("kernel_choices", ())) < 2:
        return supernet_args
    return {**supernet_args, "kernel_transform": KERNEL_TRANSFORM[method]}


def run_method(name: str, cfg: TrainConfig, data: Any = None) -> dict[str, Any] | None:
    """Train (or resume, or reuse) one run; return its results.json content, or None
    when another process is training it now."""
    out = Path(cfg.out)
    done = out / "results.json"
    if done.exists():
        print(f"[{name}] reusing {done}", flush=True)
        return json.loads(done.read_text())
    resume = (out / "checkpoint.pt").exists()
    print(f"[{name}] {'resuming' if resume else 'training'} {cfg.method} for {cfg.epochs} epochs "
          f"-> {out}", flush=True)
    t0 = time.perf_counter()
    try:
        result = train(cfg, resume=resume, data=data)
    except RunBusyError as err:
        print(f"[{name}] skipped: {err}", flush=True)
        return None
    print(f"[{name}] done in {time.perf_counter() - t0:.0f} s: acc {result.summary.get('acc')}",
          flush=True)
    return result.summary


def method_entry(summary: dict[str, Any]) -> dict[str, Any]:
    rows = sorted(summary["eval"], key=lambda r: r["macs"])
    return {
        "epochs": summary["epochs"],
        "train_macs": summary["train_macs"],
        "wall_s": summary["wall_s"],
        "acc": summary["acc"],
        "curve": [[r["macs"], r["acc"]] for r in rows],
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Right: the weight-shared methods only, whose differences are a point or two; `full`
    # (the largest network alone) spans tens of points and would flatten them.
    shared = {k: m for k, m in results["methods"].items() if k != "full"}
    panels = [results["methods"], shared] if 0 < len(shared) < len(results["methods"]) else [
        results["methods"]]
    # one colour per method in both panels
    colour = {name: f"C{i}" for i, name in enumerate(results["methods"])}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, methods in zip(axes[0], panels, strict=True):
        for name, m in methods.items():
            curve = sorted(m["curve"])
            ax.plot([c[0] / 1e6 for c in curve], [c[1] for c in curve], marker="o", ms=3,
                    color=colour[name],
                    label=f"{name} ({m['train_macs'] / 1e12:.1f} T train MACs)")
        ax.set_xlabel("SubNet MACs (millions)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_title(f"{results['supernet']} on {results['dataset']}: evaluation set")
    if len(panels) > 1:
        axes[0][1].set_title("weight-shared methods only")
    save_plot(fig, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--unit-epochs", type=float, default=None,
                    help="DepS epochs (the 270 of the paper); default: the preset's epochs")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--runs-dir", default="runs/train_cost")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument("--name", default="train_cost")
    ap.add_argument("--note", default="",
                    help="Markdown written under the table (e.g. pauses included in wall s)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="training option override KEY=VALUE for every method")
    args = ap.parse_args(argv)

    base = TrainConfig.load(args.preset, args.overrides)
    unit = args.unit_epochs or base.epochs
    runs = Path(args.runs_dir)
    wanted = args.methods.split(",")
    data = load_dataset(base.dataset, base.data_dir, calib_size=base.calib_size, seed=base.seed,
                        train_subset=base.train_subset, test_subset=base.test_subset,
                        **base.dataset_args)
    configs = {}
    for name in ("deps", "bignas", "ofa", "full"):
        epochs = max(1, round(unit * PAPER_EPOCHS[name if name != "full" else "deps"] / 270))
        configs[name] = base.replace(method=name, epochs=epochs, out=str(runs / name),
                                     supernet_args=authors_kernels(name, base.supernet,
                                                                   base.supernet_args))
    # DepS given OFA's training compute: scale its epochs by the MAC ratio, computed exactly
    # from the plans (no need to wait for OFA to finish; equal to the measured ratio)
    net = build_supernet(base, data)
    spe = len(data.train) // base.batch_size
    ratio = (planned_train_macs(configs["ofa"], net, spe)
             / planned_train_macs(configs["deps"], net, spe))
    configs[DEPS_AT_OFA] = configs["deps"].replace(
        epochs=max(1, round(configs["deps"].epochs * ratio)),
        out=str(runs / "deps_at_ofa_compute"))
    order = [*wanted, *(m for m in METHODS if m not in wanted)]
    for name in wanted:  # a table after every method: a long run's partial table is readable
        if run_method(name, configs[name], data) is not None:
            print(report(finished(configs, order), base, args), flush=True)


def finished(configs: dict[str, TrainConfig], order: list[str]) -> dict[str, dict[str, Any]]:
    """Every method whose run has finished, by this process or another, in `order`."""
    done = {name: Path(configs[name].out) / "results.json" for name in order}
    return {name: json.loads(path.read_text()) for name, path in done.items() if path.exists()}


def report(summaries: dict[str, dict[str, Any]], base: TrainConfig,
           args: argparse.Namespace) -> str:
    """Write `<name>.{json,md,png}` from the finished methods; return the table."""
    first = next(iter(summaries.values()))
    results = {
        "dataset": base.dataset,
        "supernet": base.supernet,
        "supernet_args": base.supernet_args,
        "preset": args.preset,
        "train_subset": base.train_subset,
        "machine": machine_info(),
        "eval_subnets": [r["subnet"] for r in first["eval"]],
        "methods": {k: method_entry(v) for k, v in summaries.items()},
    }
    for name, summary in summaries.items():  # same SuperNet and seed: same evaluation set
        assert [r["subnet"] for r in summary["eval"]] == results["eval_subnets"], name
    headers = ["method", "epochs", "train T-MACs", "wall s", "smallest %", "largest %", "mean %"]
    rows = [[k, m["epochs"], m["train_macs"] / 1e12, m["wall_s"], m["acc"]["smallest"],
             m["acc"]["largest"], m["acc"]["mean"]] for k, m in results["methods"].items()]
    table = markdown_table(headers, rows)
    goals = goal_lines(results["methods"])
    results["goals"] = goals
    table += "\n" + "\n".join(f"- {g}" for g in goals) + "\n"
    missing = [m for m in METHODS if m not in summaries]
    results["partial"] = missing
    notes = [f"**PARTIAL**: rows still to come: {', '.join(missing)}."] if missing else []
    notes += [args.note] if args.note else []
    out = Path(args.out)
    write_results(args.name, results, table, out, title="Training cost vs accuracy",
                  notes="\n\n".join(notes))
    plot(results, out / f"{args.name}.png")
    return table


def goal_lines(methods: dict[str, Any]) -> list[str]:
    out = []
    if {"deps", "ofa"} <= set(methods):
        d, o = methods["deps"], methods["ofa"]
        gap = d["acc"]["mean"] - o["acc"]["mean"]
        ratio = d["train_macs"] / o["train_macs"]
        ok = gap >= -0.3 and ratio <= 0.5
        out.append(f"DepS mean {d['acc']['mean']:.2f}% vs OFA {o['acc']['mean']:.2f}% "
                   f"(gap {gap:+.2f} points) at {ratio:.2f}x OFA's training MACs: goal (within "
                   f"0.3 points at <= 0.5x) {'met' if ok else 'NOT met'}")
    if {"deps", "bignas"} <= set(methods):
        d, b = methods["deps"]["acc"]["smallest"], methods["bignas"]["acc"]["smallest"]
        out.append(f"smallest SubNet: DepS {d:.2f}% vs BigNAS {b:.2f}%: goal (DepS >= BigNAS) "
                   f"{'met' if d >= b else 'NOT met'}")
    if {DEPS_AT_OFA, "ofa"} <= set(methods):
        d, o = methods[DEPS_AT_OFA], methods["ofa"]
        out.append(f"DepS at OFA's compute ({d['train_macs'] / o['train_macs']:.2f}x): mean "
                   f"{d['acc']['mean']:.2f}% vs OFA {o['acc']['mean']:.2f}%")
    return out


if __name__ == "__main__":
    main()
