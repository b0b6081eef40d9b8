"""Package the reference SuperNet: a slim checkpoint in the repository, its frontier and JSON.

Run after `weightshare train --preset reference` has finished (README: "The
reference SuperNet"). From `--run` (default runs/reference) it

1. writes `checkpoints/reference/checkpoint.pt` without optimizer or teacher state
   (weights, the per-SubNet BN statistics of the evaluation set, the training
   config and history), and copies `results.json` and `log.jsonl` beside it;
2. fits the accuracy predictor (`weightshare predictor fit`) and searches the
   accuracy-vs-MACs frontier (`weightshare frontier`), each frontier SubNet
   re-measured on the full test set after BN recalibration; their BN statistics
   are stored in the slim checkpoint, so serving starts from them;
3. writes `benchmarks/results/reference.{json,md,png}`: the checkpoint's size, the
   corner accuracies, the frontier, and the learning curve (corner accuracy per
   `eval_every` epochs, read from the run's log).

    python benchmarks/reference.py                       # after the run finished
    python benchmarks/reference.py --run /tmp/tiny --out-ckpt /tmp/ref --quick   # smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.checkpoint import load_checkpoint, save_checkpoint
from weightshare.search.predictor import predictor_paths

DROP = ("optimizer", "teacher", "scaler")  # resume-only state: not needed to use the SuperNet


def slim(run: Path, dest: Path) -> Path:
    ck = load_checkpoint(run / "checkpoint.pt")
    state = {k: v for k, v in ck.train_state.items() if k not in DROP}
    dest.mkdir(parents=True, exist_ok=True)
    out = save_checkpoint(dest / "checkpoint.pt", ck.supernet, train_state=state,
                          meta={**ck.meta, "slimmed_from": str(run / "checkpoint.pt")})
    for name in ("results.json", "log.jsonl"):
        if (run / name).exists():
            shutil.copyfile(run / name, dest / name)
    return out


def _cli(*args: str) -> None:
    exe = Path(sys.executable).with_name("weightshare")
    subprocess.run([str(exe), *args], check=True, cwd=str(REPO_ROOT))


SUBSET = 2000  # test images re-scored by tests/test_reference.py with the stored BN statistics


def subset_accuracy(ckpt: Path) -> dict:
    """Smallest/largest top-1 on the first SUBSET test images, with the checkpoint's own stats."""
    from weightshare.search.specialize import dataset_for
    from weightshare.train.evaluate import accuracy

    ck = load_checkpoint(ckpt)
    data = dataset_for(ck)
    test = data.test.subset(range(min(SUBSET, len(data.test))))
    net, sp = ck.supernet.eval(), ck.supernet.space
    return {"test_images": len(test),
            **{name: accuracy(net, cfg, data, test) for name, cfg in
               (("smallest", sp.smallest()), ("largest", sp.largest()))}}


def learning_curve(log: Path) -> list[dict]:
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch" and "acc_largest" in rec:
            rows.append({"epoch": rec["epoch"] + 1, "acc_smallest": rec["acc_smallest"],
                         "acc_largest": rec["acc_largest"], "wall_s": rec["wall_s"]})
    return rows


