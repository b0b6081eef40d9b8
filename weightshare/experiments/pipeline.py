"""`weightshare demo` end to end: data, SuperNet, DepS training, ONNX export, live serving.

`run_demo` is the orchestration; the CLI only parses its options and prints what
the callbacks hand it:

* ``step(i, n, text)`` -- the numbered progress lines ("[3/6] training with deps ...");
* ``eval_table(rows)`` -- the corner SubNets' evaluation after training;
* ``log(text)`` -- the serving step's detail lines;
* ``table(text)`` -- the serving step's SLO / accuracy table.

A finished run in ``out`` is reused, an interrupted one resumed (the training loop
does both). The serving step deploys exactly the evaluated SubNets, whose BN
statistics and accuracies the checkpoint already has, so it needs no data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DemoRun", "run_demo"]


@dataclass(frozen=True)
class DemoRun:
    """What `weightshare demo` runs.

    preset: the training preset (name or YAML file); out: the folder for the run,
    the ONNX file and the serving files; serve_seconds: the bursty trace's length
    per policy (0 skips serving); exporter: the ONNX exporter.
    """

    out: Path = Path("demo_out")
    data_dir: Path | None = None
    preset: str = "demo"
    exporter: str = "dynamo"
    serve_seconds: float = 4.0

    def __post_init__(self) -> None:
        if self.serve_seconds < 0:
            raise ValueError("serve_seconds must be >= 0")


def _quiet(*_: Any) -> None:
    return None


def run_demo(run: DemoRun, *, step: Callable[[int, int, str], None] = _quiet,
             eval_table: Callable[[list[dict[str, Any]]], None] = _quiet,
             log: Callable[[str], None] = _quiet,
             table: Callable[[str], None] = _quiet) -> dict[str, Any]:
    """Every step of the demo; returns the training summary, the export report and (when
    served) the serving result."""
    from ..data import load_dataset
    from ..export import export_onnx
    from ..models import supernet_description
    from ..train import TrainConfig
    from ..train import train as run_training
    from ..train.loop import build_supernet as build_for_data

    out = Path(run.out)
    steps = 6 if run.serve_seconds > 0 else 5

    def announce(i: int, text: str) -> None:
        step(i, steps, text)

    cfg = TrainConfig.load(run.preset, out=str(out / "run"),
                           data_dir=str(run.data_dir) if run.data_dir else None)
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, cfg.data_dir, calib_size=cfg.calib_size, seed=cfg.seed,
                      train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    announce(1, f"loaded {cfg.dataset}: {len(ds.train):,} train / {len(ds.calib):,} calib / "
                f"{len(ds.test):,} test images of {ds.in_channels}x{ds.image_size}x"
                f"{ds.image_size} ({time.perf_counter() - t0:.1f} s)")
    space = build_for_data(cfg, ds).space
    announce(2, f"SuperNet {cfg.supernet} {cfg.supernet_args}: "
                f"{supernet_description(cfg.supernet)}\n      search space: {space.summary()}")
    announce(3, f"training with {cfg.method} for {cfg.epochs} epochs "
                f"(shrinking from {cfg.shrink_at:.0%}) -> {cfg.out}")
    resume = (Path(cfg.out) / "checkpoint.pt").exists()
    result = run_training(cfg, resume=resume, data=ds)
    summary = result.summary
    announce(4, f"trained in {summary['wall_s']:.0f} s ({summary['train_macs'] / 1e12:.2f} T "
                "training MACs); corner SubNets after BN recalibration:")
    eval_table(summary["eval"])
    net = result.supernet.eval()
    smallest = net.space.smallest()
    t0 = time.perf_counter()
    report = export_onnx(net.extract(smallest), out / "smallest.onnx",
                         net.input_shape(smallest), exporter=run.exporter)
    announce(5, f"exported the smallest SubNet to {report.path} ({report.bytes:,} bytes, "
                f"{run.exporter}), verified with onnxruntime: max |diff| "
                f"{report.max_abs_diff:.3g} ({time.perf_counter() - t0:.1f} s)")
    served = None
    if run.serve_seconds > 0:
        served = serve_step(out, Path(cfg.out) / "checkpoint.pt", summary["eval"],
                            run.serve_seconds, lambda text: announce(6, text), log, table)
    return {"summary": summary, "export": report, "serving": served}


def serve_step(out: Path, checkpoint: Path, eval_rows: list[dict[str, Any]], seconds: float,
               announce: Callable[[str], None], log: Callable[[str], None],
               table: Callable[[str], None]) -> dict[str, Any]:
    """The demo's serving step on the trained checkpoint (see `serving_demo`)."""
    from ..serve.stack import StackConfig
    from .serving_demo import DemoConfig, demo_serving, write_deploy_file

    # The evaluated SubNets carry BN statistics and accuracies in the checkpoint: deploying
    # exactly those needs no data. One thread: the load generator needs the other core.
    deploy = write_deploy_file(eval_rows, out / "serve_deploy.json")
    announce(f"serving {checkpoint} (SlackFit vs a fixed SubNet, {seconds:g} s bursty trace "
             "each):")
    cfg = StackConfig(checkpoint=str(checkpoint), deploy=str(deploy), max_batch=16,
                      profile_runs=10, threads=1, profile=str(out / "serve_profile.json"))
    result = demo_serving(cfg, DemoConfig(seconds=seconds), log=lambda m: log(f"      {m}"))
    table(result["table"])
    log(f"      server stopped; serving step took {result['total_s']:.0f} s")
    return result
