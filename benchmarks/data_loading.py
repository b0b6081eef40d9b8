"""Streaming loader throughput: training images/s with 1 and 2 DataLoader workers.

Writes an ImageNet-layout JPEG tree (``train/<wnid>/*.JPEG``, ImageNet-like
sizes and file sizes) into a temporary folder, then times the streaming
image-folder loader (`weightshare.data.StreamingLoader`: Pillow decode,
RandomResizedCrop to 224 + flip in worker processes, normalisation in the
training process) over whole epochs. Worker counts are interleaved over several
rounds (1, 2, 2, 1, ...) so that load from other processes hits each alike; the
median round is reported. The first ``2 x workers`` batches of every epoch are
not timed (worker start-up and the first prefetch).

The training process can be pinned (``--main-cpu``) apart from the workers'
cores (``--worker-cpus``, default: every core this process may use), and the
busy fraction of every core during each measurement is recorded from
/proc/stat, so a result measured beside other work says how busy the machine
was. Goal (issue 17): 1 -> 2 workers scales by >= 1.6x.

    python benchmarks/data_loading.py                       # 3000 images, workers 1 2
    taskset -c 0,1 python benchmarks/data_loading.py --main-cpu 1 --beside "..."
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import PIL.features
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, markdown_table, save_plot, write_results  # noqa: E402

from weightshare.data import load_dataset  # noqa: E402
from weightshare.data.stream import StreamingLoader, load_image  # noqa: E402

NAME = "data_loading"
GOAL = 1.6


def make_tree(root: Path, images: int, classes: int, seed: int = 0) -> dict[str, float]:
    """An ImageNet-layout tree of `images` JPEGs; returns what was written (count, sizes).

    Content is a smooth random colour field plus grain, so files compress like
    photographs (tens of kB at quality 90), not like noise (which would make
    decoding unrealistically slow) or flat colour (unrealistically fast).
    Sizes follow ImageNet's typical 500 x 375-ish shapes.
    """
    rng = np.random.default_rng(seed)
    total_bytes, pixels = 0, 0
    stamp = root / f".complete-{images}-{classes}-{seed}"
    if stamp.exists():  # same arguments, same content: generation is deterministic
        sizes = [p.stat().st_size for p in root.glob("train/*/*.JPEG")]
        return {"images": images, "classes": classes, "mean_kb": sum(sizes) / len(sizes) / 1024,
                "mean_megapixels": float(stamp.read_text()), "reused": True}
    for i in range(images):
        cls = root / "train" / f"n{i % classes:08d}"
        cls.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(350, 501)), int(rng.integers(280, 501))
        grid = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC),
                           dtype=np.int16)
        grain = rng.normal(0.0, 10.0, (h, w, 1))
        pix = np.clip(field + grain, 0, 255).astype(np.uint8)
        path = cls / f"n{i % classes:08d}_{i}.JPEG"
        Image.fromarray(pix).save(path, quality=90)
        total_bytes += path.stat().st_size
        pixels += w * h
    stamp.write_text(f"{pixels / images / 1e6}")
    return {"images": images, "classes": classes, "mean_kb": total_bytes / images / 1024,
            "mean_megapixels": pixels / images / 1e6}


def _core_times() -> dict[int, tuple[int, int]]:
    """Per core (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat", encoding="utf-8") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                idle = v[3] + v[4]  # idle + iowait
                out[int(name[3:])] = (sum(v) - idle, sum(v))
    return out


def _busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[str, float]:
    return {str(c): round((after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]), 3)
            for c in sorted(after)}


def _others() -> list[tuple[float, str]]:
    """Processes other than this one and its workers using >= 5% CPU (ps's average over each
    process's life): what ran beside the measurement."""
    me = os.getpid()
    try:
        ps = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,psr,args", "--sort=-pcpu"],
                            capture_output=True, text=True, timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in ps:
        pid, ppid, pcpu, psr, *args = line.split(None, 4)
        if int(pid) in (me,) or int(ppid) == me or float(pcpu) < 5.0 or not args:
            continue
        # The program and its first few arguments: enough to say what it was.
        cmd = " ".join((Path(a).name if a.startswith("/") else a)[:48]
                       for a in args[0].split()[:6])
        rows.append((float(pcpu), f"{cmd} (core {psr})"))
    return rows[:8]


