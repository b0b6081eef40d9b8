"""What the serving commands share: their option types and the `StackConfig` built from them.

`serve`, `serve serving-profile` and `serve runtime` take the same deployment options
(checkpoint, candidate SubNets, dataset, profile, executor, ...); `accel` reuses
`ServeCheckpointOpt`. Kept apart from the commands in `serve` so that file holds commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["ServeCheckpointOpt", "ServeDatasetOpt", "ServeDeployOpt", "ServeExecutorOpt",
           "ServeKeepDominatedOpt", "ServeMaxBatchOpt", "ServeNumSubnetsOpt", "ServeOrtBudgetOpt",
           "ServeOrtCacheOpt", "ServeProfileOpt", "ServeSloOpt", "ServeTestSubsetOpt",
           "ServeThreadsOpt", "stack_config"]

ServeCheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", "-c", metavar="CKPT", help="SuperNet checkpoint.")
]
ServeDeployOpt = Annotated[
    Path | None,
    typer.Option("--deploy", metavar="FRONTIER.json",
                 help="Candidate SubNets: the file `weightshare frontier` writes, or a JSON "
                 'list of {"subnet": {...}, "acc": ...} (default: --num-subnets spread evenly '
                 "in MACs). Only the non-dominated ones in (accuracy, batch-1 latency measured "
                 "here) are deployed; the dropped ones and why are logged and kept in the "
                 "profile."),
]
ServeNumSubnetsOpt = Annotated[
    int, typer.Option("--num-subnets", "-n", min=1, help="SubNets to deploy without --deploy.")
]
ServeDatasetOpt = Annotated[
    str, typer.Option("--dataset", help="Dataset for BN recalibration and test accuracy of "
                      "SubNets the checkpoint lacks them for.")
]
ServeTestSubsetOpt = Annotated[
    int | None, typer.Option("--test-subset", min=1, help="Test images used for accuracy.")
]
ServeProfileOpt = Annotated[
    Path | None, typer.Option("--profile", metavar="FILE.json",
                              help="Latency profile (default: CKPT.profile.json).")
]
ServeMaxBatchOpt = Annotated[int, typer.Option("--max-batch", min=1,
                                          help="Largest batch profiled and served.")]
ServeThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1,
                                                help="Torch intra-op threads.")]
ServeSloOpt = Annotated[float, typer.Option("--slo-ms", min=0.001,
                                       help="Default per-request deadline (ms).")]
ServeExecutorOpt = Annotated[str, typer.Option(
    "--executor", metavar="torch|onnxruntime|auto",
    help="What runs each batch. torch: the elastic forward on the one SuperNet, weight "
    "slices bound once per SubNet (least memory). onnxruntime: an optimized onnxruntime "
    "session per deployed SubNet (fastest on CPU; each session holds its own copy of that "
    "SubNet's weights), built in the background and cached on disk, the torch path serving "
    "any SubNet whose session is not built yet. auto: onnxruntime's sessions, each SubNet "
    "on whichever path was measured faster here (recorded in the profile).")]
ServeOrtBudgetOpt = Annotated[float | None, typer.Option(
    "--ort-memory-budget-mb", min=0.0, metavar="MB",
    help="Most MB of onnxruntime sessions (default: no cap); SubNets beyond it are served by "
    "the torch path. 0: no sessions.")]
ServeOrtCacheOpt = Annotated[Path | None, typer.Option(
    "--ort-cache-dir", metavar="DIR",
    help="Where built onnxruntime sessions are kept (default: CKPT.onnxruntime/), keyed by "
    "checkpoint SHA-256, SubNet, executor and onnxruntime version.")]
ServeKeepDominatedOpt = Annotated[bool, typer.Option(
    "--keep-dominated", help="Deploy every candidate SubNet, also those another one beats "
    "in both accuracy and batch-1 latency (default: only the Pareto frontier).")]


def stack_config(checkpoint: Path, **kw: Any) -> Any:
    """The `StackConfig` of a command's options (paths as strings, as the stack keeps them)."""
    from ..serve.stack import StackConfig

    for key in ("deploy", "data_dir", "profile"):
        if kw.get(key) is not None:
            kw[key] = str(kw[key])
    return StackConfig(checkpoint=str(checkpoint), **kw)
