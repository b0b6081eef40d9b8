"""SuperServe on this CPU: SubNetAct memory and switch cost, then SlackFit vs the baselines.

Steps, all on one checkpoint (default: the trained DepS run of `train_cost.py`):

1. Deployment: `--num-subnets` SubNets spread evenly in MACs (from the
   checkpoint's calibrated ones), test accuracy on `--test-subset` images.
2. Runtime: bytes of the one SuperNet (+ per-SubNet BN statistics) vs the same
   SubNets as separate extracted models; resident memory (RSS) growth of a fresh
   process that loads the SuperNet vs one that loads all the extracted models;
   the SubNetAct switch cost (run(B) after run(A) minus run(B) after run(B))
   vs loading an extracted model from disk.
3. Profile: latency of every SubNet at batch 1..`--max-batch`.
4. Simulation (virtual clock, the same policy objects): SLO attainment and mean
   served accuracy of slackfit, maxacc, infaas and fixed:<each SubNet> on
   gamma traces (CV^2 1, 4, 8) and the Azure-layout sample trace, at
   `--load` times the rate the largest SubNet sustains within the SLO.
5. Live: the real server on 127.0.0.1 and the open-loop load generator, a few
   seconds per policy (bounded), to check the simulator against reality.
6. Validation: the same bursty trace and policies on the real server (load generator in
   its own process) and in the simulator with the same profile, SLO and queue bound;
   both SLO attainments and their difference (goal: within 5 points). Overhead: the
   server's throughput at saturation (closed loop, single-image requests, most accurate
   SubNet) vs that SubNet's raw batched throughput (goal: >= 0.7x).

    python benchmarks/serving.py                       # ~6 minutes on 2 cores
    python benchmarks/serving.py --quick               # smoke test

Writes serving.{json,md,png} to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.serve.loadgen import LoadConfig, run_load_sync
from weightshare.serve.metrics import ServeMetrics
from weightshare.serve.policies import make_policy
from weightshare.serve.runtime import ExtractedModelStore
from weightshare.serve.server import ServerConfig, ServerThread, create_app
from weightshare.serve.simulate import SimConfig, simulate
from weightshare.serve.stack import StackConfig, build_stack
from weightshare.serve.traces import make_trace
from weightshare.serve.worker import InferenceWorker

DEFAULT_CKPT = REPO_ROOT / "runs" / "train_cost" / "deps" / "checkpoint.pt"

_RSS_SNIPPET = r"""
import sys, json, torch
torch.set_num_threads(1)
from weightshare.serve.runtime import rss_bytes, ExtractedModelStore
base = rss_bytes()
kind, ckpt, store_dir, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
held = []
if kind == "subnetact":
    from weightshare.checkpoint import load_checkpoint
    held.append(load_checkpoint(ckpt).supernet.eval())
else:
    import pickle
    skeletons = pickle.load(open(store_dir + "/skeletons.pkl", "rb"))
    store = ExtractedModelStore(store_dir, skeletons)
    held += [store.load(n) for n in names]
# Give back what loading freed (the checkpoint also holds optimizer state) before measuring.
import ctypes, gc
gc.collect()
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except OSError:
    pass
