"""SuperNet commands: describe a space (`space`, `sample`, `cost`), make, train and evaluate
a SuperNet (`init`, `train`, `evaluate`), export one SubNet (`export`), and `demo`, all of
that end to end.

Registered on `core.app` when imported; `weightshare.cli` imports this module before the
other command modules, so `weightshare --help` lists these commands first.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any

import typer

from ..space import SubnetConfig
from .core import (
    DEFAULT_SUPERNET,
    DataDirOpt,
    ExporterOpt,
    JsonOpt,
    OpsetOpt,
    SeedOpt,
    SetOpt,
    SubnetOpt,
    SupernetOpt,
    app,
    build_supernet,
    emit_json,
    fmt_cost,
    fmt_count,
    parse_subnet,
    quiet_exporter_logs,
)

__all__ = ["cost", "demo", "evaluate", "export", "init", "sample", "space", "train"]


def _fmt_shape(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


@app.command()
def space(
    supernet: SupernetOpt = DEFAULT_SUPERNET,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    list_: Annotated[
        bool, typer.Option("--list", help="List the registered SuperNets and exit.")
    ] = False,
) -> None:
    """Describe a SuperNet's search space: its choices, number of SubNets, and the MACs and
    parameters of its smallest and largest SubNet.

    --set changes the space before it is described (e.g. fewer kernel choices); --list shows
    the registered SuperNets instead.

    Example:

        weightshare space --set kernel_choices=[3,5] --json
    """
    from ..models import list_supernets, supernet_description

    if list_:
        rows = [{"name": n, "description": supernet_description(n)} for n in list_supernets()]
        if as_json:
            emit_json(rows)
        else:
            width = max(len(r["name"]) for r in rows)
            for r in rows:
                typer.echo(f"{r['name']:<{width}}  {r['description']}")
        return

    net = build_supernet(supernet, set_)
    sp = net.space
    ends = {}
    for which, cfg in (("smallest", sp.smallest()), ("largest", sp.largest())):
        ends[which] = (cfg, net.cost(cfg))
    if as_json:
        emit_json({
            "supernet": supernet,
            "description": supernet_description(supernet),
            "config": net.config,
            "space": sp.to_dict(),
            "summary": sp.summary(),
            "size": sp.size(),
            "input_shape": list(net.input_shape()),
            **{w: {"subnet": cfg.to_dict(), **cost.to_dict()} for w, (cfg, cost) in ends.items()},
        })
        return
    typer.echo(f"{supernet}: {supernet_description(supernet)}")
    typer.echo(f"space:       {sp.summary()}")
    typer.echo(f"SubNets:     {sp.size():,}")
    for which, (cfg, cost) in ends.items():
        typer.echo(f"{which + ':':<12} {fmt_cost(cost)}  {cfg.to_json()}")
    typer.echo(f"input shape: {_fmt_shape(net.input_shape())} (channels x height x width)")


@app.command()
def sample(
    supernet: SupernetOpt = DEFAULT_SUPERNET,
    set_: SetOpt = None,
    n: Annotated[int, typer.Option("-n", "--num", min=0, help="How many SubNets.")] = 1,
    seed: SeedOpt = 0,
) -> None:
    """Print random SubNets of the space, one SubnetConfig JSON per line.

    The same --seed gives the same lines. Each line can be passed to --subnet.

    Example:

        weightshare sample -n 5 --seed 1
    """
    sp = build_supernet(supernet, set_).space
    rng = random.Random(seed)
    for _ in range(n):
        typer.echo(sp.sample(rng).to_json())


@app.command()
def cost(
    subnet: SubnetOpt,
    supernet: SupernetOpt = DEFAULT_SUPERNET,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the MACs and parameters of one SubNet (analytic, batch 1, at its resolution).

    MACs count convolutions and linear layers; both numbers equal those of the extracted
    model. --json prints {"macs": int, "params": int}.

    Example:

        weightshare cost --subnet largest --json
    """
    net = build_supernet(supernet, set_)
    c = net.cost(parse_subnet(subnet, net.space))
    if as_json:
        emit_json(c.to_dict())
    else:
        typer.echo(fmt_cost(c))


