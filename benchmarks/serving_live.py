"""The live sections of `serving.py`: weightshare's server against the KServe + onnxruntime
peer, the overhead model against the live server, executors, memory and startup.

Everything here drives real processes over loopback HTTP with the one open-loop load
generator (`weightshare.serve.loadgen`, in its own process): the weightshare server runs
in the benchmark's process (pinned to the server CPU), the peer in a `kserve_peer.py`
process pinned to the same CPU, and the load generator on another CPU
(`LoadConfig.cpus`), so client and server never share a core.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None,
               poll_s: float = 0.02) -> float:
    """Seconds until GET url/v2/health/ready answers 200 (raises on timeout or exit)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url} not ready within {timeout_s:.0f} s")


@contextlib.contextmanager
def process(cmd: list[str], cpus: tuple[int, ...], port: int, log: Path,
            timeout_s: float = 120.0) -> Iterator[tuple[str, float]]:
    """Start a server process on `cpus`, wait until ready; yield (url, seconds to ready)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, timeout_s, proc)
            yield url, time.perf_counter() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------- the peer
def export_subnet(stack: Any, name: str, path: Path) -> dict[str, Any]:
    """The deployed SubNet `name` (its own BN statistics) as ONNX, verified against PyTorch
    by `export_onnx` (the function behind `weightshare export`)."""
    from weightshare.export import export_onnx

    rt = stack.runtime
    cfg = rt.subnet(name)
    rep = export_onnx(rt.net.extract(cfg), path, rt.input_shape(name), exporter="torchscript")
    return {"path": str(path), "bytes": rep.bytes, "max_abs_diff_vs_torch": rep.max_abs_diff}


def peer_cmd(onnx: Path, port: int, subnet: str, acc: float) -> list[str]:
    return [sys.executable, str(HERE / "kserve_peer.py"), "--onnx", str(onnx), "--port",
            str(port), "--subnet", subnet, "--acc", str(acc), "--threads", "1"]


_NULL_SERVER = r"""
import asyncio, sys
BODY = b'{"model_name":"weightshare","parameters":{"subnet":"null","subnet_acc":0,"batch_size":1},"outputs":[]}'
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY)
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            head = self.buf[:i].lower(); n = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"): n = int(line.split(b":")[1])
            if len(self.buf) < i + 4 + n: return
            self.buf = self.buf[i + 4 + n:]
            if head.startswith(b"get"): self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            else: self.t.write(HEAD + BODY)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await s.serve_forever()
asyncio.run(main())
"""


def loadgen_ceiling(client_cpus: tuple[int, ...], server_cpus: tuple[int, ...],
                    input_shape: tuple[int, ...], rate: float, seconds: float, workdir: Path
                    ) -> dict[str, Any]:
    """The load generator's own limit: against a responder that answers at once (raw
    asyncio, a canned body), (1) closed loop, 64 connections: the most answers per second
    it turns around, and its CPU share; (2) the open-loop replay at `rate`: how late it
    sends (a client that keeps up sends within a millisecond of the trace)."""
    from weightshare.serve.loadgen import (
        LoadConfig,
        run_closed_loop_process,
        run_load_process,
    )
    from weightshare.serve.traces import make_trace

    port = free_port()
    with process([sys.executable, "-c", _NULL_SERVER, str(port)], server_cpus, port,
                 workdir / "null_server.log") as (url, _):
        cfg = LoadConfig(url=url, slo_ms=10_000.0, input_shape=input_shape, cpus=client_cpus,
                         max_requests=None, max_seconds=None)
        closed = run_closed_loop_process(cfg, concurrency=64, seconds=seconds)
        spec = f"gamma:rate={rate:g},cv2=8,duration={seconds:g},seed=7"
        opened = run_load_process(make_trace(spec), cfg).summary
    return {"closed_loop_rps": closed["throughput_rps"],
            "closed_loop_client_cpu_share": closed["client_cpu_s"] / (seconds + 0.5),
            "open_loop_trace": spec, "open_loop_throughput_rps": opened["throughput_rps"],
            "open_loop_send_lag_p99_ms": opened["send_lag_p99_ms"],
            "open_loop_send_lag_max_ms": opened["send_lag_max_ms"]}


def capacity(url: str, input_shape: tuple[int, ...], client_cpus: tuple[int, ...],
             seconds: float, concurrency: int) -> dict[str, Any]:
    """Answers per second at saturation (closed loop, single-image requests)."""
    from weightshare.serve.loadgen import LoadConfig, run_closed_loop_process

    cfg = LoadConfig(url=url, slo_ms=30_000.0, input_shape=input_shape, cpus=client_cpus,
                     timeout_s=60.0)
    return run_closed_loop_process(cfg, concurrency, seconds)


def sequential_ms(url: str, input_shape: tuple[int, ...], client_cpus: tuple[int, ...],
                  seconds: float) -> float:
    """Mean ms of one request at a time (closed loop, one connection, from the client CPU):
    the server's unloaded latency, client and HTTP included."""
    cap = capacity(url, input_shape, client_cpus, seconds, concurrency=1)
    return 1000.0 / cap["throughput_rps"]


