"""The ``onnxruntime`` and ``auto`` executors: an optimised onnxruntime session per SubNet.

Per deployed SubNet an `onnxruntime.InferenceSession` over its exported graph
(`weightshare.export.export_onnx`) with all graph optimisations, built in a background
thread at deploy time and cached on disk by (checkpoint SHA-256, SubNet and its BN
statistics, executor, onnxruntime version, CPU, threads) -- `session_cache_key` -- so a
restart loads instead of rebuilding. The optimisations copy the initialisers (layout
transforms and fusions), so every session costs memory: a budget caps it, and any SubNet
without a built session is served by the ``torch`` plan (`torch_plan.TorchExecutor`). No
request waits for a build: `run` only looks a session up. ``auto`` is the same sessions
with each SubNet routed to whichever path was measured faster for it on this machine
(`OnnxRuntimeExecutor.route`, set by the stack and recorded in the profile).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...io import atomic_path, atomic_write_text
from ...models import SuperNet
from ...space import SubnetConfig
from .base import ExecutorConfig, ExecutorFactory, register_executor
from .torch_plan import TorchExecutor

__all__ = ["ORT_PROVIDER", "OnnxRuntimeExecutor", "SessionInfo", "session_cache_key"]

ORT_PROVIDER = "CPUExecutionProvider"


def _ort() -> Any:
    import onnxruntime as ort

    return ort


def _cpu() -> str:
    from ...timing import machine_identity

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
        from ..memory import module_bytes

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
        from ..memory import rss_bytes

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

        from ...export import export_onnx

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
