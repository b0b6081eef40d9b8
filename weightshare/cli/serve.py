"""Serving commands: `serve` (the Open Inference Protocol server), `serve serving-profile|simulate|runtime`, `loadtest`.

The options they share, and the `StackConfig` built from them, are in `serve_options`
(imported here, where `accel` also finds `ServeCheckpointOpt`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .core import (
    DataDirOpt,
    JsonOpt,
    SeedOpt,
    app,
    emit_json,
    fail,
    fmt_count,
)
from .deprecated import add_deprecated_alias
from .serve_options import (
    ServeCheckpointOpt,
    ServeDatasetOpt,
    ServeDeployOpt,
    ServeExecutorOpt,
    ServeKeepDominatedOpt,
    ServeMaxBatchOpt,
    ServeNumSubnetsOpt,
    ServeOrtBudgetOpt,
    ServeOrtCacheOpt,
    ServeProfileOpt,
    ServeSloOpt,
    ServeTestSubsetOpt,
    ServeThreadsOpt,
    stack_config,
)

# ---------------------------------------------------------------------------------------------
# Serving (weightshare.serve): `serve` (the server), `serve serving-profile|simulate|runtime`,
# `loadtest`
# ---------------------------------------------------------------------------------------------

serve_app = typer.Typer(
    help="Serve a SuperNet adaptively (SuperServe): the Open Inference Protocol server, its "
    "latency profile, the simulator and the runtime report.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(serve_app, name="serve")


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


@serve_app.callback()
def serve(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", "-c", metavar="CKPT",
                                  help="SuperNet checkpoint to serve.")
    ] = None,
    policy: Annotated[str, typer.Option("--policy", help="slackfit | maxacc | fixed:<subnet> "
                                        "| infaas (options: name:key=value,...).")] = "slackfit",
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    model_name: Annotated[str, typer.Option("--model-name", help="Model name in the URLs.")
                          ] = "weightshare",
    slo_ms: ServeSloOpt = 100.0,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="WEIGHTSHARE_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on model and metrics endpoints.")] = None,
    deploy: ServeDeployOpt = None,
    num_subnets: ServeNumSubnetsOpt = 6,
    dataset: ServeDatasetOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    test_subset: ServeTestSubsetOpt = None,
    profile: ServeProfileOpt = None,
    max_batch: ServeMaxBatchOpt = 32,
    threads: ServeThreadsOpt = None,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1,
                                            help="Requests queued before answering 429.")] = 512,
    switch_mode: Annotated[str | None, typer.Option(
        "--switch-mode", metavar="full|delta",
        help="Hold one SubNet at a time: 'full' loads its whole extracted model per switch, "
        "'delta' reads only the missing weight slices (FastSwitch).")] = None,
    executor: ServeExecutorOpt = "auto",
    ort_memory_budget_mb: ServeOrtBudgetOpt = None,
    ort_cache_dir: ServeOrtCacheOpt = None,
    keep_dominated: ServeKeepDominatedOpt = False,
    engine: Annotated[str, typer.Option(
        "--engine", metavar="local|ray",
        help="local: this one process. ray: Ray Serve replicas behind Ray's proxy on "
        "--host/--port (the same endpoints), each with the whole stack and its own SlackFit "
        "queue; Ray health-checks and replaces them.")] = "local",
    replicas: Annotated[int, typer.Option("--replicas", min=1,
                                          help="Ray replicas (--engine ray).")] = 1,
    autoscale: Annotated[str | None, typer.Option(
        "--autoscale", metavar="MIN,MAX",
        help="Let Ray scale between MIN and MAX replicas on --target-ongoing (--engine ray; "
        "overrides --replicas).")] = None,
    target_ongoing: Annotated[float, typer.Option(
        "--target-ongoing", min=0.001,
        help="Requests in flight per replica Ray's autoscaler aims at.")] = 16.0,
    router: Annotated[str, typer.Option(
        "--router", metavar="slack-aware|default",
        help="How Ray picks a replica: slack-aware (least expected wait in ms) or Ray's "
        "default power of two choices on queue length.")] = "slack-aware",
    pin_cores: Annotated[str | None, typer.Option(
        "--pin-cores", metavar="0,1,...",
        help="Cores Ray replicas pin themselves to, one per core while free (--engine ray).")
    ] = None,
) -> None:
    """Serve a checkpoint over the Open Inference Protocol (KServe v2 / Triton HTTP): one
    SuperNet in memory, the SubNet and batch size chosen per batch by the policy (SlackFit by
    default) from the latency profile, measured once and saved beside the checkpoint.

    Deployment: the candidate SubNets (--deploy FRONTIER.json, else --num-subnets spread in
    MACs) minus any that another beats in both accuracy and batch-1 latency on this machine.

    Startup: the HTTP server is up at once; /v2/health/live is 200 and /v2/health/ready 503
    until BN recalibration, test accuracy and profiling (progress bars on stderr) are done.
    Their results are saved beside the checkpoint (CKPT.subnet-stats.pt, CKPT.profile.json,
    CKPT.onnxruntime/), so the next start is ready in seconds.

    Requests may set "parameters": {"slo_ms": 50}; answers say which SubNet served them.
    Ctrl-C drains in-flight requests, then exits. Subcommands: profile, simulate, runtime.

    Scale out (--engine ray): N Ray Serve replicas (or --autoscale MIN,MAX), each holding
    the stack with --threads (default 1) threads, behind the same endpoints.

    Example:

        weightshare serve --checkpoint runs/deps/checkpoint.pt --executor auto --slo-ms 100
        weightshare serve -c runs/deps/checkpoint.pt --engine ray --replicas 2
    """
    if ctx.invoked_subcommand is not None:
        return
    if checkpoint is None:
        typer.echo(ctx.get_help())
        fail("--checkpoint is required to serve (or name a subcommand)")
    import threading

    import uvicorn

    from ..checkpoint import load_checkpoint
    from ..serve.metrics import ServeMetrics
    from ..serve.policies import make_policy
    from ..serve.server import ServerConfig, WorkerSlot, create_app
    from ..serve.stack import Stack, build_stack
    from ..serve.worker import InferenceWorker

    if host not in ("127.0.0.1", "localhost", "::1"):
        _log(f"warning: binding {host}: the server is reachable from other machines"
             + ("" if token else " without a token"))
    # Everything a user can get wrong fails here, before the server starts.
    cfg = stack_config(
        checkpoint, policy=policy, deploy=deploy, num_subnets=num_subnets, dataset=dataset,
        data_dir=data_dir, test_subset=test_subset, profile=profile, max_batch=max_batch,
        threads=threads, switch_mode=switch_mode, executor=executor,
        ort_memory_budget_mb=ort_memory_budget_mb,
        ort_cache_dir=str(ort_cache_dir) if ort_cache_dir else None,
        keep_dominated=keep_dominated, show_progress=True)
    chosen_policy = make_policy(policy)
    if engine != "local":
        _serve_on_engine(engine, cfg, ServerConfig(
            model_name=model_name, slo_ms=slo_ms, max_request_batch=max_batch, token=token,
            info={"checkpoint": str(checkpoint), "executor": executor, "engine": engine}),
            replicas=replicas, autoscale=autoscale, target_ongoing=target_ongoing,
            router=router, pin_cores=pin_cores, host=host, port=port, threads=threads,
            queue_size=queue_size)
        return
    net = load_checkpoint(checkpoint).supernet
    metrics = ServeMetrics()
    slot = WorkerSlot(stage="loading the deployment")
    app_ = create_app(slot, net.input_shape(), int(net.num_classes),
                      ServerConfig(model_name=model_name, slo_ms=slo_ms,
                                   max_request_batch=max_batch, token=token,
                                   info={"checkpoint": str(checkpoint), "executor": executor}),
                      metrics)
    server = uvicorn.Server(uvicorn.Config(app_, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=30))
    stacks: list[Stack] = []

    def start() -> None:
        try:
            slot.stage = "BN recalibration, test accuracy and profiling (see the server log)"
            stack = build_stack(cfg, log=_log, policy=chosen_policy, net=net)
            stacks.append(stack)
            # The server's own time per request and batch, so the policy plans with the
            # whole request path, not model time only (weightshare.serve.overhead).
            from ..serve.overhead import measure_request_overhead

            overhead = measure_request_overhead(net.input_shape(), int(net.num_classes),
                                                max_batch=max_batch)
            stack.policy.set_overhead(overhead)
            _log(f"request path: {overhead.arrival_ms:.3f} ms per arrival, "
                 f"{overhead.answer_ms:.3f} ms per answer, {overhead.batch_ms:.3f} ms per "
                 "batch (measured; the policy plans with them)")
            worker = InferenceWorker(stack.backend, stack.policy, stack.profile,
                                     queue_capacity=queue_size, metrics=metrics)
            stack.on_profile(worker.update_profile)
            for s in stack.profile.subnets:
                _log(f"  {s.name}: {fmt_count(s.macs)} MACs, {s.acc:.2f} %, "
                     f"{stack.profile.latency_ms(s.name, 1, 'median'):.2f} ms at batch 1 "
                     f"({stack.executor.path(s.name)})")
            frontier = stack.profile.meta.get("frontier", {})
            for d in frontier.get("dropped", []):
                _log(f"  dropped {d['candidate']}: dominated by {d['dominated_by']} "
                     f"({d['reason']})")
            for d in frontier.get("dropped_after_executor", []):
                _log(f"  dropped {d['name']}: dominated by {d['dominated_by']} "
                     f"({d['reason']})")
            slot.attach(worker)
            _log(f"ready: serving {model_name!r} with {stack.policy.describe()} "
                 f"(executor {executor}) on http://{host}:{port}/v2")
        except Exception as err:  # report it, fail liveness, and stop the server
            slot.fail(f"{type(err).__name__}: {err}")
            _log(f"error: startup failed: {type(err).__name__}: {err}")
            server.should_exit = True

    _log(f"listening on http://{host}:{port}/v2 (live now, ready once the deployment is up)")
    threading.Thread(target=start, name="weightshare-startup", daemon=True).start()
    try:
        server.run()
    finally:
        for stack in stacks:
            stack.close()
    if slot.error is not None:
        fail("the server stopped: its startup failed (error above)")


def _serve_on_engine(engine: str, cfg: Any, server_cfg: Any, *, replicas: int,
                     autoscale: str | None, pin_cores: str | None, threads: int | None,
                     **kw: Any) -> None:
    """`serve --engine ray`: Ray Serve replicas (weightshare.serve.ray_engine)."""
    if engine != "ray":
        fail(f"unknown --engine {engine!r}; choose local or ray")
    try:
        from ..serve.ray_engine import RayEngineConfig, parse_autoscale, serve_forever
    except ImportError as err:
        fail(f"--engine ray needs Ray Serve: pip install 'weightshare[ray]' ({err})")
    try:
        cores = tuple(int(c) for c in pin_cores.split(",")) if pin_cores else ()
    except ValueError:
        fail(f"--pin-cores must be core numbers separated by commas, got {pin_cores!r}")
    serve_forever(cfg, server_cfg, RayEngineConfig(
        replicas=replicas, autoscale=parse_autoscale(autoscale) if autoscale else None,
        target_ongoing_requests=kw.pop("target_ongoing"), threads=threads or 1,
        pin_cores=cores, **kw), log=_log)


@serve_app.command("serving-profile")
def serve_profile(
    checkpoint: ServeCheckpointOpt,
    deploy: ServeDeployOpt = None,
    num_subnets: ServeNumSubnetsOpt = 6,
    dataset: ServeDatasetOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    test_subset: ServeTestSubsetOpt = None,
    profile: ServeProfileOpt = None,
    max_batch: ServeMaxBatchOpt = 32,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per batch size.")] = 20,
    threads: ServeThreadsOpt = None,
    keep_dominated: ServeKeepDominatedOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the latency profile the scheduler plans with: every deployed SubNet at batch
    sizes 1, 2, 4, ... up to --max-batch (median and p99), the time to load each as a
    separate model from disk, and the SubNetAct switch cost; saved as JSON with the machine,
    thread count and checkpoint identity (`serve` reuses it while they match). Candidates
    dominated in (accuracy, batch-1 latency) are dropped unless --keep-dominated.

    Formerly `weightshare serve profile` (that name still works for one release).

    Example:

        weightshare serve serving-profile -c runs/deps/checkpoint.pt --max-batch 32 --threads 2
    """
    from ..serve.stack import build_stack

    stack = build_stack(stack_config(
        checkpoint, deploy=deploy, num_subnets=num_subnets, dataset=dataset, data_dir=data_dir,
        test_subset=test_subset, profile=profile, reprofile=True, max_batch=max_batch,
        profile_runs=runs, threads=threads, keep_dominated=keep_dominated,
        show_progress=not as_json), log=_log)
    p = stack.profile
    if as_json:
        emit_json({"path": str(stack.profile_path), **p.to_dict()})
        return
    sizes = p.batch_sizes
    typer.echo(f"{'SubNet':<7} {'MACs':>9} {'acc %':>6} {'load ms':>8}  "
               + "  ".join(f"b{b:<3} ms" for b in sizes) + "   (median)")
    for s in p.subnets:
        typer.echo(f"{s.name:<7} {fmt_count(s.macs):>9} {s.acc:6.2f} "
                   f"{p.load_ms.get(s.name, float('nan')):8.2f}  "
                   + "  ".join(f"{v:7.2f}" for v in p.median_ms[s.name]))
    typer.echo(f"SubNetAct switch cost: {p.switch_us:.1f} us; "
               f"{p.meta.get('threads')} threads; saved {stack.profile_path}")