def _autogroup() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def time_epoch(ds: Any, workers: int, batch_size: int, epoch: int,
               worker_cpus: set[int] | None) -> dict[str, Any]:
    loader = StreamingLoader(ds.train, ds, batch_size, train=True, seed=0, workers=workers,
                             worker_cpus=worker_cpus)
    loader.set_epoch(epoch)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu0 = child.ru_utime + child.ru_stime
    main_cpu0 = time.process_time()
    warm = 2 * max(1, workers)
    if len(loader) < warm + 4:
        raise SystemExit(f"{len(loader)} batches leave too few to time after {warm} warm-up "
                         "batches: raise --images or lower --batch-size")
    it = iter(loader)
    for _ in range(warm):
        next(it)
    beside = _others()  # before the clock starts: ps itself costs a few ms
    before, t0, n = _core_times(), time.perf_counter(), 0
    for _, y in it:
        n += len(y)
    dt = time.perf_counter() - t0
    # The exhausted iterator has joined its workers, so their CPU time is in RUSAGE_CHILDREN:
    # CPU seconds per image say whether the loader scales, whatever the machine let it have.
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu_s = child.ru_utime + child.ru_stime - children_cpu0
    total = len(ds.train) // batch_size * batch_size
    main_cpu_s = time.process_time() - main_cpu0
    return {"img_per_s": n / dt, "images": n, "seconds": dt,
            "main_cpu_ms_per_img": 1e3 * main_cpu_s / total,
            "worker_cpu_ms_per_img": 1e3 * worker_cpu_s / total,
            "cores_obtained": (n / dt) * worker_cpu_s / total,
            "core_busy": _busy(before, _core_times()), "beside": beside}


