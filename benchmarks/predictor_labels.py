"""How well can any accuracy predictor rank this SuperNet's SubNets? Labels, their noise, the ceiling.

`benchmarks/search.py` reports the predictor's Kendall tau against labels measured
on 1 000 held-out images. A label is a top-1 on a finite sample of images, so it
carries sampling noise; when that noise is not well below the true differences
between SubNets, no model, however good, ranks the labels well. This benchmark
measures how far that goes on a trained checkpoint:

1. the predictor's unseen SubNets (the seeded 20 % `fit_predictor` never fits) are
   re-scored on the whole test split (10 000 images on Fashion-MNIST), after the
   same BN recalibration as their labels; the predictor never sees these labels;
2. the noise of a label on n images comes from scoring two disjoint halves apart
   (std of the half difference / 2, SubNet-specific, since the mean difference is
   removed), and the *true* spread between SubNets is what is left of the labels'
   variance after the noise;
3. a perfect predictor (one that knows the true accuracies) is simulated against
   labels of n images: its expected Kendall tau is the ceiling for that n.

Only the comparison with test labels is clean. The held-out labels of the unseen
SubNets are measured on the same 1 000 images as the fitted SubNets' labels, and
SubNets of similar shape miss similar images, so part of that sample's "noise" is
learnable from the architecture: against those labels a predictor can beat the
ceiling the independent-noise model draws. The ceiling assumes noise independent
between SubNets; it is an estimate.

Reported: the predictor's tau against the 1 000-image labels and against the
10 000-image test labels, the split-half tau of the test labels, the tau of MACs
alone (bigger is better), the noise and true spread, and the ceiling curve with
the number of label images a perfect predictor would need for tau 0.8.

    python benchmarks/predictor_labels.py --checkpoint checkpoints/reference/checkpoint.pt
    python benchmarks/predictor_labels.py --quick        # smoke run on a random-init tiny net
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.checkpoint import load_checkpoint, save_checkpoint
from weightshare.data import load_dataset, make_loader
from weightshare.deployment import dataset_for
from weightshare.models import create_supernet
from weightshare.progress import progress
from weightshare.search.common import kendall_tau
from weightshare.search.predictor import (
    fit_and_save,
    holdout_split,
    load_predictor,
    predictor_paths,
    read_samples,
    split_indices,
)
from weightshare.train.evaluate import recalibrate

LABEL_SIZES = (1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000)
TARGET_TAU = 0.8


@torch.no_grad()
def correct_mask(net, cfg, dataset, images) -> np.ndarray:
    """Per-image top-1 hits of `cfg` on `images` (the same loader `accuracy` counts through)."""
    net.eval()
    hits = [(net(x, cfg).argmax(1) == y).numpy()
            for x, y in make_loader(images, dataset, 500, train=False, resolution=cfg.resolution)]
    return np.concatenate(hits)


def label_statistics(hits: np.ndarray, holdout: np.ndarray) -> dict:
    """Accuracy labels, their noise and the true spread, from per-image hits.

    `hits` is SubNets x images (1 = correct) on the test split, `holdout` the same
    SubNets' labels measured on other images. Two disjoint halves A, B of the test
    images give the noise of the full-test label, std(A - B) / 2 across SubNets (the
    mean difference, a harder half, is common to all and drops out); the true spread
    is the label variance less that noise; and since held-out and test labels are
    independent samples of the same truth, var(holdout - test) less the test noise
    is the held-out labels' own noise. All in percentage points.
    """
    test = 100.0 * hits.mean(1)
    half = hits.shape[1] // 2
    a, b = 100.0 * hits[:, :half].mean(1), 100.0 * hits[:, half:2 * half].mean(1)
    noise_test = float(np.std(a - b) / 2)
    return {"test": test, "half_a": a, "half_b": b, "noise_test": noise_test,
            "noise_holdout": float(math.sqrt(max(0.0, np.var(holdout - test) - noise_test ** 2))),
            "true_spread": float(math.sqrt(max(0.0, np.var(test) - noise_test ** 2)))}


def ceiling_tau(true_spread: float, noise: float, k: int, draws: int, seed: int = 0) -> float:
    """Expected Kendall tau between k true accuracies (std `true_spread`) and noisy labels."""
    if true_spread <= 0:
        return 0.0
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(draws):
        truth = rng.normal(0.0, true_spread, k)
        taus.append(kendall_tau(truth.tolist(), (truth + rng.normal(0.0, noise, k)).tolist()))
    return float(np.mean(taus))


def images_for(curve: list[dict], target: float) -> int | None:
    """Label images at which the ceiling first reaches `target` (log-interpolated), if it does."""
    for lo, hi in zip(curve, curve[1:], strict=False):
        if lo["ceiling_tau"] < target <= hi["ceiling_tau"]:
            f = (target - lo["ceiling_tau"]) / (hi["ceiling_tau"] - lo["ceiling_tau"])
            return round(math.exp(math.log(lo["images"]) + f * math.log(hi["images"] / lo["images"])))
    if curve and curve[0]["ceiling_tau"] >= target:
        return curve[0]["images"]
    return None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="a trained checkpoint with a fitted predictor")
    p.add_argument("--subnets", type=int, default=80, help="unseen SubNets to re-score (max: all)")
    p.add_argument("--draws", type=int, default=400, help="Monte-Carlo draws per ceiling point")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS_DIR})")
    p.add_argument("--quick", action="store_true", help="smoke run on a random-init tiny net")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or (Path(tempfile.mkdtemp(prefix="predlabels_")) if args.quick else RESULTS_DIR)
    if args.quick:
        torch.manual_seed(0)
        args.checkpoint = Path(tempfile.mkdtemp(prefix="predlabels_work_")) / "quick.pt"
        net = create_supernet("ofa_mbv3_small", width_mult=0.25, kernel_choices=(3, 5), feature_dim=32,
                              unit_widths=(16, 16, 24, 24, 32))
        save_checkpoint(args.checkpoint, net)
        data = load_dataset("synthetic", n_train=256, n_test=400, calib_size=100)
        fit_and_save(net, data, args.checkpoint, 30, epochs=20)
        args.subnets, args.draws = min(args.subnets, 6), min(args.draws, 20)
    elif args.checkpoint is None:
        raise SystemExit("--checkpoint is required (or --quick for a smoke run)")
    ck = load_checkpoint(args.checkpoint)
    net = ck.supernet.eval()
    if not args.quick:
        data = dataset_for(ck)
    pred = load_predictor(args.checkpoint, net)
    samples = read_samples(predictor_paths(args.checkpoint)["samples"], net.space)
    unseen_i, _ = split_indices(len(samples))
    unseen = [samples[i] for i in unseen_i][:args.subnets]
    bn_data, label_images = holdout_split(data)
    test = data.test
    print(f"{len(unseen)} unseen SubNets; labels on {len(label_images)} held-out images, "
          f"re-scored on {len(test)} test images", flush=True)

    t0 = time.perf_counter()
    masks = []
    for s in progress(unseen, desc="re-score", unit="subnet"):
        recalibrate(net, s.subnet, bn_data)  # the BN statistics its label was measured with
        masks.append(correct_mask(net, s.subnet, data, test))
        net.subnet_norms.pop(s.subnet, None)
    hits = np.stack(masks).astype(np.float64)  # SubNets x test images
    score_s = time.perf_counter() - t0

    predicted = pred.predict([s.subnet for s in unseen]).astype(np.float64)
    holdout = np.array([s.acc for s in unseen])
    st = label_statistics(hits, holdout)
    test_acc, a, b, half = st["test"], st["half_a"], st["half_b"], hits.shape[1] // 2
    noise_test, noise_holdout, true_spread = st["noise_test"], st["noise_holdout"], st["true_spread"]
    noise_1000 = noise_test * math.sqrt(len(test) / 1000)
    macs = [net.cost(s.subnet).macs for s in unseen]

    taus = {
        "predictor_vs_holdout": kendall_tau(predicted.tolist(), holdout.tolist()),
        "predictor_vs_test": kendall_tau(predicted.tolist(), test_acc.tolist()),
        "macs_vs_test": kendall_tau(macs, test_acc.tolist()),
        "test_half_vs_half": kendall_tau(a.tolist(), b.tolist()),
        "holdout_vs_test": kendall_tau(holdout.tolist(), test_acc.tolist()),
    }
    curve = [{"images": n, "noise_pt": noise_1000 * math.sqrt(1000 / n),
              "ceiling_tau": ceiling_tau(true_spread, noise_1000 * math.sqrt(1000 / n),
                                         len(unseen), args.draws)} for n in LABEL_SIZES]
    need = images_for(curve, TARGET_TAU)
    at = {c["images"]: c["ceiling_tau"] for c in curve}
    print(f"noise: {noise_1000:.3f} pt at 1000 images (held-out labels measured: "
          f"{noise_holdout:.3f}), {noise_test:.3f} at {len(test)}; true spread {true_spread:.3f} pt",
          flush=True)
    print("tau: " + ", ".join(f"{k} {v:.3f}" for k, v in taus.items()), flush=True)
    print(f"ceiling: {at[1000]:.3f} at 1000 images, {at[10000]:.3f} at 10000; tau {TARGET_TAU} "
          f"needs {need if need else f'more than {LABEL_SIZES[-1]}'} images", flush=True)

    rows = [[f"predictor vs held-out labels ({len(label_images)} images)",
             taus["predictor_vs_holdout"], at[1000]],
            [f"predictor vs test labels ({len(test)} images)", taus["predictor_vs_test"],
             ceiling_tau(true_spread, noise_test, len(unseen), args.draws)],
            [f"MACs alone vs test labels ({len(test)} images)", taus["macs_vs_test"], ""],
            [f"test half vs other half ({half} images each)", taus["test_half_vs_half"], ""]]
    table = markdown_table(["ranking", "Kendall tau", "perfect predictor's expected tau"], rows)
    table += "\n" + markdown_table(
        ["label images", "label noise (pt)", "perfect predictor's expected tau"],
        [[c["images"], c["noise_pt"], c["ceiling_tau"]] for c in curve])
    notes = (
        f"{len(unseen)} SubNets the predictor never saw, re-scored on {len(test)} test images "
        f"after the BN recalibration their labels used ({score_s:.0f} s). Label noise "
        f"{noise_1000:.3f} points at 1 000 images ({noise_test:.3f} at {len(test)}); the true "
        f"spread between SubNets is {true_spread:.3f} points (std, label variance less noise). "
        f"A perfect predictor reaches tau {TARGET_TAU} only with labels on "
        f"{f'about {need:,}' if need else f'more than {LABEL_SIZES[-1]:,}'} images.")
    payload = {"checkpoint": str(args.checkpoint), "subnets": len(unseen),
               "label_images": len(label_images), "test_images": len(test),
               "noise_pt": {"at_1000": noise_1000, "holdout_measured": noise_holdout,
                            "at_test": noise_test},
               "true_spread_pt": true_spread, "tau": taus, "ceiling": curve,
               "images_for_tau": {str(TARGET_TAU): need}, "score_s": score_s,
               "points": [{"subnet": s.subnet.to_dict(), "macs": m, "predicted": float(p),
                           "holdout": float(h), "test": float(t)}
                          for s, m, p, h, t in zip(unseen, macs, predicted, holdout, test_acc,
                                                   strict=True)]}
    json_path, md_path = write_results("predictor_labels", payload, table, out,
                                       title="How well can a predictor rank SubNets?", notes=notes)
    plot(payload, out / "predictor_labels.png")
    print(f"wrote {json_path}, {md_path}")


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = payload["points"]
    ax1.scatter([p["predicted"] for p in pts], [p["test"] for p in pts], s=14, label="test labels")
    ax1.scatter([p["predicted"] for p in pts], [p["holdout"] for p in pts], s=10, marker="x",
                alpha=0.6, label=f"held-out labels ({payload['label_images']} images)")
    ax1.set_xlabel("predicted top-1 (%)")
    ax1.set_ylabel("measured top-1 (%)")
    ax1.set_title(f"{payload['subnets']} unseen SubNets")
    ax1.legend(fontsize=8)
    curve = payload["ceiling"]
    ax2.semilogx([c["images"] for c in curve], [c["ceiling_tau"] for c in curve], "o-",
                 label="perfect predictor (expected)")
    ax2.plot([payload["label_images"]], [payload["tau"]["predictor_vs_holdout"]], "s",
             label="our predictor vs held-out labels")
    ax2.plot([payload["test_images"]], [payload["tau"]["predictor_vs_test"]], "^",
             label="our predictor vs test labels")
    ax2.axhline(TARGET_TAU, color="grey", ls="--", lw=0.8)
    ax2.set_xlabel("images per label")
    ax2.set_ylabel("Kendall tau")
    ax2.set_ylim(0, 1)
    ax2.set_title(f"true spread {payload['true_spread_pt']:.3f} pt between SubNets")
    ax2.legend(fontsize=8)
    save_plot(fig, path)


if __name__ == "__main__":
    main()