# ------------------------------------------------------ weightshare's own server
@contextlib.contextmanager
def weightshare_server(stack: Any, policy: str, slo_ms: float, overhead: Any = None
                       ) -> Iterator[str]:
    """The weightshare server (this process) with `policy`, planning with `overhead`."""
    from weightshare.serve.metrics import ServeMetrics
    from weightshare.serve.policies import make_policy
    from weightshare.serve.server import ServerConfig, ServerThread, create_app
    from weightshare.serve.worker import InferenceWorker

    pol = make_policy(policy)
    pol.set_overhead(overhead)
    metrics = ServeMetrics()
    worker = InferenceWorker(stack.backend, pol, stack.profile, queue_capacity=1024,
                             metrics=metrics)
    app = create_app(worker, stack.runtime.input_shape(), stack.runtime.num_classes,
                     ServerConfig(slo_ms=slo_ms, max_request_batch=stack.profile.max_batch),
                     metrics)
    with ServerThread(app) as server:
        yield server.url


def replay(url: str, trace: Any, slo_ms: float, input_shape: tuple[int, ...],
           client_cpus: tuple[int, ...]) -> dict[str, Any]:
    from weightshare.serve.loadgen import LoadConfig, run_load_process

    cfg = LoadConfig(url=url, slo_ms=slo_ms, input_shape=input_shape, cpus=client_cpus,
                     max_requests=None, max_seconds=None)
    res = run_load_process(trace, cfg)
    return {**res.summary, "http_statuses": res.statuses}


def _row(s: dict[str, Any]) -> dict[str, Any]:
    return {"slo_attainment": s["slo_attainment"], "mean_acc": s["mean_acc"],
            "p99_ms": s["p99_ms"], "p50_ms": s["p50_ms"], "requests": s["requests"],
            "throughput_rps": s["throughput_rps"], "subnets": s.get("subnets", {}),
            "send_lag_p99_ms": s.get("send_lag_p99_ms")}


