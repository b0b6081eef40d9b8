"""Training throughput of a DepS step on this CPU: before vs after the speed work vs static modules.

Rows, each in images per second of one optimizer step at the preset's batch:

* step `largest`: the largest SubNet alone (DepS's first phase, `method=full`);
* step `sandwich`: largest + smallest + 2 random SubNets with in-place KD (DepS's
  shrinking phase, `method=deps` with `shrink_at=0`).

Implementations:

* `before`: the training code as of `--baseline` (a git revision; default the last
  commit before the speed work), exported with `git archive` into a temporary
  folder and run in a subprocess with that folder first on `PYTHONPATH`;
* `after`: the current code, its default precision (channels_last, fp32 on CPU);
* `after-bf16`: the current code with `amp=bf16` (why `amp=auto` stays fp32 on CPU);
* `static`: the same SubNets extracted as ordinary torch modules (no slicing, no
  kernel transforms) trained with the same losses, optimizer and memory format:
  the limit of what elasticity can reach.

`before`, `after` and `after-bf16` time the real training loop
(`weightshare.train.train` with `max_steps`, data loading and augmentation
included) and read each step's wall time from its `log.jsonl`; the first
`--warmup` steps are dropped. Each variant runs in its own subprocess, pinned to
the same core, in `--rounds` alternating rounds; the median over rounds is kept.

    python benchmarks/train_throughput.py                    # ~10 min on one core
    python benchmarks/train_throughput.py --quick            # smoke test

Writes `train_throughput.{json,md,png}` (and the op profile of the `after`
sandwich step) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

BASELINE = "0776522"  # last commit before channels_last / the training speed work
STEPS = {"largest": ("full", 1.0), "sandwich": ("deps", 0.0)}  # method, shrink_at
GOAL_SPEEDUP, GOAL_STATIC = 2.0, 1.5


# -------------------------------------------------------------- worker side
def _config(step: str, batch: int, steps: int, out: str, extra: list[str]):
    from weightshare.train import TrainConfig

    method, shrink_at = STEPS[step]
    overrides = [f"method={method}", f"shrink_at={shrink_at}", f"max_steps={steps}",
                 f"batch_size={batch}", "train_subset=8192", "test_subset=500",
                 "calib_size=500", "eval_spread=0", "tensorboard=false", "progress=false",
                 "epochs=20", f"out={out}", *extra]
    # A YAML path, not the preset name: the baseline code has no `reference` preset.
    return TrainConfig.load(str(REPO_ROOT / "weightshare/configs/train/reference.yaml"), overrides)


def worker_loop(step: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    """Time the real training loop of whichever weightshare is first on sys.path."""
    import torch

    import weightshare
    from weightshare.train import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(step, batch, steps, str(Path(tmp) / "run"), extra)
        train(cfg)
        walls = [json.loads(line)["wall_s"]
                 for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()
                 if json.loads(line).get("kind") == "train"]
    per_step = [b - a for a, b in zip(walls[warmup:], walls[warmup + 1:], strict=False)]
    sec = statistics.median(per_step)
    return {"img_per_s": batch / sec, "step_ms": 1000 * sec, "steps_timed": len(per_step),
            "code": str(Path(weightshare.__file__).parent)}


def worker_static(step: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    """The same plans, executed on extracted static modules with the loop's losses."""
    import random

    import torch
    import torch.nn.functional as F

    from weightshare.data import Loader, load_dataset
    from weightshare.train.loop import _settings, build_supernet, step_seed
    from weightshare.train.methods import make_method
    from weightshare.train.precision import resolve_precision

    torch.set_num_threads(1)
    cfg = _config(step, batch, steps, "unused", extra)
    data = load_dataset(cfg.dataset, cfg.data_dir, calib_size=cfg.calib_size, seed=cfg.seed,
                        train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    torch.manual_seed(cfg.seed)
    net = build_supernet(cfg, data)
    prec = resolve_precision(torch.device("cpu"), cfg.amp, cfg.channels_last)
    loader = Loader(data.train, data, cfg.batch_size, train=True, seed=cfg.seed)
    plan_step = make_method(cfg.method, _settings(cfg, len(loader)))
    total = cfg.epochs * len(loader)
    plans = [plan_step(s, total, net.space, random.Random(step_seed(cfg.seed, s)))
             for s in range(steps)]
    # Extraction is outside the timed loop: a static network is built once.
    modules = {t.subnet: net.extract(t.subnet).train() for p in plans for t in p.tasks}
    for m in modules.values():
        if prec.channels_last:
            m.to(memory_format=torch.channels_last)
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.SGD([{"params": params}], lr=0.01, momentum=0.9, nesterov=True)
    times = []
    it = iter(loader)
    for plan in plans:
        x, y = next(it)
        t0 = time.perf_counter()
        x = prec.input(x)
        soft = None
        for i, task in enumerate(plan.tasks):
            logits = modules[task.subnet](x).float()
            if i == 0:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                soft = F.softmax(logits.detach(), dim=1)
            else:
                loss = torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1).mean()
            if task.weight > 0:
                (task.weight * loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times[warmup:])
    return {"img_per_s": batch / sec, "step_ms": 1000 * sec, "steps_timed": len(times) - warmup}