@app.command()
def init(
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="CKPT", help="Checkpoint file to write.")
    ],
    supernet: SupernetOpt = DEFAULT_SUPERNET,
    set_: SetOpt = None,
    seed: SeedOpt = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a randomly initialised SuperNet checkpoint (a starting point for training,
    or something to export and test with).

    Refuses to overwrite an existing file unless --force is given.

    Example:

        weightshare init --seed 0 -o supernet.pt
    """
    from ..checkpoint import save_checkpoint

    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")
    net = build_supernet(supernet, set_, seed=seed)
    path = save_checkpoint(output, net, meta={"created_by": "weightshare init", "seed": seed})
    typer.echo(f"wrote {path} ({supernet}, seed {seed}, {path.stat().st_size:,} bytes)")


@app.command()
def export(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", metavar="CKPT", help="SuperNet checkpoint.")
    ],
    subnet: SubnetOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE.onnx", help="ONNX file to write.")
    ],
    exporter: ExporterOpt = "dynamo",
    opset: OpsetOpt = 18,
    as_json: JsonOpt = False,
) -> None:
    """Extract one SubNet from a checkpoint and export it to ONNX.

    The file is checked with onnx.checker and run with onnxruntime against PyTorch;
    success is only reported once they agree.

    Example:

        weightshare export -c supernet.pt --subnet smallest -o smallest.onnx
    """
    from ..checkpoint import load_checkpoint
    from ..export import export_onnx

    quiet_exporter_logs()
    net = load_checkpoint(checkpoint).supernet
    cfg = parse_subnet(subnet, net.space)
    c = net.cost(cfg)
    report = export_onnx(net.extract(cfg), output, net.input_shape(cfg), opset=opset,
                         exporter=exporter)
    if as_json:
        emit_json({**report.to_dict(), "exporter": exporter, "subnet": cfg.to_dict(),
                   **c.to_dict()})
        return
    typer.echo(f"exported {report.path} ({report.bytes:,} bytes, opset {report.opset}, "
               f"{exporter})")
    typer.echo(f"verified with onnxruntime: max |diff| vs PyTorch {report.max_abs_diff:.3g}")
    typer.echo(f"SubNet: {fmt_cost(c)}, input {_fmt_shape(report.input_shape)}")


@app.command()
def demo(
    data_dir: DataDirOpt = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Where to write the run and ONNX.")
    ] = Path("demo_out"),
    exporter: ExporterOpt = "dynamo",
    preset: Annotated[
        str, typer.Option("--preset", metavar="NAME|FILE", help="Training preset to run.")
    ] = "demo",
    serve_seconds: Annotated[
        float, typer.Option("--serve-seconds", min=0.0,
                            help="Length of the bursty trace replayed per policy (0: skip).")
    ] = 4.0,
) -> None:
    """The main job end to end on real data: train a SuperNet with DepS on Fashion-MNIST,
    evaluate its corner SubNets, export the smallest to ONNX, then serve the checkpoint:
    a real Open Inference Protocol server on 127.0.0.1 (a free port) under a short bursty
    trace from the load generator, SlackFit vs a fixed SubNet of similar accuracy.

    Uses the `demo` preset (a few minutes on 2 CPU cores); a finished run in --out is
    reused, an interrupted one resumed. --serve-seconds 0 skips the serving step.

    Example:

        weightshare demo --out demo_out
    """
    from ..experiments.pipeline import DemoRun, run_demo

    quiet_exporter_logs()
    run_demo(DemoRun(out=out, data_dir=data_dir, preset=preset, exporter=exporter,
                     serve_seconds=serve_seconds),
             step=lambda i, n, text: typer.echo(f"[{i}/{n}] {text}"),
             eval_table=_print_eval_table, log=typer.echo, table=typer.echo)


def _print_eval_table(rows: list[dict[str, Any]]) -> None:
    typer.echo(f"{'MACs':>10}  {'params':>9}  {'top-1 %':>7}  SubNet")
    for r in sorted(rows, key=lambda r: r["macs"]):
        cfg = SubnetConfig.from_dict(r["subnet"])
        typer.echo(f"{fmt_count(r['macs']):>10}  {fmt_count(r['params']):>9}  {r['acc']:7.2f}  "
                   f"{cfg.to_json()}")


@app.command()
def train(
    preset: Annotated[
        str, typer.Option("--preset", "-p", metavar="NAME|FILE",
                          help="Training preset (tiny, demo, small, full) or a YAML file."),
    ] = "small",
    method: Annotated[
        str | None, typer.Option("--method", "-m",
                                 help="deps | ofa | bignas | compofa | full (default: preset's).")
    ] = None,
    sampler: Annotated[
        str | None, typer.Option("--sampler", help="uniform | compound (CompOFA coupling).")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs to train.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", metavar="DIR",
                                  help="Run folder (checkpoint.pt, log.jsonl, results.json).")
    ] = None,
    data_dir: DataDirOpt = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option("--from", metavar="CKPT",
                     help="Start from this checkpoint's SuperNet and weights (e.g. from "
                     "`weightshare convert`); with --method deps add --set shrink_at=0 to "
                     "reorder channels and shrink from the first step."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE",
                     help="Override any training option (YAML value), e.g. lr=0.2, "
                     "supernet_args={width_mult: 0.5}; repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a SuperNet once for all its SubNets: DepS (default) or a baseline.

    Checkpoints after every epoch (`--resume` continues a killed run exactly), logs
    every step to log.jsonl and TensorBoard, then recalibrates BN and evaluates the
    fixed evaluation set (4 corners + SubNets spread in MACs); their statistics are
    saved in the checkpoint for serving. Under `torchrun --nproc-per-node N` it
    trains data-parallel.

    Example:

        weightshare train --preset small --method deps --out runs/deps
    """
    from ..train import TrainConfig
    from ..train import train as run_training

    cfg = TrainConfig.load(
        preset, overrides, method=method, sampler=sampler, epochs=epochs,
        out=str(out) if out else None, data_dir=str(data_dir) if data_dir else None,
        device=device, init_from=str(init_from) if init_from else None,
    )
    if out is None and not any(o.startswith("out=") for o in overrides or []):
        cfg = cfg.replace(out=f"runs/{cfg.method}")
    if as_json:
        cfg = cfg.replace(progress=False)
    result = run_training(cfg, resume=resume)
    summary = result.summary
    if as_json:
        emit_json({k: v for k, v in summary.items() if k != "history"})
        return
    typer.echo(f"trained {cfg.method} for {summary['steps']} steps in {summary['wall_s']:.0f} s "
               f"({summary['train_macs'] / 1e12:.2f} T training MACs)")
    if "eval" in summary:
        _print_eval_table(summary["eval"])
        acc = summary["acc"]
        typer.echo(f"smallest {acc['smallest']:.2f} %, largest {acc['largest']:.2f} %, "
                   f"mean {acc['mean']:.2f} % over {len(summary['eval'])} SubNets")
    typer.echo(f"checkpoint: {result.out_dir / 'checkpoint.pt'}")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", metavar="CKPT")],
    subnet: Annotated[
        list[str] | None,
        typer.Option("--subnet", metavar="SUBNET",
                     help="SubNet(s) to evaluate (JSON, file, largest, smallest); repeatable. "
                     "Default: the fixed evaluation set (4 corners + 12 spread in MACs)."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Dataset name (default: the one the "
                                 "checkpoint was trained on, with its calib split).")
    ] = None,
    data_dir: DataDirOpt = None,
    save: Annotated[
        bool, typer.Option("--save/--no-save",
                           help="Store the recalibrated BN statistics back in the checkpoint.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Recalibrate BN on the held-out calib images, then report test top-1 per SubNet.

    The data set, its calib split and test subset are the ones the checkpoint was
    trained with (its saved config), so the numbers match the run's results.json.

    Example:

        weightshare evaluate -c runs/deps/checkpoint.pt --subnet smallest --subnet largest
    """
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..deployment import dataset_for
    from ..train import evaluate_subnets, evaluation_subnets

    ck = load_checkpoint(checkpoint)
    net = ck.supernet
    data = dataset_for(ck, dataset, data_dir)
    cfgs = ([parse_subnet(s, net.space) for s in subnet] if subnet
            else evaluation_subnets(net))
    rows = evaluate_subnets(net, cfgs, data, progress=not as_json)
    if save:
        save_checkpoint(checkpoint, net, train_state=ck.train_state, meta=ck.meta)
    if as_json:
        emit_json(rows)
    else:
        _print_eval_table(rows)
