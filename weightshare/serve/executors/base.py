"""The executor interface: the `Executor` protocol, `ExecutorConfig` and the registry.

The implementations (`torch_plan`, `ort`) register themselves here by name; this module
imports neither, so they can import it (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from ...models import SuperNet
from ...registry import Registry
from ...space import SubnetConfig

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorConfig",
    "ExecutorFactory",
    "list_executors",
    "make_executor",
    "register_executor",
]


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