print(json.dumps({"base": base, "after": rss_bytes()}))
"""


def rss_growth(kind: str, ckpt: str, store: ExtractedModelStore, names: list[str]) -> int:
    """RSS growth of a fresh Python process loading the SuperNet or the separate models."""
    import pickle

    with open(store.dir / "skeletons.pkl", "wb") as f:
        pickle.dump(store.skeletons, f)
    out = subprocess.run([sys.executable, "-c", _RSS_SNIPPET, kind, ckpt, str(store.dir),
                          ",".join(names)], capture_output=True, text=True, check=True,
                         timeout=120)
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return d["after"] - d["base"]


def live(stack, policy: str, trace_spec: str, slo_ms: float, seconds: float) -> dict:
    worker = InferenceWorker(stack.runtime, make_policy(policy), stack.profile,
                             metrics=ServeMetrics())
    app = create_app(worker, stack.runtime.input_shape(), stack.runtime.num_classes,
                     ServerConfig(slo_ms=slo_ms, max_request_batch=stack.profile.max_batch))
    with ServerThread(app) as server:
        res = run_load_sync(make_trace(trace_spec),
                            LoadConfig(url=server.url, slo_ms=slo_ms,
                                       input_shape=stack.runtime.input_shape(),
                                       max_seconds=seconds, max_requests=5000))
    return res.summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--num-subnets", type=int, default=6)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--load", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                    help="Trace rates as multiples of the rate the largest SubNet sustains "
                    "within the SLO (batches taking at most half of it).")
    ap.add_argument("--slo-factor", type=float, default=3.0,
                    help="SLO = this times the largest SubNet's batch-1 median latency.")
    ap.add_argument("--duration", type=float, default=60.0, help="Simulated seconds per trace.")
    ap.add_argument("--live-seconds", type=float, default=8.0)
    ap.add_argument("--live-rate", type=float, default=30.0,
                    help="Requests/s of the live test (client and server share this CPU).")
    ap.add_argument("--live-slo-ms", type=float, default=100.0,
                    help="SLO of the live test (HTTP and JSON add milliseconds per request).")
    ap.add_argument("--validate-seconds", type=float, default=8.0,
                    help="Length of the trace replayed on the server and in the simulator.")
    ap.add_argument("--validate-rate", type=float, default=40.0,
                    help="Mean req/s of the validation trace (gamma, CV^2 4).")
    ap.add_argument("--overhead-seconds", type=float, default=4.0,
                    help="Seconds of closed-loop saturation for the overhead measurement.")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.live_seconds, args.load = 5, 10.0, 3.0, [0.8]
        args.validate_seconds, args.overhead_seconds = 2.0, 1.0
        args.max_batch = min(args.max_batch, 8)
    out = Path(args.out)
    t_start = time.perf_counter()

    # 1-3: deployment, runtime, profile
    stack = build_stack(StackConfig(
        checkpoint=args.checkpoint, dataset=args.dataset, test_subset=args.test_subset,
        num_subnets=args.num_subnets, max_batch=args.max_batch, profile_runs=args.runs,
        threads=args.threads, profile=str(out / "serving_profile.json")),
        log=lambda m: print(m, file=sys.stderr))
    rt, prof = stack.runtime, stack.profile
    mem = rt.memory()
    switch = rt.measure_switch_us(rounds=300 if not args.quick else 30)
    with tempfile.TemporaryDirectory() as tmp:
        store = ExtractedModelStore.from_runtime(rt, tmp)
        load_ms = {n: store.measure_load_ms(n, runs=10) for n in rt.names}
        rss = {k: rss_growth(k, args.checkpoint, store, rt.names)
               for k in ("subnetact", "separate")}
    print(f"memory {mem['subnetact_bytes']:,} vs {mem['separate_total_bytes']:,} bytes; "
          f"switch {switch['switch_us']:.1f} us; load {load_ms}", file=sys.stderr)

    # 4: simulation
    largest = prof.subnets[-1].name
    slo_ms = round(args.slo_factor * prof.latency_ms(largest, 1, "median"), 2)
    # The reference rate: what the largest SubNet sustains when a batch takes <= SLO / 2.
    peak = max([b * 1000.0 / prof.latency_ms(largest, b, "median") for b in prof.batch_sizes
                if prof.latency_ms(largest, b, "median") <= slo_ms / 2] or [1.0])
    policies = ["slackfit", "maxacc", "infaas", *(f"fixed:{n}" for n in prof.names)]
    traces = [f"gamma:rate={f * peak:.0f},cv2={cv2},duration={args.duration},seed=0"
              for f in args.load for cv2 in (1, 4, 8)]
    # The Azure-layout sample, scaled so its mean rate is the middle load level.
    from weightshare.serve.traces import read_azure_counts

    counts = read_azure_counts()[:int(args.duration)]
    mean_per_min = sum(counts) / len(counts)
    mid = args.load[len(args.load) // 2]
    traces.append(f"azure:minutes={len(counts)},seconds_per_minute=1,"
                  f"scale={mid * peak / mean_per_min:.4f}")
    cfg = SimConfig(slo_ms=slo_ms, queue_capacity=1024)
    sims = []
    for spec in traces:
        tr = make_trace(spec)
        for p in policies:
            r = simulate(make_policy(p), prof, tr, cfg)
            sims.append({"trace": spec, "policy": p, "loads": r.loads, **r.summary})
    print(f"simulated {len(sims)} runs", file=sys.stderr)

    # 5: live, bounded
    live_spec = f"gamma:rate={args.live_rate:g},cv2=4,duration={args.live_seconds},seed=1"
    lives = []
    # margin_ms: slack SlackFit holds back for what the profile does not see (HTTP, JSON).
    for p in ("slackfit", "slackfit:margin_ms=10", "fixed:" + prof.names[-1],
              "fixed:" + prof.names[0]):
        s = live(stack, p, live_spec, args.live_slo_ms, args.live_seconds)
        lives.append({"policy": p, "trace": live_spec, **s})
        print(f"live {p}: {s['slo_attainment']:.3f} SLO, {s['mean_acc']:.2f} %",
              file=sys.stderr)

    # 6: server vs simulator on the same trace, and the server's overhead at saturation
    from weightshare.serve.live import compare_with_simulator, measure_overhead

    val_spec = (f"gamma:rate={args.validate_rate:g},cv2=4,duration={args.validate_seconds:g},"
                "seed=3")
    validation = compare_with_simulator(
        stack, ["slackfit", "fixed:" + prof.names[-1], "fixed:" + prof.names[0]],
        make_trace(val_spec), slo_ms=args.live_slo_ms,
        log=lambda m: print(m, file=sys.stderr))
    overhead = [measure_overhead(stack, n, seconds=args.overhead_seconds, runs=args.runs)
                for n in dict.fromkeys([prof.most_accurate(), prof.names[0]])]
    for o in overhead:
        print(f"overhead {o['subnet']}: server {o['server_throughput']:.0f} req/s vs raw "
              f"{o['raw_model_throughput']:.0f} img/s ({o['ratio']:.2f}x)", file=sys.stderr)
    stack.close()

    payload = {
        "checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "slo_ms": slo_ms,
        "reference_rps": peak, "live_slo_ms": args.live_slo_ms,
        "deployed": [s.to_dict() for s in prof.subnets],
        "profile": prof.to_dict(), "memory": mem, "rss_growth_bytes": rss,
        "switch": switch, "load_ms": load_ms, "simulation": sims, "live": lives,
        "validation": {"trace": val_spec, "slo_ms": args.live_slo_ms,
                       "max_abs_diff_points": max(abs(r["diff_points"]) for r in validation),
                       "policies": [{"policy": r["policy"], "diff_points": r["diff_points"],
                                     "server": r["server"], "sim": r["sim"]}
                                    for r in validation]},
        # The headline field: the most accurate SubNet; "per_subnet" has the rest.
        "overhead": {"server_throughput": overhead[0]["server_throughput"],
                     "raw_model_throughput": overhead[0]["raw_model_throughput"],
                     "ratio": overhead[0]["ratio"], "per_subnet": overhead},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    rows = [[s.name, f"{s.macs / 1e6:.1f} M", s.acc, prof.latency_ms(s.name, 1, "median"),
             prof.latency_ms(s.name, prof.max_batch, "median"), load_ms[s.name]]
            for s in prof.subnets]
    table = markdown_table(["SubNet", "MACs", "acc %", "b1 ms", f"b{prof.max_batch} ms",
                            "load from disk ms"], rows)
    table += "\n" + markdown_table(
        ["", "SubNetAct (one SuperNet)", "separate models", "ratio"],
        [["parameter bytes", mem["subnetact_bytes"], mem["separate_total_bytes"],
          mem["ratio_separate_over_subnetact"]],
         ["RSS growth of a fresh process", rss["subnetact"], rss["separate"],
          rss["separate"] / max(1, rss["subnetact"])]])
    table += "\n" + markdown_table(
        ["switch cost", "µs"],
        [["run(B) after run(A) - run(B) after run(B)", switch["switch_us"]],
         ["per-call slicing overhead vs extracted", switch["slicing_overhead_us"]],
         ["mean load of an extracted model from disk",
          1000 * sum(load_ms.values()) / len(load_ms)]])
    table += "\n" + markdown_table(
        ["trace", "policy", "SLO attainment", "mean acc %", "p99 ms", "dropped", "loads"],
        [[r["trace"].split(",duration")[0].split(",seconds")[0], r["policy"],
          r["slo_attainment"], r["mean_acc"], r["p99_ms"], r["dropped"] + r["rejected"],
          r["loads"]] for r in sims])
    table += "\n" + markdown_table(
        ["live (127.0.0.1)", "requests", "SLO attainment", "mean acc %", "p50 ms", "p99 ms",
         "dropped/late"],
        [[r["policy"], r["requests"], r["slo_attainment"], r["mean_acc"], r["p50_ms"],
          r["p99_ms"], r["dropped"] + r["late"]] for r in lives])
    table += "\n" + markdown_table(
        ["server vs simulator", "server SLO attainment", "simulator SLO attainment",
         "difference (points)", "server mean acc %", "simulator mean acc %"],
        [[r["policy"], r["server"]["slo_attainment"], r["sim"]["slo_attainment"],
          r["diff_points"], r["server"]["mean_acc"], r["sim"]["mean_acc"]]
         for r in validation])
    table += "\n" + markdown_table(
        ["overhead (SubNet)", "server at saturation req/s", "raw batched img/s", "batch",
         "ratio", "server mean batch"],
        [[o["subnet"], o["server_throughput"], o["raw_model_throughput"], o["raw_batch"],
          o["ratio"], o["server_mean_batch"]] for o in overhead])
    notes = (f"Simulated SLO {slo_ms} ms ({args.slo_factor}x the largest SubNet's batch-1 "
             f"latency); trace rates are {args.load} x the rate the largest SubNet sustains "
             f"within it ({peak:.0f} req/s). Simulated batches take the profiled median; "
             "policies plan with the p99. Live: the real server and load generator in one "
             f"process on this CPU, {args.live_rate:g} req/s, SLO {args.live_slo_ms:g} ms. "
             "Load-from-disk times are with a warm page cache. "
             f"Validation: {val_spec} with SLO {args.live_slo_ms:g} ms on the server (load "
             "generator in its own process) and in the simulator (same profile, queue bound). "
             "Overhead: closed-loop single-image requests at concurrency 2 x max batch, "
             "fixed SubNet, vs the same SubNet called directly at the max batch; the "
             "client runs on the same cores.")
    write_results("serving", payload, table, out, title="SuperServe on CPU", notes=notes)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(traces), figsize=(3.2 * len(traces), 3.2),
                                 sharey=True)
        for ax, spec in zip(axes, traces, strict=True):
            for r in (r for r in sims if r["trace"] == spec):
                ax.scatter(r["mean_acc"], 100 * r["slo_attainment"],
                           marker="*" if r["policy"] == "slackfit" else "o",
                           s=120 if r["policy"] == "slackfit" else 30)
                ax.annotate(r["policy"].replace("fixed:", ""), (r["mean_acc"],
                            100 * r["slo_attainment"]), fontsize=6)
            ax.set_title(spec.split(",duration")[0].split(",seconds")[0], fontsize=7)
            ax.set_xlabel("mean served accuracy %")
        axes[0].set_ylabel("SLO attainment %")
        save_plot(fig, out / "serving.png")
    except ImportError:
        pass
    print(f"wrote {out / 'serving.md'} in {time.perf_counter() - t_start:.0f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