add_deprecated_alias(serve_app, "weightshare serve profile", "weightshare serve serving-profile",
                     serve_profile)


@serve_app.command("simulate")
def serve_simulate(
    profile: Annotated[Path, typer.Option("--profile", "-p", metavar="FILE.json",
                                          help="Profile from `serve serving-profile`.")],
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", help="Policy to simulate; repeatable (default: slackfit, "
                     "maxacc, infaas, fixed:smallest, fixed:largest)."),
    ] = None,
    trace: Annotated[
        list[str] | None,
        typer.Option("--trace", help="Trace spec, e.g. gamma:rate=200,cv2=8,duration=30 or "
                     "azure:minutes=10; repeatable (default: gamma cv2=4 at 80% of the "
                     "smallest SubNet's peak throughput)."),
    ] = None,
    slo_ms: ServeSloOpt = 100.0,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1)] = 512,
    jitter: Annotated[float, typer.Option("--jitter", min=0.0, max=0.99,
                                          help="Random +-fraction on each batch's time.")
                      ] = 0.0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Simulate serving on a virtual clock: the same policy objects, the profile's latencies
    and a trace; reports SLO attainment, mean served accuracy, throughput, p50/p99 latency
    and drops per (trace, policy). Deterministic for a given seed.

    Example:

        weightshare serve simulate -p ckpt.pt.profile.json --trace gamma:rate=300,cv2=8 --slo-ms 50
    """
    from ..serve.policies import make_policy
    from ..serve.profile import Profile
    from ..serve.simulate import SimConfig, simulate
    from ..serve.traces import make_trace

    prof = Profile.load(profile)
    policies = policy or ["slackfit", "maxacc", "infaas", "fixed:smallest", "fixed:largest"]
    if not trace:
        small = prof.subnets[0].name
        peak = max(b * 1000.0 / prof.latency_ms(small, b, "median") for b in prof.batch_sizes)
        trace = [f"gamma:rate={0.8 * peak:.0f},cv2=4,duration=30,seed={seed}"]
    cfg = SimConfig(slo_ms=slo_ms, queue_capacity=queue_size, jitter=jitter, seed=seed)
    rows = []
    for spec in trace:
        tr = make_trace(spec)
        for name in policies:
            res = simulate(make_policy(name), prof, tr, cfg)
            rows.append({"trace": spec, "policy": name, "requests": len(tr), **res.summary,
                         "model_loads": res.loads})
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"{'trace':<36} {'policy':<16} {'SLO %':>6} {'acc %':>6} {'rps':>7} "
               f"{'p50 ms':>7} {'p99 ms':>7} {'drops':>6}")
    for r in rows:
        typer.echo(f"{r['trace'][:36]:<36} {r['policy'][:16]:<16} "
                   f"{100 * r['slo_attainment']:6.2f} {r['mean_acc']:6.2f} "
                   f"{r['throughput_rps']:7.1f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} "
                   f"{r['dropped'] + r['rejected']:6d}")


@serve_app.command("runtime")
def serve_runtime(
    checkpoint: ServeCheckpointOpt,
    deploy: ServeDeployOpt = None,
    num_subnets: ServeNumSubnetsOpt = 6,
    dataset: ServeDatasetOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    test_subset: ServeTestSubsetOpt = None,
    profile: ServeProfileOpt = None,
    max_batch: ServeMaxBatchOpt = 32,
    threads: ServeThreadsOpt = None,
    executor: ServeExecutorOpt = "torch",
    ort_memory_budget_mb: ServeOrtBudgetOpt = None,
    keep_dominated: ServeKeepDominatedOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Report the SubNetAct runtime: bytes held for all deployed SubNets in one SuperNet vs
    the same SubNets as separate extracted models, and what the executor adds (--executor:
    torch plan copies, or each onnxruntime session's bytes, built before reporting), the
    switch cost between SubNets (µs) and the cost of loading an extracted model from disk.

    Example:

        weightshare serve runtime -c runs/deps/checkpoint.pt --json
    """
    import tempfile

    from ..serve.runtime import ExtractedModelStore
    from ..serve.stack import build_stack

    stack = build_stack(stack_config(
        checkpoint, deploy=deploy, num_subnets=num_subnets, dataset=dataset, data_dir=data_dir,
        test_subset=test_subset, profile=profile, max_batch=max_batch, threads=threads,
        executor=executor, ort_memory_budget_mb=ort_memory_budget_mb, ort_background=False,
        keep_dominated=keep_dominated), log=_log)
    stack.wait_executor()
    rt = stack.runtime
    mem = rt.memory()
    switch = rt.measure_switch_us()
    with tempfile.TemporaryDirectory() as tmp:
        store = ExtractedModelStore.from_runtime(rt, tmp)
        load_ms = {n: store.measure_load_ms(n, runs=5) for n in rt.names}
    report = {"memory": mem, "switch": switch, "load_ms": load_ms,
              "deployed": [s.to_dict() for s in stack.profile.subnets]}
    if as_json:
        emit_json(report)
        return
    typer.echo(f"SubNetAct: {mem['subnetact_bytes']:,} bytes (SuperNet "
               f"{mem['supernet_bytes']:,} + per-SubNet BN {mem['subnet_norm_bytes']:,}) for "
               f"{len(rt.names)} SubNets")
    ex = mem["executor"]
    typer.echo(f"executor {stack.executor_name}: +{ex['extra_bytes']:,} bytes "
               f"({mem['executor_total_bytes']:,} in all)"
               + (f"; sessions {ex['session_bytes']:,} bytes, on torch: "
                  f"{sorted(ex['on_torch']) or 'none'}" if "sessions" in ex else ""))
    typer.echo(f"separate models: {mem['separate_total_bytes']:,} bytes "
               f"({mem['ratio_separate_over_subnetact']:.2f}x); process RSS "
               f"{(mem['rss_bytes'] or 0) / 2**20:.0f} MiB")
    typer.echo(f"switch {switch['from']} -> {switch['to']}: {switch['switch_us']:.1f} us "
               f"(run after switch {switch['run_after_switch_us']:.0f} us, same SubNet "
               f"{switch['run_same_us']:.0f} us; slicing overhead vs extracted "
               f"{switch['slicing_overhead_us']:.0f} us)")
    typer.echo("load from disk: " + ", ".join(f"{n} {v:.1f} ms" for n, v in load_ms.items()))


