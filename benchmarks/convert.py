"""Bring your own model: convert two ordinary trained CNNs, DepS-shrink them, compare with
training their SubNets from scratch at equal total compute.

For each "user's model" (a small ResNet and a MobileNetV2-style net, plain torch.nn,
defined here):
1. train it on Fashion-MNIST with a plain SGD loop (cosine LR) until it converges;
2. `weightshare.convert` it; check that the largest SubNet equals it (max |diff|);
3. DepS-shrink from the converted checkpoint (`train --from`, shrink_at=0: reorder,
   sandwich with in-place KD, beta ramp) with at most half of step 1's training MACs;
   a second run keeps a short "largest alone" phase (shrink_at=0.25) to measure which
   start is better;
4. the frontier: the Pareto set of the run's evaluation SubNets (4 corners + spread in
   MACs, each BN-recalibrated, test top-1);
5. baseline: up to 3 frontier architectures re-initialised and trained from scratch,
   sharing the converted path's total compute (steps 1 + 3) equally.
Training MACs count 3x the forward MACs per image (forward + backward), as the trainer does.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/convert.py   # ~15 min of one free core
    python benchmarks/convert.py --quick                                    # smoke run
Writes results/convert.{json,md,png} after every model.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, markdown_table, save_plot, write_results  # noqa: E402

import weightshare  # noqa: E402
from weightshare.checkpoint import save_checkpoint  # noqa: E402
from weightshare.data import load_dataset, make_loader  # noqa: E402
from weightshare.space import SubnetConfig  # noqa: E402
from weightshare.train import TrainConfig, train  # noqa: E402
from weightshare.train.loop import planned_train_macs  # noqa: E402


# ------------------------------------------------------------------ the user's models
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-14-ish for 28 px: stem, 3 stages x 2 basic blocks, global pool, linear."""

    def __init__(self, widths=(8, 16, 32), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for s, w in enumerate(widths):
            for b in range(2):
                blocks.append(BasicBlock(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class SmallMobileNetV2(nn.Module):
    """MobileNetV2-style for 28 px: stem, 3 stages x 2 inverted residuals (expand 4), 1x1, fc."""

    def __init__(self, stages=((8, 1), (16, 2), (32, 2)), expand: int = 4, last: int = 128,
                 classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        blocks, cin = [], 8
        for c, s in stages:
            for b in range(2):
                blocks.append(InvertedResidual(cin, c, s if b == 0 else 1, expand))
                cin = c
        self.features = nn.Sequential(*blocks, nn.Conv2d(cin, last, 1, bias=False),
                                      nn.BatchNorm2d(last), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(last, classes))

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.features(self.stem(x)), 1).flatten(1))


USER_MODELS = {"resnet": SmallResNet, "mobilenetv2": SmallMobileNetV2}


# ----------------------------------------------------------------------- helpers
def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Conv/linear MACs of one image, counted with hooks (independent of the converter)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] ** 2
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(x[:1])
    for h in handles:
        h.remove()
    return total


@torch.no_grad()
def test_accuracy(model: nn.Module, data) -> float:
    model.eval()
    correct = total = 0
    for x, y in make_loader(data.test, data, 500, train=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def train_plain(model: nn.Module, data, steps: int, *, lr: float, batch: int, seed: int,
                label: str) -> dict[str, Any]:
    """The user's own loop: SGD nesterov, cosine LR over `steps`, label smoothing 0.1."""
    torch.manual_seed(seed)
    model.to(memory_format=torch.channels_last)  # oneDNN's depthwise backward is slow on NCHW
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-5)
    loader = make_loader(data.train, data, batch, train=True, seed=seed, augment=True)
    step, epoch, t0 = 0, 0, time.perf_counter()
    model.train()
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / steps))
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
        print(f"  [{label}] epoch {epoch}: step {step}/{steps}, loss {loss.item():.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"steps": steps, "images": steps * batch, "wall_s": time.perf_counter() - t0}


def reinitialise(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    return model


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not beaten by a cheaper-or-equal row with higher accuracy, by increasing MACs."""
    best, out = -1.0, []
    for r in sorted(rows, key=lambda r: (r["macs"], -r["acc"])):
        if r["acc"] > best:
            out.append(r)
            best = r["acc"]
    return out


def frontier_acc_at(front: list[dict[str, Any]], macs: float) -> float | None:
    """The converted frontier's best accuracy at no more than `macs`."""
    fits = [r["acc"] for r in front if r["macs"] <= macs]
    return max(fits) if fits else None


def shrink(ckpt: Path, data, out: Path, *, epochs: int, shrink_at: float, lr: float,
           batch: int, num_random: int, spread: int) -> dict[str, Any]:
    cfg = TrainConfig(method="deps", init_from=str(ckpt), shrink_at=shrink_at, epochs=epochs,
                      lr=lr, batch_size=batch, num_random=num_random, eval_spread=spread,
                      out=str(out), device="cpu", amp="off", tensorboard=False, progress=False,
                      dropout=0.0)
    result = train(cfg, data=data)
    return result.summary


# ---------------------------------------------------------------------------- main
def run_model(name: str, data, args, tmp: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    model = USER_MODELS[name]()
    x = torch.randn(8, 1, 28, 28)
    macs = forward_macs(model, x)
    steps_per_epoch = len(data.train) // args.batch
    orig_steps = args.epochs * steps_per_epoch
    print(f"[{name}] {sum(p.numel() for p in model.parameters()):,} params, {macs / 1e6:.2f} M "
          f"MACs; training {orig_steps} steps", flush=True)
    info = train_plain(model, data, orig_steps, lr=args.lr, batch=args.batch, seed=0,
                       label=f"{name} original")
    orig_train_macs = 3 * macs * info["images"]
    orig_acc = test_accuracy(model, data)
    print(f"[{name}] original: {orig_acc:.2f} % top-1, {orig_train_macs / 1e12:.2f} T training "
          f"MACs, {info['wall_s']:.0f} s", flush=True)

    test_batch = next(iter(make_loader(data.test, data, 500, train=False)))[0]
    net = weightshare.convert(model, test_batch[:8], width=tuple(args.width))
    net.eval()
    with torch.no_grad():
        maxdiff = float((net(test_batch, net.space.largest()) - model.eval()(test_batch))
                        .abs().max())
    assert net.cost(net.space.largest()).macs == macs, "analytic MACs differ from counted"
    print(f"[{name}] converted: {net.space.summary()}; largest vs original max |diff| "
          f"{maxdiff:.3g} on 500 test images", flush=True)
    ckpt = save_checkpoint(tmp / f"{name}_converted.pt", net)

    # the largest number of shrink epochs within half the original training compute
    probe = TrainConfig(method="deps", init_from=str(ckpt), shrink_at=0.0, epochs=1,
                        batch_size=args.batch, num_random=args.num_random)
    per_epoch = planned_train_macs(probe, net, steps_per_epoch)
    epochs = max(1, int(0.5 * orig_train_macs // per_epoch))
    print(f"[{name}] DepS shrink: {epochs} epoch(s) of {per_epoch / 1e12:.2f} T MACs "
          f"(budget {0.5 * orig_train_macs / 1e12:.2f} T)", flush=True)
    variants = {}
    for shrink_at in args.variants:
        t0 = time.perf_counter()
        summary = shrink(ckpt, data, tmp / f"{name}_deps_{shrink_at}", epochs=epochs,
                         shrink_at=shrink_at, lr=args.shrink_lr, batch=args.batch,
                         num_random=args.num_random, spread=args.spread)
        rows = [{"subnet": r["subnet"], "macs": r["macs"], "params": r["params"], "acc": r["acc"]}
                for r in summary.get("eval", [])]
        front = pareto(rows)
        variants[str(shrink_at)] = {"shrink_at": shrink_at, "train_macs": summary["train_macs"],
                                    "wall_s": time.perf_counter() - t0, "evaluated": rows,
                                    "frontier": front,
                                    "mean_frontier_acc": sum(r["acc"] for r in front)
                                    / max(1, len(front))}
        print(f"[{name}] shrink_at={shrink_at}: {summary['train_macs'] / 1e12:.2f} T MACs, "
              f"frontier " + ", ".join(f"{r['macs'] / 1e6:.2f}M:{r['acc']:.2f}" for r in front),
              flush=True)
    chosen = variants[str(float(args.variants[0]))]
    front = chosen["frontier"]
    half = [r for r in front if r["macs"] <= macs / 2]
    best_half = max(half, key=lambda r: r["acc"]) if half else None

    # from scratch: up to 3 frontier architectures, sharing the converted path's compute
    picks: list[dict[str, Any]] = []
    for target in (0.3, 0.5, 0.7):
        cands = [r for r in front if r["macs"] <= target * macs and r not in picks]
        if cands:
            picks.append(max(cands, key=lambda r: r["macs"]))
    total_macs = orig_train_macs + chosen["train_macs"]
    scratch = []
    for r in picks:
        cfg = SubnetConfig.from_dict(r["subnet"])
        static = reinitialise(net.extract(cfg))
        share = total_macs / len(picks)
        steps = max(1, int(share // (3 * r["macs"] * args.batch)))
        info = train_plain(static, data, steps, lr=args.lr, batch=args.batch, seed=1,
                           label=f"{name} scratch {r['macs'] / 1e6:.2f}M")
        acc = test_accuracy(static, data)
        conv_acc = frontier_acc_at(front, r["macs"])
        scratch.append({"subnet": r["subnet"], "macs": r["macs"], "acc": acc,
                        "train_macs": 3 * r["macs"] * info["images"],
                        "epochs": info["images"] / len(data.train),
                        "converted_acc_at_macs": conv_acc})
        print(f"[{name}] from scratch {r['macs'] / 1e6:.2f} M MACs: {acc:.2f} % "
              f"(converted frontier {conv_acc:.2f} %)", flush=True)
    goals = {
        "largest_equals_original": maxdiff <= 1e-5,
        "half_macs_within_1pt": bool(best_half and best_half["acc"] >= orig_acc - 1.0),
        "frontier_above_scratch": bool(scratch) and all(
            s["converted_acc_at_macs"] is not None and s["converted_acc_at_macs"] > s["acc"]
            for s in scratch),
    }
    better = max(variants.values(), key=lambda v: v["mean_frontier_acc"])["shrink_at"]
    return {
        "name": name,
        "original": {"macs": macs, "params": sum(p.numel() for p in model.parameters()),
                     "acc": orig_acc, "train_macs": orig_train_macs,
                     "epochs": info_epochs(orig_steps, args.batch, data)},
        "space": net.space.summary(),
        "largest_equals_original_maxdiff": maxdiff,
        "shrink_train_macs": chosen["train_macs"],
        "shrink_epochs": epochs,
        "frontier": [{"subnet": r["subnet"], "macs": r["macs"], "acc": r["acc"]} for r in front],
        "best_half_macs": best_half,
        "from_scratch": scratch,
        "from_scratch_total_macs": total_macs,
        "shrink_variants": variants,
        "better_shrink_at": better,
        "goals": goals,
    }


def info_epochs(steps: int, batch: int, data) -> float:
    return steps * batch / len(data.train)


def report(models: list[dict[str, Any]], args, elapsed: float | None, name: str = "convert",
           parts: list[str] | None = None) -> None:
    rows = []
    for m in models:
        o = m["original"]
        b = m["best_half_macs"]
        rows.append([m["name"], "original", f"{o['macs'] / 1e6:.2f}", f"{o['acc']:.2f}",
                     f"{o['train_macs'] / 1e12:.2f}", ""])
        for r in m["frontier"]:
            mark = " (best at <= 1/2 MACs)" if b and r["subnet"] == b["subnet"] else ""
            rows.append([m["name"], "converted + DepS" + mark, f"{r['macs'] / 1e6:.2f}",
                         f"{r['acc']:.2f}", "", ""])
        for s in m["from_scratch"]:
            rows.append([m["name"], "from scratch", f"{s['macs'] / 1e6:.2f}", f"{s['acc']:.2f}",
                         f"{s['train_macs'] / 1e12:.2f}",
                         f"{s['converted_acc_at_macs']:.2f}"])
    table = markdown_table(["model", "network", "M MACs", "top-1 %", "train T MACs",
                            "converted at <= MACs"], rows)
    notes = []
    for m in models:
        v = m["shrink_variants"]
        compare = ", ".join(f"shrink_at {k}: {x['mean_frontier_acc']:.2f} %" for k, x in v.items())
        notes.append(
            f"- **{m['name']}**: space {m['space']}. Largest vs original max |diff| "
            f"{m['largest_equals_original_maxdiff']:.3g}. Shrink {m['shrink_epochs']} epoch(s), "
            f"{m['shrink_train_macs'] / 1e12:.2f} T MACs = "
            f"{m['shrink_train_macs'] / m['original']['train_macs']:.2f} x the original's training. "
            f"Mean frontier top-1 by start: {compare} (better: {m['better_shrink_at']}). "
            f"Goals: {m['goals']}.")
    wall = (f"Total wall time {elapsed / 60:.1f} min. " if elapsed is not None
            else "Wall time: see each part's Markdown. ")
    notes.append(f"\n{wall}From-scratch SubNets share the "
                 "converted path's total training MACs (original + shrink) equally.")
    payload: dict[str, Any] = {"models": models, "quick": args.quick, "settings": vars(args),
                               "elapsed_s": elapsed}
    if parts:
        payload["parts"] = parts
        notes.append("Combined from runs made side by side: " + "; ".join(parts))
    write_results(name, payload, table, args.out,
                  title="Bring your own model: convert + DepS vs from scratch",
                  notes="\n".join(notes))
    plot(models, Path(args.out) / f"{name}.png")


def combine(paths: list[str], args) -> None:
    """One convert.{json,md,png} from per-model runs made in parallel (--tag)."""
    import json

    models, parts = [], []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        models += doc["models"]
        parts.append(f"`{doc['command']}` ({doc['timestamp']}, {Path(path).name})")
    report(models, args, None, parts=parts)


def plot(models: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=False):
        ev = next(iter(m["shrink_variants"].values()))["evaluated"]
        ax.scatter([r["macs"] / 1e6 for r in ev], [r["acc"] for r in ev], s=12, c="0.7",
                   label="evaluated SubNets")
        f = m["frontier"]
        ax.plot([r["macs"] / 1e6 for r in f], [r["acc"] for r in f], "o-", label="converted + DepS")
        s = m["from_scratch"]
        ax.scatter([r["macs"] / 1e6 for r in s], [r["acc"] for r in s], marker="x", s=60, c="r",
                   label="from scratch (equal total compute)")
        o = m["original"]
        ax.scatter([o["macs"] / 1e6], [o["acc"]], marker="*", s=150, c="k", label="original")
        ax.set_title(m["name"])
        ax.set_xlabel("M MACs")
        ax.set_ylabel("top-1 % (Fashion-MNIST test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_plot(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps, a data subset")
    p.add_argument("--models", nargs="+", default=list(USER_MODELS), choices=list(USER_MODELS))
    p.add_argument("--epochs", type=int, default=12, help="epochs of the original training")
    p.add_argument("--train-subset", type=int, default=8000,
                   help="training images (of 58,000; one shared CPU core sets the size)")
    p.add_argument("--test-subset", type=int, default=3000)
    p.add_argument("--calib", type=int, default=1000, help="BN recalibration images")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--shrink-lr", type=float, default=0.03)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--num-random", type=int, default=1)
    p.add_argument("--spread", type=int, default=6)
    p.add_argument("--variants", type=float, nargs="+", default=[0.0, 0.25],
                   help="shrink_at values to compare (the first one is the reported run)")
    p.add_argument("--width", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--tag", help="write convert_TAG.* (a part run; see --combine)")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="merge part results into convert.{json,md,png} and exit")
    args = p.parse_args()
    if args.combine:
        combine(args.combine, args)
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_dataset("fashion-mnist", calib_size=args.calib, seed=0,
                        train_subset=1000 if args.quick else args.train_subset,
                        test_subset=500 if args.quick else args.test_subset)
    if args.quick:
        args.epochs, args.spread = 2, 2
    models: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ws_convert_") as tmp:
        for name in args.models:
            models.append(run_model(name, data, args, Path(tmp)))
            report(models, args, time.perf_counter() - t0,
                   name=f"convert_{args.tag}" if args.tag else "convert")
    for m in models:
        print(f"{m['name']}: goals {m['goals']}")


if __name__ == "__main__":
    main()