def run(args: argparse.Namespace) -> None:
    run_dir, dest = Path(args.run), Path(args.out_ckpt)
    if not (run_dir / "results.json").exists():
        raise SystemExit(f"{run_dir} has no results.json: the run has not finished; resume it "
                         "with `weightshare train --preset reference --resume`")
    ckpt = slim(run_dir, dest)
    _cli("predictor", "fit", "-c", str(ckpt), "--samples", str(args.samples))
    frontier = dest / "frontier.json"
    _cli("frontier", "-c", str(ckpt), "-o", str(frontier), "--population", str(args.population),
         "--generations", str(args.generations))
    results = json.loads((dest / "results.json").read_text())
    if "train_images" not in results:  # results.json of runs started before it was recorded
        from weightshare.search.specialize import dataset_for

        data = dataset_for(load_checkpoint(ckpt))
        results.update(train_images=len(data.train), test_images=len(data.test))
    doc = json.loads(frontier.read_text())
    points = doc["frontier"]
    curve = learning_curve(dest / "log.jsonl")
    subset = subset_accuracy(ckpt)
    cfg = results["config"]
    payload = {
        "checkpoint": str(ckpt.relative_to(REPO_ROOT)) if ckpt.is_relative_to(REPO_ROOT)
        else str(ckpt),
        "bytes": ckpt.stat().st_size, "epochs": cfg["epochs"],
        "train_images": results.get("train_images"), "test_images": results.get("test_images"),
        "acc": {"smallest": results["acc"]["smallest"], "largest": results["acc"]["largest"],
                "mean": results["acc"]["mean"]},
        "frontier": [{"subnet": p["subnet"], "macs": p["macs"], "acc": p["measured_acc"]}
                     for p in points],
        "frontier_monotone": all(b["measured_acc"] >= a["measured_acc"]
                                 for a, b in zip(points, points[1:], strict=False)),
        # the search's Pareto set in *predicted* accuracy (plus the corners), re-measured;
        # those another beats in measured accuracy at fewer MACs are dropped
        "frontier_searched": doc.get("searched"),
        "frontier_dominated_when_measured": len(doc.get("dominated_when_measured", [])),
        "predictor": json.loads(predictor_paths(ckpt)["meta"].read_text())["report"],
        "subset_check": subset,
        "learning_curve": curve, "train_wall_s": results["wall_s"],
        "train_command": "taskset -c 0 weightshare train --preset reference --resume",
    }
    table = markdown_table(["MACs", "test top-1 %"], [[p["macs"], p["measured_acc"]] for p in points])
    table += "\n" + markdown_table(["epoch", "smallest %", "largest %"],
                                   [[c["epoch"], c["acc_smallest"], c["acc_largest"]] for c in curve])
    notes = (f"Checkpoint {payload['checkpoint']}: {payload['bytes']} bytes. Smallest "
             f"{payload['acc']['smallest']:.2f} %, largest {payload['acc']['largest']:.2f} % "
             "(test top-1 after BN recalibration). Goals: largest >= 92.5 %, smallest >= 90 %, "
             "frontier accuracy rising with MACs. Frontier: the search's "
             f"{payload['frontier_searched']} SubNets (Pareto in predicted accuracy, plus the "
             f"corners) re-measured on the test set; {payload['frontier_dominated_when_measured']}"
             " of them were beaten by a cheaper SubNet once measured and dropped.")
    out = Path(args.out)
    write_results("reference", payload, table, out, title="The reference SuperNet", notes=notes)
    _plot(points, curve, out / "reference.png")
    print(table)
    print(notes)


def _plot(points: list[dict], curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot([p["macs"] / 1e6 for p in points], [p["measured_acc"] for p in points], "o-")
    a.set_xlabel("M MACs")
    a.set_ylabel("test top-1 %")
    a.set_title("frontier (re-measured)")
    if curve:
        b.plot([c["epoch"] for c in curve], [c["acc_largest"] for c in curve], "o-", label="largest")
        b.plot([c["epoch"] for c in curve], [c["acc_smallest"] for c in curve], "s-",
               label="smallest")
        b.set_xlabel("epoch")
        b.set_ylabel("test top-1 %")
        b.set_title("learning curve")
        b.legend()
    save_plot(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=str(REPO_ROOT / "runs/reference"))
    p.add_argument("--out-ckpt", default=str(REPO_ROOT / "checkpoints/reference"))
    p.add_argument("--samples", type=int, default=400, help="SubNets measured for the predictor")
    p.add_argument("--population", type=int, default=100)
    p.add_argument("--generations", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny predictor and search")
    p.add_argument("--out", default=str(RESULTS_DIR))
    args = p.parse_args()
    if args.quick:
        args.samples, args.population, args.generations = 12, 8, 2
    run(args)


if __name__ == "__main__":
    main()