@app.command()
def loadtest(
    url: Annotated[str, typer.Option("--url", help="Server base URL.")] = "http://127.0.0.1:8000",
    model_name: Annotated[str, typer.Option("--model-name")] = "weightshare",
    trace: Annotated[str, typer.Option(
        "--trace", help="Trace spec: poisson:rate=R,duration=S | gamma:rate=R,cv2=C,duration=S | "
        "varying:rates=A/B/C,segment=S | azure:minutes=M,scale=X,seconds_per_minute=S.")
    ] = "poisson:rate=20,duration=10",
    slo_ms: ServeSloOpt = 100.0,
    token: Annotated[str | None, typer.Option("--token", envvar="WEIGHTSHARE_TOKEN")] = None,
    max_requests: Annotated[int, typer.Option("--max-requests", min=1)] = 10_000,
    max_seconds: Annotated[float, typer.Option("--max-seconds", min=0.1)] = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Replay a trace against an Open Inference Protocol server, open loop (each request sent
    at its time regardless of earlier answers), each with its SLO; report SLO attainment,
    mean served accuracy, throughput, p50/p99 latency and drops. Bounded by --max-requests
    and --max-seconds.

    Example:

        weightshare loadtest --url http://127.0.0.1:8000 --trace gamma:rate=50,cv2=4,duration=20
    """
    import httpx

    from ..serve.loadgen import LoadConfig, run_load_sync
    from ..serve.traces import make_trace

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        meta = httpx.get(f"{url.rstrip('/')}/v2/models/{model_name}", headers=headers,
                         timeout=10).raise_for_status().json()
    except httpx.HTTPError as err:
        raise ValueError(f"cannot read model {model_name!r} from {url}: {err}") from None
    shape = tuple(int(s) for s in meta["inputs"][0]["shape"][1:])
    tr = make_trace(trace)
    res = run_load_sync(tr, LoadConfig(url=url, model_name=model_name, slo_ms=slo_ms,
                                       input_shape=shape, token=token,
                                       max_requests=max_requests, max_seconds=max_seconds))
    s = res.summary
    if as_json:
        emit_json({"trace": trace, **res.to_dict()})
        return
    typer.echo(f"{s['requests']} requests ({trace}), SLO {slo_ms:g} ms")
    typer.echo(f"SLO attainment {100 * s['slo_attainment']:.2f} %, mean served accuracy "
               f"{s['mean_acc']:.2f} %, throughput {s['throughput_rps']:.1f} req/s")
    typer.echo(f"latency p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms; dropped/late "
               f"{s['dropped'] + s['late']}, rejected {s['rejected']}, errors {s['errors']}")
    typer.echo(f"SubNets: {s['subnets']}  HTTP: {res.statuses}")
