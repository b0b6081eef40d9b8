"""Executors: what runs one batch of one deployed SubNet, chosen per deployment by name.

The runtime (`SubNetActRuntime`) owns the SuperNet's weights and per-SubNet BN
statistics; an executor turns "run SubNet s on this batch" into compute. Each
is registered by name (`@register_executor`), so the server, the stack and the
CLI look them up instead of branching, and a new engine plugs in here:

- ``torch``: the elastic forward on the one copy of the weights, made cheap
  per call. At deploy time each SubNet gets a *plan*: a flat list of ops with
  every weight slice bound once, in channels-last layout. Every 1x1 conv (nearly
  all the bytes) runs as a matmul on the NHWC view with its weight a (strided)
  view of the SuperNet's, never a copy; the only copies are the SubNet's
  transformed depthwise kernels and the stem, computed once with BN folded in
  (reported as the plan's bytes). Per call the plan only checks a weight
  fingerprint (rebuilt if any source tensor changed) and runs the ops.
  SuperNets without a planner (`register_planner`) run `net(x, subnet)`.
- ``onnxruntime``: per deployed SubNet an `onnxruntime.InferenceSession` over
  its exported graph (`weightshare.export.export_onnx`) with all graph
  optimisations, built in a background thread at deploy time and cached on
  disk by (checkpoint SHA-256, SubNet and its BN statistics, executor,
  onnxruntime version, CPU, threads), so a restart loads instead of
  rebuilding. The optimisations copy the initialisers (layout transforms and
  fusions), so every session costs memory: a budget caps it, and any SubNet
  without a built session is served by the ``torch`` plan. No request waits
  for a build: `run` only looks a session up.
- ``auto``: the same sessions, but each SubNet is routed to whichever path was
  measured faster for it on this machine (see `route`), recorded in the profile.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import atomic_path, atomic_write_text
from ..models import SuperNet
from ..registry import Registry
from ..space import SubnetConfig

if TYPE_CHECKING:
    from ..models.mobilenetv3 import OFAMobileNetV3

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorConfig",
    "OnnxRuntimeExecutor",
    "TorchExecutor",
    "list_executors",
    "make_executor",
    "register_executor",
    "session_cache_key",
]

ORT_PROVIDER = "CPUExecutionProvider"


# ------------------------------------------------------------------ interface
class Executor(Protocol):
    """Runs batches of deployed SubNets (by name) on one runtime's weights."""

    name: str

    def run(self, batch: Tensor, subnet: str) -> Tensor: ...

    def path(self, subnet: str) -> str:
        """Which engine serves `subnet` right now ("torch" or "onnxruntime")."""
        ...

    def memory(self) -> dict[str, Any]:
        """Bytes this executor holds on top of the runtime's SuperNet."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecutorConfig:
    """How an executor is built for a deployment.

    ort_memory_budget_mb: most megabytes of optimised onnxruntime sessions (None: no cap,
        0: none at all, every SubNet on the torch plan).
    cache_dir: where built sessions are kept (default: beside the checkpoint).
    checkpoint_sha256: identity of the weights, part of every cache key.
    threads: intra-op threads of each session (None: torch's current count).
    exporter: the ONNX exporter used for a cache miss ("torchscript" takes seconds per
        SubNet, "dynamo" tens of seconds; both are verified against PyTorch).
    background: build missing sessions in a background thread (False: before returning,
        for tests and benchmarks).
    """

    ort_memory_budget_mb: float | None = None
    cache_dir: str | None = None
    checkpoint_sha256: str = ""
    threads: int | None = None
    exporter: str = "torchscript"
    background: bool = True

    def __post_init__(self) -> None:
        if self.ort_memory_budget_mb is not None and self.ort_memory_budget_mb < 0:
            raise ValueError(f"ort_memory_budget_mb must be >= 0, got {self.ort_memory_budget_mb}")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.exporter not in ("torchscript", "dynamo"):
            raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {self.exporter!r}")


ExecutorFactory = Callable[[SuperNet, dict[str, SubnetConfig], ExecutorConfig], Executor]
EXECUTORS: Registry[ExecutorFactory] = Registry("executor")


def register_executor(name: str) -> Callable[[ExecutorFactory], ExecutorFactory]:
    return EXECUTORS.register(name)


def list_executors() -> list[str]:
    return EXECUTORS.names()


def make_executor(name: str, net: SuperNet, subnets: dict[str, SubnetConfig],
                  config: ExecutorConfig | None = None) -> Executor:
    """The executor registered as `name` for `subnets` (deployed name -> config) on `net`."""
    return EXECUTORS.get(name)(net, subnets, config or ExecutorConfig())


def _bytes(tensors: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------- torch plans
@dataclass
class _Plan:
    """One SubNet's forward as bound ops, plus what it was derived from."""

    forward: Callable[[Tensor], Tensor]
    sources: tuple[tuple[Any, Any], ...]  # (module or dict, attribute or key) read when building
    signature: tuple[int, ...]
    copied: list[Tensor] = field(default_factory=list)  # tensors the plan owns (bytes held)


def _signature(sources: Sequence[tuple[Any, Any]]) -> tuple[int, ...]:
    # Identity and in-place version of every source tensor: an optimiser step, copy_,
    # load_state_dict or .to() changes one of them, and the plan is rebuilt on the next call.
    out: list[int] = []
    for owner, attr in sources:
        t = owner.get(attr) if isinstance(owner, dict) else getattr(owner, attr)
        if t is None or isinstance(t, dict):  # a SubNet's statistics replaced or removed
            out.append(id(t))
        elif isinstance(t, tuple):  # per-SubNet BN statistics (mean, var)
            out.extend((id(t[0]), t[0]._version, id(t[1]), t[1]._version))
        else:
            out.extend((id(t), t._version))
    return tuple(out)


Planner = Callable[[SuperNet, SubnetConfig], _Plan]
PLANNERS: dict[type, Planner] = {}


def register_planner(cls: type) -> Callable[[Planner], Planner]:
    def deco(fn: Planner) -> Planner:
        PLANNERS[cls] = fn
        return fn

    return deco


def _planner_for(net: SuperNet) -> Planner:
    for cls in type(net).__mro__:
        if cls in PLANNERS:
            return PLANNERS[cls]
    return _elastic_plan


def _elastic_plan(net: SuperNet, cfg: SubnetConfig) -> _Plan:
    """Any SuperNet: its own elastic forward (nothing cached, nothing to go stale)."""
    return _Plan(lambda x: net(x, cfg), (), ())


# Plans run channels-last: 1x1 convs become plain matmuls on the NHWC view (below), and
# depthwise convs in this layout measured faster at batch 16 on CPU.
LAYOUT = torch.channels_last

_ACT_INPLACE: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": lambda t: F.relu(t, inplace=True),
    "hswish": lambda t: F.hardswish(t, inplace=True),
    "hsigmoid": lambda t: F.hardsigmoid(t, inplace=True),
    "identity": lambda t: t,
}


