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
6. Overhead: the server's throughput at saturation (closed loop, single-image requests,
   most accurate SubNet) vs that SubNet's raw batched throughput (goal: >= 0.7x).
7. Executors: every deployed SubNet through the torch executor, the onnxruntime
   executor and a standalone onnxruntime session at batch 1 and 16, and the bytes each
   setting holds. Request path: decode cost (json / orjson / binary) and the overhead
   model the server measures at startup (`weightshare.serve.overhead`).
8. The peer (`kserve_peer.py`): the most accurate deployed SubNet exported to ONNX
   behind KServe's ModelServer with onnxruntime, one worker, on the server's CPU; the
   load generator on another CPU, with its own ceiling measured against an instant
   responder. SlackFit (executor auto, planning with the overhead model) and the peer
   replay the same gamma traces (CV^2 1 and 8) at `--peer-load` x the peer's capacity;
   the simulator with the overhead model is checked against every SlackFit run.
9. Startup: `weightshare serve` on the checkpoint with its saved profile, until ready.

The checkpoint (default: the best one here, see `best_checkpoint`) is copied into
`--workdir` first, so the side files a start writes (statistics, profile, onnxruntime
sessions) never land beside the original.

    python benchmarks/serving.py                       # ~15 minutes on 2 cores
    python benchmarks/serving.py --quick               # smoke test

Writes serving.{json,md,png} to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.procs import run_json
from weightshare.serve.loadgen import LoadConfig, run_load_sync
from weightshare.serve.metrics import ServeMetrics
from weightshare.serve.policies import make_policy
from weightshare.serve.runtime import ExtractedModelStore
from weightshare.serve.server import ServerConfig, ServerThread, create_app
from weightshare.serve.simulate import SimConfig, simulate
from weightshare.serve.stack import StackConfig, build_stack
from weightshare.serve.traces import make_trace
from weightshare.serve.worker import InferenceWorker

# Best first: the reference SuperNet (all of Fashion-MNIST), the 4-epoch DepS run of
# train_cost.py.
CANDIDATE_CKPTS = (REPO_ROOT / "checkpoints" / "reference" / "checkpoint.pt",
                   REPO_ROOT / "runs" / "train_cost" / "deps" / "checkpoint.pt")


def best_checkpoint() -> Path:
    for p in CANDIDATE_CKPTS:
        if p.is_file():
            return p
    raise SystemExit("no checkpoint found; pass --checkpoint")


