"""The GPU check: one short script a user with a GPU runs to see the training path work there.

It measures, on the default device (`--device`, default cuda when present):

* DepS step throughput of the `full` preset's SuperNet (`ofa_mbv3`, 224 px) at
  `--batch` (256), for the largest SubNet alone and the sandwich (largest +
  smallest + 2 random, in-place KD), each with `amp=off` (fp32) and `amp=auto`
  (bf16 where supported, else fp16 with a gradient scaler), channels_last on,
  through the real training loop (`weightshare.train.train` with `max_steps`);
* the peak GPU memory of each of those runs;
* the streaming image-folder loader's images/s (a generated ImageNet-layout JPEG
  folder, `--loader-images` files, `--workers` DataLoader workers).

It prints a table and writes `gpu_check.json` + `.md` to `--out`
(benchmarks/results by default). On a machine without a GPU, `--device cpu
--quick` runs the same code at toy sizes (what CI-less users can check first).

    python benchmarks/gpu_check.py                          # on a GPU machine, ~5 min
    python benchmarks/gpu_check.py --device cpu --quick     # smoke test anywhere
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS_DIR, markdown_table, write_results

STEPS = {"largest": ("full", 1.0), "sandwich": ("deps", 0.0)}  # method, shrink_at


def step_throughput(step: str, amp: str, args: argparse.Namespace) -> dict:
    from weightshare.train import TrainConfig, train

    method, shrink_at = STEPS[step]
    device = torch.device(args.device)
    n_train = args.batch * (args.steps + 2) + 64
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.load("full", [
            f"method={method}", f"shrink_at={shrink_at}", f"max_steps={args.steps}",
            f"batch_size={args.batch}", f"amp={amp}", f"device={args.device}",
            "dataset=synthetic", "calib_size=64", "eval_spread=0", "tensorboard=false",
            "progress=false", "warmup_epochs=0", f"out={tmp}/run",
            f"dataset_args={{n_train: {n_train}, n_test: 64, image_size: {args.px}, "
            f"in_channels: 3, num_classes: 1000}}",
            *(["supernet_args={kernel_choices: [7], width_mult: 0.5}"] if args.quick else []),
        ])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train(cfg)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        walls = [json.loads(line)["wall_s"] for line in
                 (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()
                 if json.loads(line).get("kind") == "train"]
    per_step = [b - a for a, b in zip(walls[args.warmup:], walls[args.warmup + 1:], strict=False)]
    sec = statistics.median(per_step)
    return {"step": step, "amp": amp, "img_per_s": args.batch / sec, "step_ms": 1e3 * sec,
            "peak_mem_mib": None if peak is None else peak / 2**20}


def loader_throughput(args: argparse.Namespace) -> dict:
    from data_loading import make_tree

    from weightshare.data import load_dataset, make_loader

    with tempfile.TemporaryDirectory() as tmp:
        make_tree(Path(tmp), args.loader_images, classes=10)
        (Path(tmp) / "test").symlink_to(Path(tmp) / "train")
        ds = load_dataset("imagefolder", tmp, calib_size=16, image_size=args.px, stream=True)
        loader = make_loader(ds.train, ds, min(args.batch, 64), train=True, seed=0,
                             workers=args.workers, device=args.device)
        loader.set_epoch(0)
        it, n = iter(loader), 0
        next(it)  # workers started, first batch out
        t0 = time.perf_counter()
        for _, y in it:
            n += len(y)
        dt = time.perf_counter() - t0
    return {"workers": args.workers, "images": n, "img_per_s": n / dt, "image_px": args.px}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--px", type=int, default=224)
    p.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="first steps not timed")
    p.add_argument("--workers", type=int, default=8, help="loader worker processes")
    p.add_argument("--loader-images", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="toy sizes (CPU smoke test)")
    p.add_argument("--out", default=str(RESULTS_DIR))
    args = p.parse_args()
    if args.quick:
        args.batch, args.px, args.steps, args.warmup = 8, 64, 5, 1
        args.workers, args.loader_images = 2, 96
    rows = [step_throughput(step, amp, args) for step in STEPS
            for amp in ("off", "auto" if torch.device(args.device).type == "cuda" else "bf16")]
    for r in rows:
        print(f"{r['step']:8s} amp={r['amp']:5s} {r['img_per_s']:9.1f} img/s  "
              f"peak {r['peak_mem_mib']} MiB", flush=True)
    load = loader_throughput(args)
    print(f"loader: {load['img_per_s']:.1f} img/s with {load['workers']} workers")
    dev = torch.device(args.device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    table = markdown_table(["step", "amp", "img/s", "ms/step", "peak MiB"],
                           [[r["step"], r["amp"], r["img_per_s"], r["step_ms"],
                             r["peak_mem_mib"] if r["peak_mem_mib"] is not None else "-"]
                            for r in rows])
    table += "\n" + markdown_table(["loader workers", "img/s", "px"],
                                   [[load["workers"], load["img_per_s"], load["image_px"]]])
    name = "gpu_check" if not args.quick else "gpu_check_quick"
    write_results(name, {"device": device_name, "batch": args.batch, "steps": rows,
                         "loader": load, "quick": args.quick}, table, args.out,
                  title=f"GPU check on {device_name}",
                  notes="Real training loop (`weightshare.train.train`), channels_last, "
                  "synthetic 224 px data for the steps; loader on generated JPEGs.")
    print(table)


if __name__ == "__main__":
    main()