def _register_mbv3() -> None:
    from ..models.mobilenetv3 import OFAMobileNetV3
    from ..nn import ElasticBatchNorm2d

    @register_planner(OFAMobileNetV3)
    def mbv3_plan(net: OFAMobileNetV3, cfg: SubnetConfig) -> _Plan:
        stats = net.subnet_norms.get(cfg) or {}
        sources: list[tuple[Any, Any]] = [(net.subnet_norms, cfg)]
        copied: list[Tensor] = []

        def bn_terms(bn: ElasticBatchNorm2d, c: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            sources.extend([(bn, "weight"), (bn, "bias"), (bn, "running_mean"),
                            (bn, "running_var")])
            if bn.key in stats:
                sources.append((stats, bn.key))
                mean, var = stats[bn.key]
            else:
                mean, var = bn.running_mean[:c], bn.running_var[:c]
            return bn.weight[:c], bn.bias[:c], mean, var

        def fold(w: Tensor, bn: ElasticBatchNorm2d, c: int) -> tuple[Tensor, Tensor]:
            """BN folded into a copy of a (small) conv weight: one op instead of two."""
            g, b, mean, var = bn_terms(bn, c)
            scale = g / torch.sqrt(var + bn.eps)
            shape = (-1,) + (1,) * (w.dim() - 1)
            fw = (w * scale.view(shape)).contiguous(memory_format=LAYOUT)
            fb = (b - mean * scale).contiguous()
            copied.extend([fw, fb])
            return fw, fb

        def conv_bn(conv: Any, w: Tensor, bn: ElasticBatchNorm2d, c: int, stride: int,
                    groups: int, act: str) -> Callable[[Tensor], Tensor]:
            sources.append((conv, "weight"))
            k = w.shape[-1]
            a = _ACT_INPLACE[act]
            if k == 1 and groups == 1 and stride == 1:
                # A 1x1 conv on channels-last memory is one matmul over (N*H*W, C): F.linear on
                # the NHWC view, the weight a view of the SuperNet's even when strided (a
                # narrower input width), so the 1x1 convs -- nearly all the weights -- are never
                # copied. BN stays its own op on views (folding would copy the weight).
                g, b, mean, var = bn_terms(bn, c)
                eps = bn.eps
                w2 = w[:, :, 0, 0]
                return lambda x: a(F.batch_norm(
                    F.linear(x.permute(0, 2, 3, 1), w2).permute(0, 3, 1, 2), mean, var, g, b,
                    False, 0.0, eps))
            # Stem and depthwise kernels: small, and the transformed ones are computed anyway,
            # so BN is folded into a copy (one op instead of two).
            fw, fb = fold(w, bn, c)
            return lambda x: a(F.conv2d(x, fw, fb, stride, k // 2, 1, groups))

        ops: list[Callable[[Tensor], Tensor]] = []
        ops.append(conv_bn(net.stem, net.stem.weight, net.stem_bn, net.stem_w, net.stem_stride,
                           1, "hswish"))
        blocks = [(net.first_block, 1, 3)] + [(net.units[u][i], e, k)
                                              for u, i, e, k in cfg.unit_blocks()]
        for block, expand, kernel in blocks:
            hidden = block.hidden_channels(expand)
            parts: list[Callable[[Tensor], Tensor]] = []
            if block.has_expand:
                parts.append(conv_bn(block.expand_conv, block.expand_conv.weight[:hidden],
                                     block.expand_bn, hidden, 1, 1, block.act))
            sources.append((block.dw, "weight"))
            sources.extend((block.dw.transforms, t) for t in block.dw.transforms)
            with torch.no_grad():
                dw_w = block.dw.kernel_weight(hidden, kernel)
            parts.append(conv_bn(block.dw, dw_w, block.dw_bn, hidden, block.stride, hidden,
                                 block.act))
            if block.se is not None:
                se = block.se
                mid = se.mid_channels(hidden)
                sources.extend([(se.reduce, "weight"), (se.reduce, "bias"),
                                (se.expand, "weight"), (se.expand, "bias")])
                # Strided views of the 1x1 SE weights used as matrices: no copy.
                rw = se.reduce.weight[:mid, :hidden, 0, 0]
                rb = se.reduce.bias[:mid]
                ew = se.expand.weight[:hidden, :mid, 0, 0]
                eb = se.expand.bias[:hidden]

                def se_op(h: Tensor, rw=rw, rb=rb, ew=ew, eb=eb) -> Tensor:
                    y = F.relu(F.linear(h.mean((2, 3)), rw, rb), inplace=True)
                    y = F.hardsigmoid(F.linear(y, ew, eb), inplace=True)
                    return h * y[:, :, None, None]

                parts.append(se_op)
            pw = block.project.weight[:, :hidden]
            parts.append(conv_bn(block.project, pw, block.project_bn, block.out_channels, 1, 1,
                                 "identity"))
            ops.append(_chain(parts, block.residual))
        ops.append(conv_bn(net.final_expand, net.final_expand.weight, net.final_bn, net.final_w,
                           1, 1, "hswish"))
        sources.extend([(net.feature_mix, "weight"), (net.classifier, "weight"),
                        (net.classifier, "bias")])
        mix = net.feature_mix.weight[:, :, 0, 0]
        cw, cb = net.classifier.weight, net.classifier.bias

        def head(x: Tensor) -> Tensor:
            return F.linear(F.hardswish(F.linear(x.mean((2, 3)), mix), inplace=True), cw, cb)

        ops.append(head)
        ops_t = tuple(ops)

        def forward(x: Tensor) -> Tensor:
            x = x.contiguous(memory_format=LAYOUT)
            for op in ops_t:
                x = op(x)
            return x

        return _Plan(forward, tuple(sources), _signature(sources), copied)


def _chain(parts: Sequence[Callable[[Tensor], Tensor]], residual: bool
           ) -> Callable[[Tensor], Tensor]:
    parts = tuple(parts)
    if residual:
        def block(x: Tensor) -> Tensor:
            h = x
            for p in parts:
                h = p(h)
            return h.add_(x)
    else:
        def block(x: Tensor) -> Tensor:
            for p in parts:
                x = p(x)
            return x
    return block


_register_mbv3()


@register_executor("torch")
class TorchExecutor:
    """The elastic forward with each deployed SubNet's plan built once (see module doc)."""

    name = "torch"

    def __init__(self, net: SuperNet, subnets: dict[str, SubnetConfig],
                 config: ExecutorConfig | None = None) -> None:
        self.net = net
        self.subnets = dict(subnets)
        self._planner = _planner_for(net)
        self._lock = threading.Lock()
        self._plans: dict[str, _Plan] = {}
        self.rebuilds = 0
        for name in self.subnets:
            self._plans[name] = self._build(name)

    def _build(self, name: str) -> _Plan:
        with torch.no_grad():
            return self._planner(self.net, self.subnets[name])

    def plan(self, name: str) -> _Plan:
        try:
            plan = self._plans[name]
        except KeyError:
            raise ValueError(f"no deployed SubNet {name!r}; deployed: {list(self.subnets)}"
                             ) from None
        if plan.signature != _signature(plan.sources):
            with self._lock:  # weights changed since deploy: rebuild this SubNet's plan once
                plan = self._plans[name]
                if plan.signature != _signature(plan.sources):
                    plan = self._plans[name] = self._build(name)
                    self.rebuilds += 1
        return plan

    def invalidate(self) -> None:
        """Rebuild every plan now (after replacing weights in a way versions cannot see)."""
        with self._lock:
            self._plans = {n: self._build(n) for n in self.subnets}

    def run(self, batch: Tensor, subnet: str) -> Tensor:
        plan = self.plan(subnet)
        with torch.inference_mode():
            return plan.forward(batch)

    def path(self, subnet: str) -> str:
        return "torch"

    def memory(self) -> dict[str, Any]:
        per = {n: _bytes(p.copied) for n, p in self._plans.items()}
        return {"executor": self.name, "extra_bytes": sum(per.values()),
                "plan_copied_bytes": per}

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ onnxruntime
def _ort() -> Any:
    import onnxruntime as ort

    return ort


def _cpu() -> str:
    from ..timing import machine_identity

    return str(machine_identity()["cpu"])


def session_cache_key(checkpoint_sha256: str, net: SuperNet, subnet: SubnetConfig,
                      executor: str, threads: int) -> str:
    """Hex key of one SubNet's optimised session: the weights, the SubNet and its BN statistics,
    the executor, the onnxruntime version, the CPU (optimised graphs are layout-specific) and
    the thread count."""
    h = hashlib.sha256()
    h.update(json.dumps({"checkpoint": checkpoint_sha256, "subnet": subnet.to_dict(),
                         "executor": executor, "onnxruntime": _ort().__version__,
                         "cpu": _cpu(), "threads": threads}, sort_keys=True).encode())
    # Statistics recalibrated at startup are not in the checkpoint file: hash them too.
    for key, (m, v) in sorted((net.subnet_norms.get(subnet) or {}).items()):
        h.update(key.encode())
        h.update(m.detach().cpu().numpy().tobytes())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass
class SessionInfo:
    """One built session and what it cost."""

    session: Any
    input_name: str
    output_name: str
    file_bytes: int
    rss_delta_bytes: int | None
    build_s: float
    cache_hit: bool

    def __post_init__(self) -> None:
        self.outputs = [self.output_name]


class OnnxRuntimeExecutor:
    """onnxruntime sessions per SubNet within a memory budget, the torch plan for the rest."""

    name = "onnxruntime"

    def __init__(self, net: SuperNet, subnets: dict[str, SubnetConfig],
                 config: ExecutorConfig | None = None, *, mode: str = "onnxruntime",
                 log: Callable[[str], None] = lambda _: None) -> None:
        if mode not in ("onnxruntime", "auto"):
            raise ValueError(f"mode must be 'onnxruntime' or 'auto', got {mode!r}")
        self.mode = mode  # auto: the stack routes each SubNet to its measured-faster path
        self.net, self.subnets = net, dict(subnets)
        self.config = cfg = config or ExecutorConfig()
        self.log = log
        self.torch = TorchExecutor(net, subnets)
        self.threads = cfg.threads or torch.get_num_threads()
        budget = cfg.ort_memory_budget_mb
        self.budget_bytes = None if budget is None else int(budget * 2**20)
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
        self.sessions: dict[str, SessionInfo] = {}
        self.skipped: dict[str, str] = {}  # SubNet -> why it has no session
        # Routing: SubNet -> "onnxruntime" | "torch" when it has a session (auto may prefer
        # torch where it was measured faster); read per call without a lock (dict get).
        self.route: dict[str, str] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._used = 0

    # ------------------------------------------------------------- building
    def on_session(self, fn: Callable[[str], None]) -> None:
        """Call `fn(subnet)` from the builder thread each time a session becomes usable."""
        self._listeners.append(fn)

    def start(self, order: Sequence[str] | None = None) -> OnnxRuntimeExecutor:
        """Load cached sessions now; build the missing ones (background unless configured off).

        Sessions load smallest model first, so a budget holds as many SubNets as it can.
        """
        names = list(order or sorted(self.subnets, key=self._estimate))
        hits = [n for n in names if self._cached(n) is not None]
        for n in hits:  # cheap (no export): done before the server says it is ready
            self._add(n)
        missing = [n for n in names if n not in self.sessions and n not in self.skipped]
        if not missing:
            return self
        if self.config.background:
            self._thread = threading.Thread(target=self._build_all, args=(missing,),
                                            name="weightshare-ort-build", daemon=True)
            self._thread.start()
        else:
            self._build_all(missing)
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background builds; True when none is left running."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _estimate(self, name: str) -> int:
        from .memory import module_bytes

        return module_bytes(self.net.extract(self.subnets[name]))

    def _build_all(self, names: Sequence[str]) -> None:
        for n in names:
            if self._stop.is_set():
                return
            try:
                self._add(n)
            except Exception as err:  # a SubNet that cannot be built stays on torch
                self.skipped[n] = f"build failed: {type(err).__name__}: {err}"
                self.log(f"onnxruntime: {n} stays on the torch path ({self.skipped[n]})")

    def _paths(self, name: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        key = session_cache_key(self.config.checkpoint_sha256, self.net, self.subnets[name],
                                self.name, self.threads)
        return self.cache_dir / f"{key}.ort.onnx", self.cache_dir / f"{key}.json"

    def _cached(self, name: str) -> Path | None:
        paths = self._paths(name)
        return paths[0] if paths is not None and paths[0].is_file() else None

    def _options(self, optimized_out: Path | None = None) -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if optimized_out is not None:
            so.optimized_model_filepath = str(optimized_out)
        return so

    def _open(self, model: Path, optimized_out: Path | None = None) -> tuple[Any, int | None]:
        """A session over `model`, warmed up with one batch; and the RSS it added (bytes)."""
        from .memory import rss_bytes

        rss0 = rss_bytes()
        session = _ort().InferenceSession(str(model), self._options(optimized_out),
                                          providers=[ORT_PROVIDER])
        inp = session.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        # The first run allocates and pre-packs; pay it here, not on a request.
        session.run(None, {inp.name: np.zeros(shape, dtype=np.float32)})
        rss1 = rss_bytes()
        return session, None if rss0 is None or rss1 is None else max(0, rss1 - rss0)

    def _over_budget(self, name: str, size: int, what: str) -> bool:
        if self.budget_bytes is None or self._used + size <= self.budget_bytes:
            return False
        self.skipped[name] = (f"memory budget: its {what} {size / 2**20:.3f} MiB would exceed "
                              f"{self.budget_bytes / 2**20:.3f} MiB "
                              f"({self._used / 2**20:.3f} MiB used)")
        self.log(f"onnxruntime: {name} stays on the torch path ({self.skipped[name]})")
        return True

    def _add(self, name: str) -> None:
        cached = self._cached(name)
        # Before any work: the cached graph's exact size, else the SubNet's weights (a lower
        # bound: optimised graphs hold re-laid-out copies, so the built size is checked too).
        if self._over_budget(name, cached.stat().st_size if cached else self._estimate(name),
                             "session" if cached else "weights alone"):
            return
        t0 = time.perf_counter()
        session, hit, file_bytes, rss = None, False, 0, None
        if cached is not None:
            try:
                session, rss = self._open(cached)
                hit, file_bytes = True, cached.stat().st_size
            except Exception as err:  # corrupt or truncated cache file: rebuild it
                warnings.warn(f"onnxruntime session cache {cached} is unusable "
                              f"({type(err).__name__}: {err}); rebuilding it", stacklevel=2)
                self.log(f"warning: session cache {cached.name} is unusable; rebuilding it")
                cached.unlink(missing_ok=True)
                session = None
        if session is None:
            session, file_bytes, rss = self._build(name)
            if self._over_budget(name, file_bytes, "optimised session"):
                return  # dropped: the graph stays cached on disk for a larger budget
        info = SessionInfo(session, session.get_inputs()[0].name, session.get_outputs()[0].name,
                           file_bytes, rss, time.perf_counter() - t0, hit)
        # The budget counts the optimised graph's bytes (its initialisers, which the session
        # holds as its own copy); RSS growth is reported beside it, as measured.
        self._used += file_bytes
        self.sessions[name] = info
        self.route.setdefault(name, "onnxruntime")
        self.log(f"onnxruntime: {name} session {'loaded from cache' if hit else 'built'} in "
                 f"{info.build_s:.2f} s")
        for fn in self._listeners:
            fn(name)

    def _build(self, name: str) -> tuple[Any, int, int | None]:
        """Export the SubNet, optimise it into a session, keep the optimised graph on disk."""
        import tempfile

        from ..export import export_onnx

        cfg = self.subnets[name]
        model = self.net.extract(cfg)
        with tempfile.TemporaryDirectory(prefix="ws-ort-") as tmp:
            raw = Path(tmp) / "model.onnx"
            export_onnx(model, raw, self.net.input_shape(cfg), exporter=self.config.exporter)
            paths = self._paths(name)
            if paths is None:
                session, rss = self._open(raw)
                return session, raw.stat().st_size, rss
            target, meta = paths
            with atomic_path(target) as out:
                _write_only = _ort().InferenceSession(str(raw), self._options(out),
                                                      providers=[ORT_PROVIDER])
                del _write_only
            # Serve from the saved optimised graph, exactly the session a restart loads.
            session, rss = self._open(target)
            atomic_write_text(meta, json.dumps({
                "checkpoint_sha256": self.config.checkpoint_sha256, "subnet": cfg.to_dict(),
                "executor": self.name, "onnxruntime": _ort().__version__, "cpu": _cpu(),
                "threads": self.threads}, indent=1) + "\n")
            return session, target.stat().st_size, rss

    # --------------------------------------------------------------- serving
    def has_session(self, subnet: str) -> bool:
        return subnet in self.sessions

    def path(self, subnet: str) -> str:
        return self.route.get(subnet, "torch") if subnet in self.sessions else "torch"

    def run_session(self, batch: Tensor, subnet: str) -> Tensor:
        info = self.sessions[subnet]
        if batch.dtype != torch.float32:
            batch = batch.float()
        # Zero-copy both ways for a contiguous FP32 batch (numpy views of the same memory).
        out = info.session.run(info.outputs, {info.input_name: batch.contiguous().numpy()})
        return torch.from_numpy(out[0])

    def run(self, batch: Tensor, subnet: str) -> Tensor:
        if subnet in self.sessions and self.route.get(subnet) == "onnxruntime":
            return self.run_session(batch, subnet)
        return self.torch.run(batch, subnet)

    def memory(self) -> dict[str, Any]:
        per = {n: {"file_bytes": s.file_bytes, "rss_delta_bytes": s.rss_delta_bytes,
                   "cache_hit": s.cache_hit, "build_s": round(s.build_s, 3)}
               for n, s in self.sessions.items()}
        extra = sum(s.file_bytes for s in self.sessions.values())
        torch_mem = self.torch.memory()
        return {"executor": self.name, "extra_bytes": extra + torch_mem["extra_bytes"],
                "session_bytes": extra, "sessions": per, "torch_plan_bytes":
                torch_mem["extra_bytes"], "budget_bytes": self.budget_bytes,
                "on_torch": {n: self.skipped.get(n, "session not built yet")
                             for n in self.subnets if n not in self.sessions}}

    def close(self) -> None:
        self._stop.set()


def _ort_factory(name: str) -> ExecutorFactory:
    def factory(net: SuperNet, subnets: dict[str, SubnetConfig], config: ExecutorConfig
                ) -> OnnxRuntimeExecutor:
        return OnnxRuntimeExecutor(net, subnets, config, mode=name)

    return factory


register_executor("onnxruntime")(_ort_factory("onnxruntime"))
# auto: the same sessions; the stack routes each SubNet to whichever path measured faster.
register_executor("auto")(_ort_factory("auto"))
