"""Scale-out serving: Ray Serve replicas vs the single-process server, routers, a killed replica.

All in one run, on one checkpoint (the finished reference run if it is there, else the
reference run's committed in-flight checkpoint; copied to runs/scale_out/ so the profile,
BN statistics and onnxruntime sessions written beside it stay out of checkpoints/):

1. The load generator's own ceiling: closed loop from its core against a server that
   answers every request at once with a canned reply (no model).
2. Single process (`weightshare serve`, the local engine) on core 1: saturated
   throughput (closed loop, requests carrying the SLO; only answers within it count).
3. Ray Serve, 1 replica pinned to core 1, then 2 replicas on cores 0 and 1 (one torch
   thread each): saturated throughput as above, and an open-loop gamma trace (CV^2 2) at
   `--load` x that throughput for SLO attainment and mean served accuracy.
4. Routers: the same bursty trace (gamma, CV^2 8) against 2 replicas routed by Ray's
   default (power of two choices on queue length) and by the slack-aware router.
5. Fault: an open-loop trace against 2 replicas, one replica's actor killed a third of the
   way in; requests that failed (not answered at all, or a server error), and how long
   until Ray had 2 replicas running again.

Core 0 runs the reference training at nice 19 (it yields); the load generator runs there
too, Ray's proxy and controller float over both cores.

    python benchmarks/scale_out.py            # ~20 minutes on 2 busy cores
    python benchmarks/scale_out.py --quick    # smoke run

Writes scale_out.{json,md,png} to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from common import REPO_ROOT, RESULTS_DIR, markdown_table, save_plot, write_results

from weightshare.serve.loadgen import LoadConfig, run_closed_loop_process, run_load_process
from weightshare.serve.server import ServerConfig
from weightshare.serve.stack import StackConfig, build_stack
from weightshare.serve.traces import make_trace

REFERENCE = REPO_ROOT / "checkpoints" / "reference" / "checkpoint.pt"
WORK = REPO_ROOT / "runs" / "scale_out"
LOADGEN_CORE = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pinned(cores: set[int]):
    """Children started inside inherit this affinity (the load generator's process)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def wait_ready(url: str, timeout_s: float = 900.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


# ------------------------------------------------------------- measurements
def closed_loop(url: str, shape: tuple[int, ...], slo_ms: float, concurrency: int,
                seconds: float) -> dict[str, Any]:
    with pinned({LOADGEN_CORE}):
        r = run_closed_loop_process(LoadConfig(url=url, slo_ms=slo_ms, input_shape=shape),
                                    concurrency=concurrency, seconds=seconds, warmup_s=1.0)
    return {k: r[k] for k in ("throughput_rps", "mean_batch", "client_cpu_s", "seconds",
                              "concurrency", "http_statuses")}


def saturate(url: str, shape: tuple[int, ...], slo_ms: float, per_replica: list[int],
             replicas: int, seconds: float) -> dict[str, Any]:
    """Saturated throughput at the SLO: answers within it per second, closed loop, at the
    best of a few client counts. Too many clients for the SLO only measure how fast the
    policy drops (each 504 returns at once and its client sends again), so the peak over
    concurrency is the number to compare, with every point kept."""
    points = [closed_loop(url, shape, slo_ms, c * replicas, seconds) for c in per_replica]
    best = max(points, key=lambda p: p["throughput_rps"])
    return {**best, "sweep": points}


def open_loop(url: str, shape: tuple[int, ...], slo_ms: float, spec: str) -> dict[str, Any]:
    trace = make_trace(spec)
    with pinned({LOADGEN_CORE}):
        res = run_load_process(trace, LoadConfig(url=url, slo_ms=slo_ms, input_shape=shape,
                                                 max_requests=100_000, max_seconds=600))
    s = dict(res.summary)
    s["http_statuses"] = res.statuses
    s["trace"] = spec
    return s


# ------------------------------------------------ the load generator's ceiling
_CANNED = json.dumps({"model_name": "weightshare", "model_version": "1",
                      "parameters": {"subnet": "s0", "subnet_acc": 0.0, "batch_size": 1,
                                     "queue_ms": 0.0},
                      "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10],
                                   "data": [0.0] * 10}]}).encode()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(_CANNED)).encode() + b"\r\n\r\n" + _CANNED)
    try:
        while True:
            header = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in header.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            await reader.readexactly(n)
            writer.write(head)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def echo_server_main(port: int) -> None:
    async def run() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def loadgen_ceiling(shape: tuple[int, ...], seconds: float) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--echo-server",
                             str(port)])
    try:
        t0 = time.monotonic()  # the child imports this module (torch too) before it listens
        while time.monotonic() - t0 < 120:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        r = closed_loop(f"http://127.0.0.1:{port}", shape, 10_000.0, 64, seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    return r


# ------------------------------------------------------------ the two engines
def single_process(ckpt: Path, args: argparse.Namespace, shape: tuple[int, ...]
                   ) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = ["taskset", "-c", "1", str(Path(sys.executable).with_name("weightshare")), "serve",
           "-c", str(ckpt), "--threads", "1", "--port", str(port), "--slo-ms", str(args.slo_ms),
           "--executor", args.executor, "--num-subnets", str(args.num_subnets),
           "--test-subset", str(args.test_subset), "--max-batch", str(args.max_batch)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        sat = saturate(url, shape, args.slo_ms, args.concurrency, 1, args.seconds)
    finally:
        proc.terminate()
        proc.wait(60)
    return {"command": " ".join(cmd[3:]), **sat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None,
                    help="default: checkpoints/reference/checkpoint.pt, else its in-flight one")
    ap.add_argument("--num-subnets", type=int, default=6)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--executor", default="auto")
    ap.add_argument("--slo-ms", type=float, default=100.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16],
                    help="Closed-loop clients per replica (the best is reported).")
    ap.add_argument("--seconds", type=float, default=10.0, help="Closed-loop seconds.")
    ap.add_argument("--duration", type=float, default=20.0, help="Open-loop trace seconds.")
    ap.add_argument("--fault-duration", type=float, default=60.0)
    ap.add_argument("--load", type=float, default=0.7,
                    help="Open-loop rates, times the configuration's saturated throughput "
                    "(the bursty and fault traces: times that of 2 replicas).")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server is not None:
        echo_server_main(args.echo_server)
        return
    if args.quick:
        args.num_subnets, args.test_subset, args.seconds = 3, 300, 2.0
        args.duration, args.fault_duration = 5.0, 25.0
    t_start = time.time()

    src = Path(args.checkpoint) if args.checkpoint else REFERENCE
    work = WORK / ("quick" if args.quick else "full")  # their profiles differ
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.pt"
    if not ckpt.is_file() or ckpt.stat().st_size != src.stat().st_size or \
            ckpt.stat().st_mtime < src.stat().st_mtime:
        shutil.copy2(src, ckpt)
    print(f"checkpoint {src} (served from the copy {ckpt})", flush=True)
    stack_cfg = StackConfig(checkpoint=str(ckpt), num_subnets=args.num_subnets,
                            test_subset=args.test_subset, max_batch=args.max_batch, threads=1,
                            executor=args.executor, show_progress=False)
    # Measure (or reuse) BN statistics, accuracies, the profile and the onnxruntime sessions
    # once, pinned to core 1 as every server here, so each start below reuses them.
    with pinned({1}):
        pre = build_stack(replace(stack_cfg, ort_background=False), log=print)
        pre.wait_executor()
    shape = tuple(int(s) for s in pre.runtime.input_shape())
    deployed = [s.to_dict() for s in pre.profile.subnets]
    pre.close()

    print("load generator ceiling", flush=True)
    ceiling = loadgen_ceiling(shape, args.seconds)
    print(f"  {ceiling['throughput_rps']:.0f} req/s, HTTP {ceiling['http_statuses']}, client "
          f"CPU {ceiling['client_cpu_s']:.1f} s", flush=True)
    print("single process (local engine)", flush=True)
    single = single_process(ckpt, args, shape)
    print(f"  {single['throughput_rps']:.1f} req/s, HTTP {single['http_statuses']}", flush=True)

    from weightshare.serve.ray_engine import RayEngineConfig, start_ray_serving

    port = free_port()
    server_cfg = ServerConfig(slo_ms=args.slo_ms, max_request_batch=args.max_batch)
    replicas: list[dict[str, Any]] = []
    routers: list[dict[str, Any]] = []
    bursty_rate = None
    serving = None
    fault: dict[str, Any] = {}
    try:
        for n, router in ((1, "slack-aware"), (2, "slack-aware"), (2, "default")):
            cfg = RayEngineConfig(replicas=n, router=router, port=port, threads=1,
                                  pin_cores=(1,) if n == 1 else (0, 1))
            print(f"Ray Serve: {n} replica(s), router {router}", flush=True)
            t0 = time.monotonic()
            serving = start_ray_serving(stack_cfg, server_cfg, cfg, log=print, prepare=False)
            print(f"  up in {time.monotonic() - t0:.0f} s", flush=True)
            wait_ready(serving.url)
            if router == "slack-aware":
                sat = saturate(serving.url, shape, args.slo_ms, args.concurrency, n,
                               args.seconds)
                print(f"  saturated: {sat['throughput_rps']:.1f} req/s, HTTP "
                      f"{sat['http_statuses']}, mean batch {sat['mean_batch']:.1f}", flush=True)
                # Below this configuration's own saturated throughput: SLO attainment and
                # accuracy where it can keep up, not how it drops under overload.
                rate = args.load * sat["throughput_rps"]
                ol = open_loop(serving.url, shape, args.slo_ms,
                               f"gamma:rate={rate:.0f},cv2=2,duration={args.duration},seed=1")
                replicas.append({"n": n, "throughput_rps": sat["throughput_rps"],
                                 "slo_attainment": ol["slo_attainment"],
                                 "mean_acc": ol["mean_acc"], "saturation": sat,
                                 "open_loop": ol})
                print(f"  {sat['throughput_rps']:.1f} req/s saturated; at {rate:.0f} req/s: "
                      f"SLO {100 * ol['slo_attainment']:.1f} %, acc {ol['mean_acc']:.2f}",
                      flush=True)
            if n == 2:
                bursty_rate = bursty_rate or args.load * replicas[-1]["throughput_rps"]
                spec = f"gamma:rate={bursty_rate:.0f},cv2=8,duration={args.duration},seed=2"
                ol = open_loop(serving.url, shape, args.slo_ms, spec)
                routers.append({"name": router, "slo_attainment": ol["slo_attainment"],
                                "mean_acc": ol["mean_acc"], "p99_ms": ol["p99_ms"],
                                "summary": ol})
                print(f"  bursty trace: SLO {100 * ol['slo_attainment']:.1f} %", flush=True)
            if n == 2 and router == "slack-aware":
                fault = run_fault(serving, shape, args, bursty_rate / 2)
                print(f"  fault: {fault['failed']} of {fault['requests']} failed, back in "
                      f"{fault['recovered_s']:.1f} s", flush=True)
    finally:
        if serving is not None:
            serving.shutdown()

    payload = {
        "checkpoint": str(src), "deployed": deployed, "slo_ms": args.slo_ms,
        "executor": args.executor, "threads_per_replica": 1,
        "replicas": replicas, "single_process": single, "router": routers, "fault": fault,
        "loadgen_ceiling": ceiling, "wall_s": round(time.time() - t_start, 1),
    }
    one = replicas[0]["throughput_rps"]
    two = replicas[1]["throughput_rps"] if len(replicas) > 1 else float("nan")
    by = {r["name"]: r["slo_attainment"] for r in routers}
    payload["goals"] = {
        "two_over_one": two / one if one else None, "two_over_one_goal": 1.6,
        "ray1_over_single": one / single["throughput_rps"] if single["throughput_rps"] else None,
        "ray1_over_single_goal": 0.9,
        "fault_failed_fraction": fault["failed"] / max(fault["requests"], 1),
        "fault_failed_goal": 0.01, "recovered_goal_s": 30.0,
        "slack_aware_minus_default": by.get("slack-aware", 0) - by.get("default", 0),
    }
    rows = [["single process (local)", 1, single["throughput_rps"], "", ""]]
    rows += [[f"Ray Serve, {r['n']} replica(s)", r["n"], r["throughput_rps"],
              100 * r["slo_attainment"], r["mean_acc"]] for r in replicas]
    rows.append(["load generator ceiling (no model)", "", ceiling["throughput_rps"], "", ""])
    table = markdown_table(["engine", "replicas", "saturated req/s", "SLO % (open loop)",
                            "mean acc %"], rows)
    table += "\n" + markdown_table(
        ["router (2 replicas, bursty gamma CV^2 8)", "SLO %", "mean acc %", "p99 ms"],
        [[r["name"], 100 * r["slo_attainment"], r["mean_acc"], r["p99_ms"]] for r in routers])
    table += "\n" + markdown_table(
        ["fault (2 replicas, one killed)", "requests", "failed", "killed at s", "recovered s"],
        [["", fault["requests"], fault["failed"], fault["replica_killed_at_s"],
          fault["recovered_s"]]])
    g = payload["goals"]
    notes = (f"Goals: 2 replicas / 1 = {g['two_over_one']:.2f}x (goal >= 1.6x); 1 Ray replica / "
             f"single process = {g['ray1_over_single']:.2f}x (goal >= 0.9x); failed with a "
             f"kill {100 * g['fault_failed_fraction']:.2f} % (goal <= 1 %), back in "
             f"{fault['recovered_s']:.1f} s (goal <= 30 s); slack-aware minus default "
             f"{100 * g['slack_aware_minus_default']:+.1f} SLO points (goal >= 0).")
    json_path, _ = write_results("scale_out", payload, table, args.out,
                                 title="Scale-out serving: Ray Serve replicas", notes=notes)
    plot(payload, Path(args.out) / "scale_out.png")
    print(table + "\n" + notes)
    print(f"wrote {json_path}")


def run_fault(serving: Any, shape: tuple[int, ...], args: argparse.Namespace, rate: float
              ) -> dict[str, Any]:
    spec = f"poisson:rate={rate:.0f},duration={args.fault_duration},seed=3"
    out: dict[str, Any] = {}

    def load() -> None:
        out["summary"] = open_loop(serving.url, shape, args.slo_ms, spec)

    before = set(serving.replica_actor_names())
    t = threading.Thread(target=load)
    t0 = time.monotonic()
    t.start()
    time.sleep(args.fault_duration / 3)
    killed_at = time.monotonic() - t0
    killed = serving.kill_replica()
    recovered = None
    while t.is_alive() or recovered is None:
        names = set(serving.replica_actor_names())
        if recovered is None and len(names - before) >= 1 and serving.running_replicas() >= 2:
            recovered = time.monotonic() - t0 - killed_at
        if not t.is_alive() and time.monotonic() - t0 > args.fault_duration + 120:
            break
        time.sleep(0.2)
    t.join()
    s = out["summary"]
    # Failed: never answered or a server error (status 0 or 5xx other than 504: a 504 is
    # the SLO policy's own "deadline cannot be met", counted in SLO attainment instead).
    failed = sum(v for k, v in s["http_statuses"].items()
                 if int(k) == 0 or (int(k) >= 500 and int(k) != 504))
    return {"requests": s["requests"], "failed": failed,
            "replica_killed_at_s": round(killed_at, 2),
            "recovered_s": round(recovered, 2) if recovered is not None else None,
            "killed_replica": killed, "slo_attainment": s["slo_attainment"], "summary": s}


def plot(p: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["single\nprocess"] + [f"Ray\n{r['n']} repl." for r in p["replicas"]] + \
        ["loadgen\nceiling"]
    vals = [p["single_process"]["throughput_rps"]] + \
        [r["throughput_rps"] for r in p["replicas"]] + [p["loadgen_ceiling"]["throughput_rps"]]
    a.bar(names, vals, color=["#888"] + ["#3a7"] * len(p["replicas"]) + ["#ccc"])
    a.set_ylabel("saturated req/s (answers within the SLO)")
    a.set_title(f"Throughput, SLO {p['slo_ms']:g} ms")
    rs = p["router"]
    b.bar([r["name"] for r in rs], [100 * r["slo_attainment"] for r in rs], color="#37a")
    b.set_ylim(0, 100)
    b.set_ylabel("SLO attainment %")
    b.set_title("Routers, 2 replicas, bursty trace")
    save_plot(fig, path)


if __name__ == "__main__":
    main()