def work_copy(src: Path, workdir: Path) -> Path:
    """`src` copied into `workdir` (again only when it changed), so the side files serving
    writes beside a checkpoint stay out of the original's directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    dst = workdir / "checkpoint.pt"
    if not dst.is_file() or dst.stat().st_size != src.stat().st_size \
            or dst.stat().st_mtime < src.stat().st_mtime:
        shutil.copy2(src, dst)
    return dst

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


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def rss_growth(kind: str, ckpt: str, store: ExtractedModelStore, names: list[str]) -> int:
    """RSS growth of a fresh Python process loading the SuperNet or the separate models."""
    import pickle

    with open(store.dir / "skeletons.pkl", "wb") as f:
        pickle.dump(store.skeletons, f)
    d = run_json([sys.executable, "-c", _RSS_SNIPPET, kind, ckpt, str(store.dir),
                  ",".join(names)], timeout_s=120, what=f"the {kind} RSS probe")
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
    ap.add_argument("--checkpoint", default=None, help="Default: the best one here.")
    ap.add_argument("--workdir", default=str(REPO_ROOT / "runs" / "serving_bench"))
    ap.add_argument("--server-cpu", type=int, default=1,
                    help="The CPU every server (this process, the peer) runs on.")
    ap.add_argument("--client-cpu", type=int, default=0,
                    help="The CPU the load generator runs on (never the server's).")
    ap.add_argument("--peer-load", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0],
                    help="live_vs_peer rates as multiples of the peer's measured capacity.")
    ap.add_argument("--peer-seconds", type=float, default=10.0,
                    help="Seconds of each live_vs_peer trace.")
    ap.add_argument("--peer-slo-ms", type=float, default=None,
                    help="SLO of live_vs_peer (default: 10x the peer's unloaded latency, "
                    ">= 20 ms).")
    ap.add_argument("--startups", type=int, default=2)
    ap.add_argument("--nice", type=int, default=0,
                    help="Added to this process's niceness (inherited by the servers and the "
                    "load generator it starts); negative needs privileges. On a CPU shared "
                    "with other jobs, a negative value keeps their bursts out of the timings.")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--deploy", default=None,
                    help="frontier JSON to deploy (default: frontier.json beside the checkpoint, "
                    "else --num-subnets spread in MACs)")
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
    ap.add_argument("--overhead-seconds", type=float, default=4.0,
                    help="Seconds of closed-loop saturation for the overhead measurement.")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument("--name", default="serving", help="Results are NAME.{json,md,png}.")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration, args.live_seconds, args.load = 5, 10.0, 3.0, [0.8]
        args.overhead_seconds, args.peer_seconds, args.peer_load = 1.0, 3.0, [0.5, 2.0]
        args.startups = 1
        args.max_batch = min(args.max_batch, 8)
    out = Path(args.out)
    t_start = time.perf_counter()
    if args.server_cpu == args.client_cpu:
        raise SystemExit("--server-cpu and --client-cpu must differ")
    # Servers (this process, the peer it starts) on one CPU, the load generator on another.
    os.sched_setaffinity(0, {args.server_cpu})
    if args.nice:
        os.nice(args.nice)
    server_cpus, client_cpus = (args.server_cpu,), (args.client_cpu,)
    source = Path(args.checkpoint) if args.checkpoint else best_checkpoint()
    workdir = Path(args.workdir)
    ckpt = work_copy(source, workdir)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    log(f"checkpoint {source} (served from the copy {ckpt})")

    # 1-3: deployment, runtime, profile; the executor picked per SubNet (auto), its
    # sessions built (or loaded from the cache beside the copy) before anything is timed.
    # The checkpoint's own frontier (`weightshare frontier` beside it) is the deployment
    # when there is one; else --num-subnets spread in MACs. Dominated ones are dropped.
    deploy = args.deploy or (str(source.with_name("frontier.json"))
                             if source.with_name("frontier.json").is_file() else None)
    log(f"deploying {deploy or f'{args.num_subnets} SubNets spread in MACs'}")
    cfg = StackConfig(
        checkpoint=str(ckpt), dataset=args.dataset, test_subset=args.test_subset,
        num_subnets=args.num_subnets, max_batch=args.max_batch, profile_runs=args.runs,
        threads=args.threads, executor="auto", deploy=deploy)
    stack = build_stack(cfg, log=log)
    stack.wait_executor(timeout=1800)
    rt, prof = stack.runtime, stack.profile
    log("served paths: " + ", ".join(f"{n} {stack.executor.path(n)}" for n in prof.names))
    mem = rt.memory()
    switch = rt.measure_switch_us(rounds=300 if not args.quick else 30)
    with tempfile.TemporaryDirectory() as tmp:
        store = ExtractedModelStore.from_runtime(rt, tmp)
        load_ms = {n: store.measure_load_ms(n, runs=10) for n in rt.names}
        rss = {k: rss_growth(k, str(ckpt), store, rt.names)
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

    # 6: the server's overhead at saturation
    from weightshare.experiments.comparisons import measure_overhead

    overhead = [measure_overhead(stack, n, seconds=args.overhead_seconds, runs=args.runs)
                for n in dict.fromkeys([prof.most_accurate(), prof.names[0]])]
    for o in overhead:
        print(f"overhead {o['subnet']}: server {o['server_throughput']:.0f} req/s vs raw "
              f"{o['raw_model_throughput']:.0f} img/s ({o['ratio']:.2f}x)", file=sys.stderr)

    # 7: executors, memory, request path
    import serving_live as sl

    from weightshare.serve.overhead import measure_decode_ms, measure_request_overhead

    executors, memory_by_executor = sl.executors_table(
        stack, [1, 16], workdir, rounds=3 if args.quick else 5, runs=10 if args.quick else 20)
    for r in executors:
        log(f"executor {r['subnet']} b{r['batch']}: torch {r['torch_ms']} ms, onnxruntime "
            f"{r['onnxruntime_ms']} ms, standalone {r['standalone_ort_ms']} ms")
    decode = measure_decode_ms(rt.input_shape())
    req_overhead = measure_request_overhead(rt.input_shape(), rt.num_classes,
                                            max_batch=prof.max_batch)
    log(f"decode ms {decode}; overhead model {req_overhead.to_dict()}")

    # 8: the peer, the load generator's ceiling, live_vs_peer, the simulator checked
    peer_name = prof.most_accurate()
    peer_acc = prof.acc(peer_name)
    peer_onnx = workdir / f"peer_{peer_name}.onnx"
    peer_export = sl.export_subnet(stack, peer_name, peer_onnx)
    peer_port = sl.free_port()
    shape = rt.input_shape()
    with sl.process(sl.peer_cmd(peer_onnx, peer_port, peer_name, peer_acc), server_cpus,
                    peer_port, workdir / "peer.log") as (peer_url, peer_start_s):
        peer_seq = sl.sequential_ms(peer_url, shape, client_cpus, args.overhead_seconds)
        peer_cap = sl.capacity(peer_url, shape, client_cpus, seconds=args.overhead_seconds,
                               concurrency=8)
        with sl.weightshare_server(stack, "slackfit", 30_000.0, req_overhead) as url:
            ws_seq = sl.sequential_ms(url, shape, client_cpus, args.overhead_seconds)
        log(f"peer {peer_name} ({peer_acc:.2f} %): {peer_seq:.2f} ms unloaded, capacity "
            f"{peer_cap['throughput_rps']:.0f} req/s (ready in {peer_start_s:.1f} s); "
            f"weightshare {ws_seq:.2f} ms unloaded")
        peer_rps = peer_cap["throughput_rps"]
        rates = [f * peer_rps for f in args.peer_load]
        ceiling = sl.loadgen_ceiling(client_cpus, server_cpus, shape, 2 * max(rates),
                                     seconds=args.overhead_seconds, workdir=workdir)
        log(f"load generator ceiling: {ceiling}")
        live_slo = args.peer_slo_ms or max(20.0, round(10 * peer_seq))
        versus = sl.live_vs_peer(stack, peer_url, rates, [1.0, 8.0], live_slo,
                                 args.peer_seconds, req_overhead, client_cpus, log)
    validation = sl.simulate_rows(stack, versus, req_overhead, log)
    stack.close()

    # 9: startup with the saved profile, as a user starts the server
    startup = sl.startup_times(
        ckpt, server_cpus, workdir, args.startups,
        ["--threads", str(args.threads), "--max-batch", str(args.max_batch), "--num-subnets",
         str(args.num_subnets), "--dataset", args.dataset, "--test-subset",
         str(args.test_subset), "--executor", "auto",
         *(["--deploy", deploy] if deploy else [])])  # the deployment profiled above
    log(f"startup with the saved profile: {startup['all_starts_s']} s (imports alone "
        f"{startup['imports_s']} s)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(stack.profile_path, out / f"{args.name}_profile.json")

    payload = {
        "checkpoint": str(source), "deploy": deploy, "threads": torch.get_num_threads(), "slo_ms": slo_ms,
        "cpus": {"server": args.server_cpu, "load_generator": args.client_cpu},
        "niceness": os.nice(0),
        "reference_rps": peak, "live_slo_ms": args.live_slo_ms,
        "deployed": [s.to_dict() for s in prof.subnets],
        "profile": prof.to_dict(), "memory": mem, "rss_growth_bytes": rss,
        "switch": switch, "load_ms": load_ms, "simulation": sims, "live": lives,
        "executors": executors, "memory_by_executor": memory_by_executor,
        "decode_ms": decode, "request_overhead": req_overhead.to_dict(),
        "startup_s": startup,
        "peer": {"name": "kserve-onnxruntime", "subnet": peer_name, "acc": peer_acc,
                 "kserve_version": _version("kserve"), "export": peer_export,
                 "unloaded_ms": peer_seq, "capacity_rps": peer_rps,
                 "capacity": peer_cap, "ready_s": round(peer_start_s, 2)},
        "weightshare_unloaded_ms": ws_seq, "load_generator_ceiling": ceiling,
        "live_vs_peer": versus,
        "overhead_validation": {
            "max_abs_diff_points": max(abs(r["diff_points"]) for r in validation),
            "max_abs_diff_points_model_only": max(abs(r["diff_points_model_only"])
                                                  for r in validation),
            "rows": validation},
        # The headline field: the most accurate SubNet; "per_subnet" has the rest.
        "overhead": {"server_throughput": overhead[0]["server_throughput"],
                     "raw_model_throughput": overhead[0]["raw_model_throughput"],
                     "ratio": overhead[0]["ratio"], "per_subnet": overhead},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    # Kept beside the work copy too, so a failure while formatting loses no measurement.
    (workdir / "serving_payload.json").write_text(json.dumps(payload, default=str))
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
        ["overhead (SubNet)", "server at saturation req/s", "raw batched img/s", "batch",
         "ratio", "server mean batch"],
        [[o["subnet"], o["server_throughput"], o["raw_model_throughput"], o["raw_batch"],
          o["ratio"], o["server_mean_batch"]] for o in overhead])
    table += "\n" + markdown_table(
        ["SubNet", "batch", "torch executor ms", "onnxruntime executor ms",
         "standalone onnxruntime ms", "onnxruntime / standalone"],
        [[r["subnet"], r["batch"], r["torch_ms"], r["onnxruntime_ms"], r["standalone_ort_ms"],
          r["onnxruntime_over_standalone"]] for r in executors])
    m = memory_by_executor
    table += "\n" + markdown_table(
        ["bytes held", "torch executor", "onnxruntime executor", "separate models",
         "separate / torch"],
        [[f"{len(prof.subnets)} SubNets", m["torch"], m["onnxruntime"], m["separate_models"],
          m["separate_over_torch"]]])
    ov = req_overhead
    table += "\n" + markdown_table(
        ["request path (batch-1 JSON request)", "ms"],
        [["decode: json + torch.tensor (before)", decode["json"]],
         ["decode: orjson + numpy (now)", decode["orjson"]],
         ["decode: binary tensor extension", decode["binary"]],
         ["overhead model: http (routing, handler)", ov.http_ms],
         ["overhead model: hand-off (queue + reply)", ov.handoff_ms],
         ["overhead model: encode", ov.encode_ms],
         ["overhead model: per batch + per image", f"{ov.batch_ms:.4f} + {ov.item_ms:.4f}"],
         ["peer unloaded (KServe + onnxruntime)", peer_seq],
         ["weightshare unloaded (SlackFit)", ws_seq]])
    table += "\n" + markdown_table(
        ["rate req/s", "CV^2", "SLO ms", "SlackFit SLO", "peer SLO", "SlackFit / peer",
         "SlackFit acc %", "peer acc %", "SlackFit p99 ms", "peer p99 ms"],
        [[r["rate"], r["cv2"], r["slo_ms"], r["slackfit"]["slo_attainment"],
          r["peer"]["slo_attainment"],
          r["slackfit"]["slo_attainment"] / max(1e-9, r["peer"]["slo_attainment"]),
          r["slackfit"]["mean_acc"], r["peer"]["mean_acc"], r["slackfit"]["p99_ms"],
          r["peer"]["p99_ms"]] for r in versus])
    table += "\n" + markdown_table(
        ["trace", "server SLO", "simulator + overhead", "diff (points)", "simulator, model only",
         "diff (points)"],
        [[r["trace"].split(",duration")[0], r["server"]["slo_attainment"],
          r["sim_with_overhead"]["slo_attainment"], r["diff_points"],
          r["sim_model_only"]["slo_attainment"], r["diff_points_model_only"]]
         for r in validation])
    table += "\n" + markdown_table(
        ["startup", "s"],
        [["weightshare serve, saved profile, until ready (best of "
          f"{len(startup['all_starts_s'])})", startup["saved_profile"]],
         ["  of which importing torch, fastapi, onnxruntime, uvicorn (measured apart)",
          startup["imports_s"]],
         ["KServe peer until ready", round(peer_start_s, 2)]])
    notes = (f"Simulated SLO {slo_ms} ms ({args.slo_factor}x the largest SubNet's batch-1 "
             f"latency); trace rates are {args.load} x the rate the largest SubNet sustains "
             f"within it ({peak:.0f} req/s). Simulated batches take the profiled median; "
             "policies plan with the p99. Live: the real server and load generator in one "
             f"process on this CPU, {args.live_rate:g} req/s, SLO {args.live_slo_ms:g} ms. "
             "Load-from-disk times are with a warm page cache. "
             "Overhead: closed-loop single-image requests at concurrency 2 x max batch, "
             "fixed SubNet, vs the same SubNet called directly at the max batch; the "
             "client runs on the same cores. "
             f"Peer: {peer_name} ({peer_acc:.2f} %) exported to ONNX behind KServe "
             f"{_version('kserve')}'s ModelServer with onnxruntime {_version('onnxruntime')} "
             f"(benchmarks/kserve_peer.py, one worker, batch 1, 1 thread), capacity "
             f"{peer_rps:.0f} req/s (closed loop, 8 connections). Both servers on CPU "
             f"{args.server_cpu}, the load generator on CPU {args.client_cpu} (its ceiling "
             f"against an instant responder: {ceiling['closed_loop_rps']:.0f} req/s closed "
             f"loop; open loop at {2 * max(rates):.0f} req/s it sent with a p99 lag of "
             f"{ceiling['open_loop_send_lag_p99_ms']:.2f} ms). live_vs_peer: gamma traces of "
             f"{args.peer_seconds:g} s at {args.peer_load} x the peer's capacity, SLO "
             f"{live_slo:g} ms, SlackFit (executor auto) planning with the overhead model "
             "measured at its start, each trace on both back to back. The simulator rows "
             "replay those same traces with the same profile.")
    write_results(args.name, payload, table, out, title="SuperServe on CPU", notes=notes)
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
        save_plot(fig, out / f"{args.name}.png")

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
        for ax, cv2 in zip(axes, (1.0, 8.0), strict=True):
            rs = [r for r in versus if r["cv2"] == cv2]
            x = [r["rate"] for r in rs]
            for who, style in (("slackfit", "o-"), ("peer", "s--")):
                ax.plot(x, [100 * r[who]["slo_attainment"] for r in rs], style,
                        label="SlackFit (weightshare)" if who == "slackfit"
                        else "KServe + onnxruntime")
            ax.plot(x, [100 * r["sim_with_overhead"]["slo_attainment"] for r in validation
                        if r["cv2"] == cv2], ":", color="gray", label="simulator + overhead")
            ax.set_title(f"gamma CV^2 {cv2:g}, SLO {live_slo:g} ms", fontsize=8)
            ax.set_xlabel("offered load req/s")
        axes[0].set_ylabel("SLO attainment %")
        axes[0].legend(fontsize=7)
        save_plot(fig, out / f"{args.name}_peer.png")
    except ImportError:
        pass
    print(f"wrote {out / (args.name + '.md')} in {time.perf_counter() - t_start:.0f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