def worker_profile(batch: int, steps: int) -> list[dict]:
    """Top operators (self CPU time) of the current code's sandwich step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, profile(activities=[ProfilerActivity.CPU]) as prof:
        from weightshare.train import train

        train(_config("sandwich", batch, steps, str(Path(tmp) / "run"), []))
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [{"op": e.key, "self_pct": 100 * e.self_cpu_time_total / total, "calls": e.count}
            for e in rows[:12]]


# -------------------------------------------------------------- driver side
def _export_baseline(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev, "weightshare"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _run_worker(args: argparse.Namespace, worker: list[str],
                pythonpath: str | None = None) -> Any:
    """Run this script as a worker (pinned to `--core`, 1 thread); its JSON answer."""
    # Here, not at the top: a "before" worker imports the baseline's weightshare, which
    # has no weightshare.procs.
    from weightshare.procs import run_json

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return run_json([sys.executable, __file__, *worker, "--batch", str(args.batch)],
                    timeout_s=None, what=f"worker {' '.join(worker)}", env=env,
                    cpus=args.core, cwd=REPO_ROOT)


def _spawn(args: argparse.Namespace, kind: str, step: str, pythonpath: str | None,
           extra: list[str]) -> dict:
    return _run_worker(args, ["--worker", kind, "--step", step, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--extra", json.dumps(extra)],
                       pythonpath)


def run(args: argparse.Namespace) -> None:
    variants = {  # name: (worker kind, PYTHONPATH, extra overrides)
        "before": ("loop", "baseline", []),
        "after": ("loop", None, []),
        "after-bf16": ("loop", None, ["amp=bf16"]),
        "static": ("static", None, []),
    }
    per: dict[tuple[str, str], list[dict]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        base = str(_export_baseline(args.baseline, Path(tmp)))
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for step in STEPS:
                for name in order:
                    kind, pp, extra = variants[name]
                    out = _spawn(args, kind, step, base if pp == "baseline" else None, extra)
                    per.setdefault((step, name), []).append(out)
                    print(f"round {r} {step:8s} {name:10s} {out['img_per_s']:7.1f} img/s",
                          flush=True)
    rows = []
    for (step, name), outs in per.items():
        rows.append({"step": step, "impl": name,
                     "img_per_s": statistics.median(o["img_per_s"] for o in outs),
                     "step_ms": statistics.median(o["step_ms"] for o in outs),
                     "rounds_img_per_s": [o["img_per_s"] for o in outs]})
    prof = _run_worker(args, ["--worker", "profile", "--steps", str(min(args.steps, 8))])
    by = {(r["step"], r["impl"]): r["img_per_s"] for r in rows}
    ratios = {s: {"after_vs_before": by[(s, "after")] / by[(s, "before")],
                  "static_vs_after": by[(s, "static")] / by[(s, "after")]} for s in STEPS}
    payload = {"rows": rows, "ratios": ratios, "profile_after_sandwich": prof,
               "baseline": args.baseline, "batch": args.batch, "steps": args.steps,
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "beside": args.beside,
               "goals": {"sandwich_speedup_2x": ratios["sandwich"]["after_vs_before"] >= GOAL_SPEEDUP,
                         "sandwich_within_1.5x_static":
                             ratios["sandwich"]["static_vs_after"] <= GOAL_STATIC}}
    table = markdown_table(["step", "impl", "img/s", "ms/step"],
                           [[r["step"], r["impl"], r["img_per_s"], r["step_ms"]] for r in rows])
    table += "\n" + markdown_table(
        ["step", "after / before", "static / after"],
        [[s, v["after_vs_before"], v["static_vs_after"]] for s, v in ratios.items()])
    table += "\n" + markdown_table(["op (after, sandwich)", "self CPU %", "calls"],
                                   [[p["op"], p["self_pct"], p["calls"]] for p in prof])
    notes = (f"Batch {args.batch}, 1 torch thread, each variant in its own process on core "
             f"{args.core}, {args.rounds} alternating rounds (median), {args.steps} steps of which "
             f"the first {args.warmup} are dropped. Ran beside: {args.beside}. Goals: sandwich "
             f">= {GOAL_SPEEDUP}x faster than before and within {GOAL_STATIC}x of static.")
    out = Path(args.out)
    write_results("train_throughput", payload, table, out, title="DepS training throughput",
                  notes=notes)
    _plot(rows, out / "train_throughput.png")
    print(table)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = ["before", "after", "after-bf16", "static"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.2
    for i, impl in enumerate(impls):
        vals = [next(r["img_per_s"] for r in rows if r["step"] == s and r["impl"] == impl)
                for s in STEPS]
        ax.bar([j + (i - 1.5) * width for j in range(len(STEPS))], vals, width, label=impl)
    ax.set_xticks(range(len(STEPS)), list(STEPS))
    ax.set_ylabel("images / s (1 thread)")
    ax.set_title("DepS training step throughput")
    ax.legend()
    save_plot(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=14, help="steps per measurement")
    p.add_argument("--warmup", type=int, default=4, help="first steps not timed")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--core", type=int, default=1, help="CPU core to pin workers to (-1: none)")
    p.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' code")
    p.add_argument("--beside", default="nothing", help="what else ran on the machine (for the notes)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 6 steps")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--extra", default="[]", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.core is not None and args.core < 0:
        args.core = None
    if args.worker:
        extra = json.loads(args.extra)
        if args.worker == "profile":
            print(json.dumps(worker_profile(args.batch, args.steps)))
            return
        fn = worker_loop if args.worker == "loop" else worker_static
        print(json.dumps(fn(args.step, args.batch, args.steps, args.warmup, extra)))
        return
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 6, 2
    run(args)


if __name__ == "__main__":
    main()