def in_process_rate(ds: Any, n: int) -> float:
    """Decode + RandomResizedCrop + flip in this process, no DataLoader: the per-core cost."""
    import torch

    settings = ds.train.settings
    t0 = time.perf_counter()
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        load_image(ds.train.paths[i], ds.image_size, 3, settings, train=True, flip=True,
                   generator=g)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-px", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--main-cpu", type=int, default=None,
                   help="pin the training (consuming) process to this core")
    p.add_argument("--worker-cpus", type=int, nargs="+", default=None,
                   help="cores the workers may use (default: every core usable at start)")
    p.add_argument("--beside", default="", help="what else ran on the machine, for the report")
    p.add_argument("--tree", type=Path, default=None,
                   help="write the JPEG tree here and keep it (default: a temporary folder); "
                   "an existing complete tree from the same arguments is reused")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args()

    usable = sorted(os.sched_getaffinity(0))
    worker_cpus = set(args.worker_cpus or usable)
    if args.main_cpu is not None:
        os.sched_setaffinity(0, {args.main_cpu})
    # torch warns when workers outnumber the consuming process's cores; here that is the setup.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    import torch

    torch.set_num_threads(1)  # the training process only normalises here

    with tempfile.TemporaryDirectory(prefix="ws-data-loading-") as tmp:
        root = args.tree or Path(tmp) / "imagenet"
        t0 = time.perf_counter()
        tree = make_tree(root, args.images, args.classes)
        print(f"{'reused' if tree.get('reused') else 'wrote'} {tree['images']} JPEGs "
              f"({tree['mean_kb']:.0f} kB, {tree['mean_megapixels']:.2f} MP each) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        # ImageNet's statistics: the benchmark times the loader, not the estimate.
        ds = load_dataset("imagefolder", root, image_size=args.image_px, stream=True,
                          calib_size=0, holdout=0.02, mean=[0.485, 0.456, 0.406],
                          std=[0.229, 0.224, 0.225])
        single = in_process_rate(ds, min(300, len(ds.train)))
        print(f"in-process decode + crop: {single:.1f} img/s", flush=True)
        rounds: dict[int, list[dict[str, Any]]] = {w: [] for w in args.workers}
        for r in range(args.rounds):
            order = args.workers if r % 2 == 0 else args.workers[::-1]
            for w in order:
                res = time_epoch(ds, w, args.batch_size, r, worker_cpus)
                rounds[w].append(res)
                print(f"round {r} workers {w}: {res['img_per_s']:.1f} img/s, core busy "
                      f"{res['core_busy']}", flush=True)

    os.sched_setaffinity(0, usable)  # the machine record lists what the run could use
    loader = []
    for w in args.workers:
        rates = [x["img_per_s"] for x in rounds[w]]
        loader.append({"workers": w, "img_per_s": round(statistics.median(rates), 2),
                       "rounds_img_per_s": [round(x, 2) for x in rates],
                       "worker_cpu_ms_per_img": round(statistics.median(
                           x["worker_cpu_ms_per_img"] for x in rounds[w]), 3),
                       "main_cpu_ms_per_img": round(statistics.median(
                           x["main_cpu_ms_per_img"] for x in rounds[w]), 3),
                       "cores_obtained": round(statistics.median(
                           x["cores_obtained"] for x in rounds[w]), 3),
                       "core_busy": [x["core_busy"] for x in rounds[w]]})
    by = {e["workers"]: e["img_per_s"] for e in loader}
    by_cpu = {e["workers"]: e["worker_cpu_ms_per_img"] for e in loader}
    by_cores = {e["workers"]: e["cores_obtained"] for e in loader}
    scaling = by[2] / by[1] if 1 in by and 2 in by else None
    seen: dict[str, float] = {}  # command -> highest CPU share seen
    for w in rounds:
        for x in rounds[w]:
            for pct, cmd in x["beside"]:
                seen[cmd] = max(pct, seen.get(cmd, 0.0))
    beside = [f"{pct:.0f}% cpu: {cmd}" for cmd, pct in sorted(seen.items(), key=lambda kv: -kv[1])]
    from weightshare.data.stream import JPEG_DECODER

    decoder = (f"{JPEG_DECODER} (libjpeg-turbo {PIL.features.version('libjpeg_turbo') or 'n/a'} in "
               f"Pillow {PIL.__version__} for everything else; DCT-scaled decode when the crop "
               f"is >= 2x the output), crop + resize in torch "
               f"{torch.__version__} (uint8 antialiased bilinear)")
    payload = {
        "loader": loader,
        "decoder": decoder,
        "image_px": args.image_px,
        "batch_size": args.batch_size,
        "tree": tree,
        "in_process_img_per_s": round(single, 2),
        "scaling_1_to_2": round(scaling, 3) if scaling else None,
        "goal": f">= {GOAL}x from 1 to 2 workers",
        "goal_met": bool(scaling and scaling >= GOAL),
        "main_cpu": args.main_cpu,
        "worker_cpus": sorted(worker_cpus),
        "beside": args.beside,
        "observed_beside": beside,
        "sched_autogroup": _autogroup(),
    }
    rows = [[e["workers"], e["img_per_s"], ", ".join(f"{v:.1f}" for v in e["rounds_img_per_s"]),
             f"{by[e['workers']] / by[args.workers[0]]:.2f}x", e["worker_cpu_ms_per_img"],
             e["main_cpu_ms_per_img"],
             e["cores_obtained"],
             "; ".join(" ".join(f"c{c} {v:.0%}" for c, v in cb.items()) for cb in e["core_busy"])]
            for e in loader]
    table = markdown_table(["workers", "img/s (median)", "rounds", f"vs {args.workers[0]}",
                            "worker CPU ms/img", "main CPU ms/img", "cores obtained", "core busy per round"], rows)
    notes = [
        f"Tree: {tree['images']} ImageNet-layout JPEGs written by the benchmark "
        f"({tree['mean_kb']:.0f} kB, {tree['mean_megapixels']:.2f} MP on average), "
        f"RandomResizedCrop to {args.image_px} px + flip, batch {args.batch_size}. "
        f"Decoder: {decoder}. One process decoding in-line: {single:.1f} img/s.",
        "",
        f"**1 -> 2 workers: {scaling:.2f}x** (goal >= {GOAL}x: "
        f"{'met' if payload['goal_met'] else 'not met'})." if scaling else "",
        "",
        _cpu_note(by_cpu, by_cores) if 1 in by_cpu and 2 in by_cpu else "",
        "",
        f"Training process pinned to core {args.main_cpu}; workers allowed on cores "
        f"{sorted(worker_cpus)}." if args.main_cpu is not None else
        f"Workers allowed on cores {sorted(worker_cpus)}.",
    ]
    notes += ["", "*worker CPU ms/img*: the workers' CPU time (user + system, from "
              "RUSAGE_CHILDREN) per image; if it stays flat as workers are added, the loader "
              "itself scales and throughput is bounded by the CPU the machine gives it. *main CPU "
              "ms/img*: the training process's own cost per image (receiving, normalising). "
              "*cores obtained* = img/s x CPU s/img: how many cores' worth of CPU the workers "
              "actually got. *core busy*: each core's busy fraction during the timed part "
              "(/proc/stat), including every other process."]
    autogroup = _autogroup()
    if autogroup:
        notes += ["", "Linux autogroup scheduling is on: CPU is shared between sessions first, "
                  "then between the processes of a session, so workers added to a busy session "
                  "gain only that session's share."]
    if args.beside:
        notes += ["", f"Ran beside: {args.beside}"]
    if beside:
        notes += ["", "Other processes seen during the measurements (ps, >= 5% CPU averaged "
                  "over each process's life):", ""]
        notes += [f"- `{b}`" for b in beside]
    write_results(NAME, payload, table, args.out, title="Streaming image-folder loader",
                  notes="\n".join(notes))
    plot(loader, args.out / f"{NAME}.png", args.image_px)
    print(table)
    if scaling:
        print(f"1 -> 2 workers: {scaling:.2f}x (goal {GOAL}x)")


def _cpu_note(cpu: dict[int, float], cores: dict[int, float]) -> str:
    """What the CPU accounting says about 1 -> 2 workers, in words that follow the numbers."""
    extra = cpu[2] / cpu[1] - 1.0
    cost = ("the second worker adds no cost per image" if extra <= 0.1 else
            f"each image costs {extra:.0%} more CPU with two workers")
    return (f"Worker CPU time per image: {cpu[1]:.2f} ms with 1 worker, {cpu[2]:.2f} ms with 2; "
            f"{cost}. The workers obtained {cores[1]:.2f} and {cores[2]:.2f} cores' worth of "
            "CPU: the throughput follows the CPU they could get.")


def plot(loader: list[dict[str, Any]], path: Path, px: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ws = [e["workers"] for e in loader]
    ax.bar([str(w) for w in ws], [e["img_per_s"] for e in loader], color="#4c72b0",
           label="median of rounds")
    for i, e in enumerate(loader):
        ax.scatter([i] * len(e["rounds_img_per_s"]), e["rounds_img_per_s"], color="black", s=12,
                   zorder=3, label="rounds" if i == 0 else None)
    base = loader[0]["img_per_s"] / loader[0]["workers"]
    ax.plot(range(len(ws)), [base * w for w in ws], "--", color="gray", label="linear scaling")
    if 1 in ws and 2 in ws:
        i2 = ws.index(2)
        goal = GOAL * loader[ws.index(1)]["img_per_s"]
        ax.hlines(goal, i2 - 0.4, i2 + 0.4, colors="red", linestyles=":", label=f"goal ({GOAL}x)")
    ax.set_xlabel("DataLoader workers")
    ax.set_ylabel(f"training images/s ({px} px)")
    ax.set_title("Streaming image-folder loader")
    ax.legend(fontsize=8)
    save_plot(fig, path)


if __name__ == "__main__":
    main()