def live_vs_peer(stack: Any, peer_url: str, rates: list[float], cv2s: list[float],
                 slo_ms: float, seconds: float, overhead: Any, client_cpus: tuple[int, ...],
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each (rate, CV^2): the same gamma trace against SlackFit (a fresh server planning
    with `overhead`) and against the peer (one process, idle between runs), back to back so
    machine noise hits both alike."""
    from weightshare.serve.traces import make_trace

    shape = stack.runtime.input_shape()
    rows = []
    for cv2 in cv2s:
        for rate in rates:
            spec = f"gamma:rate={rate:.0f},cv2={cv2:g},duration={seconds:g},seed=11"
            trace = make_trace(spec)
            with weightshare_server(stack, "slackfit", slo_ms, overhead) as url:
                sf = replay(url, trace, slo_ms, shape, client_cpus)
            pr = replay(peer_url, trace, slo_ms, shape, client_cpus)
            rows.append({"rate": round(rate, 1), "cv2": cv2, "slo_ms": slo_ms, "trace": spec,
                         "slackfit": _row(sf), "peer": _row(pr)})
            log(f"  {spec}: slackfit {sf['slo_attainment']:.3f} ({sf['mean_acc']:.2f} %, "
                f"p99 {sf['p99_ms']:.1f} ms), peer {pr['slo_attainment']:.3f} "
                f"({pr['mean_acc']:.2f} %, p99 {pr['p99_ms']:.1f} ms)")
    return rows


def simulate_rows(stack: Any, rows: list[dict[str, Any]], overhead: Any,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The simulator on the very traces SlackFit served live in `rows`, with the overhead
    model (SlackFit planning with it, as it did live) and with model time only; the
    attainment differences in points. The goal: |server - simulator with overhead| <= 5."""
    from weightshare.serve.policies import make_policy
    from weightshare.serve.simulate import SimConfig, simulate
    from weightshare.serve.traces import make_trace

    out = []
    for r in rows:
        trace = make_trace(r["trace"])
        pol = make_policy("slackfit")
        pol.set_overhead(overhead)
        with_ov = simulate(pol, stack.profile, trace,
                           SimConfig(slo_ms=r["slo_ms"], overhead=overhead)).summary
        without = simulate(make_policy("slackfit"), stack.profile, trace,
                           SimConfig(slo_ms=r["slo_ms"])).summary
        live = r["slackfit"]
        row = {"rate": r["rate"], "cv2": r["cv2"], "trace": r["trace"], "slo_ms": r["slo_ms"],
               "server": live, "sim_with_overhead": _row(with_ov),
               "sim_model_only": _row(without),
               "diff_points": 100 * (live["slo_attainment"] - with_ov["slo_attainment"]),
               "diff_points_model_only": 100 * (live["slo_attainment"]
                                                - without["slo_attainment"])}
        out.append(row)
        log(f"  {r['trace']}: server {live['slo_attainment']:.3f}, simulator with overhead "
            f"{with_ov['slo_attainment']:.3f} ({row['diff_points']:+.1f} points), model only "
            f"{without['slo_attainment']:.3f} ({row['diff_points_model_only']:+.1f})")
    return out


# ------------------------------------------------------------ executors, memory
def executors_table(stack: Any, batches: list[int], workdir: Path, rounds: int, runs: int
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every deployed SubNet through the torch executor, the onnxruntime executor (the
    stack's sessions) and a standalone onnxruntime session over the same exported file,
    interleaved; and the bytes each setting holds."""
    import onnxruntime as ort
    from common import interleaved_latency

    from weightshare.serve.executors import make_executor
    from weightshare.serve.runtime import module_bytes

    rt = stack.runtime
    ort_ex = rt.executor
    torch_ex = make_executor("torch", rt.net, rt.configs())
    rows = []
    for name in rt.names:
        path = workdir / f"standalone_{name}.onnx"
        export_subnet(stack, name, path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for b in batches:
            x = torch.randn(b, *rt.input_shape(name))
            xn = x.numpy()
            fns = {"torch": lambda x=x, n=name: torch_ex.run(x, n),
                   "onnxruntime": lambda x=x, n=name: ort_ex.run_session(x, n),
                   "standalone_ort": lambda s=sess, xn=xn: s.run(None, {"input": xn})}
            with torch.inference_mode():
                lat = interleaved_latency(fns, rounds=rounds, runs=runs)
                ref = rt.net.extract(rt.subnet(name)).eval()(x)
                diff = float((ort_ex.run_session(x, name) - ref).abs().max())
            ms = {k: round(v["median_ms"], 3) for k, v in lat.items()}
            rows.append({"subnet": name, "batch": b, "torch_ms": ms["torch"],
                         "onnxruntime_ms": ms["onnxruntime"],
                         "standalone_ort_ms": ms["standalone_ort"],
                         "onnxruntime_over_standalone": round(
                             ms["onnxruntime"] / ms["standalone_ort"], 3),
                         "max_abs_diff_onnxruntime": diff})
        del sess
    mem = rt.memory()
    tmem, omem = torch_ex.memory(), ort_ex.memory()
    one = mem["subnetact_bytes"]
    separate = sum(module_bytes(rt.net.extract(c)) for c in rt.configs().values())
    memory = {"torch": one + tmem["extra_bytes"], "onnxruntime": one + omem["extra_bytes"],
              "separate_models": separate, "supernet_bytes": one,
              "torch_plan_extra_bytes": tmem["extra_bytes"],
              "onnxruntime_session_bytes": {n: s["file_bytes"]
                                            for n, s in omem["sessions"].items()},
              "separate_over_torch": round(separate / (one + tmem["extra_bytes"]), 3)}
    return rows, memory


# ------------------------------------------------------------------- startup
def startup_times(checkpoint: Path, cpus: tuple[int, ...], workdir: Path, starts: int,
                  args: list[str]) -> dict[str, Any]:
    """`weightshare serve -c CKPT` as a user starts it, `starts` times, each until
    /v2/health/ready is 200; the checkpoint's side files (statistics, profile, onnxruntime
    sessions) are already there from the benchmark's own start. Also the seconds just to
    import what the server imports, on the same CPU, for scale."""
    exe = str(Path(sys.executable).with_name("weightshare"))
    ready = []
    for i in range(starts):
        port = free_port()
        with process([exe, "serve", "-c", str(checkpoint), "--port", str(port), *args], cpus,
                     port, workdir / f"startup_{i}.log", timeout_s=600) as (_, secs):
            ready.append(round(secs, 2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, fastapi, onnxruntime, uvicorn"],
                   check=True, env=env, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    imports = time.perf_counter() - t0
    log_tail = (workdir / f"startup_{starts - 1}.log").read_text().strip().splitlines()[-8:]
    return {"saved_profile": min(ready), "all_starts_s": ready,
            "imports_s": round(imports, 2), "log_tail": log_tail}
