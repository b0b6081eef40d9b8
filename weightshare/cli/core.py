"""The `weightshare` command line: thin wrappers that parse, call the library and print.

Adding a command
----------------
Write a function decorated with ``@app.command()`` whose docstring says what it
does and ends with an ``Example:`` paragraph (see the existing commands). Reuse
the option aliases below (`SupernetOpt`, `SetOpt`, `SubnetOpt`, `JsonOpt`, `DataDirOpt`, ...)
and the helpers (`build_supernet`, `parse_subnet`, `emit_json`, `fmt_count`).
A group of commands is a second Typer added to the root::

    serve_app = typer.Typer(help="...", no_args_is_help=True)
    app.add_typer(serve_app, name="serve")

Errors
------
Commands do not catch errors. Mistakes a user can cause surface as a
`weightshare.errors.WeightshareError` (CheckpointError, DatasetError, ConfigError,
...) or one of the built-ins in `weightshare.errors.USER_ERRORS` (ValueError,
FileNotFoundError and friends); `_Group.invoke`, the one place that handles them,
prints ``error: <message>`` to stderr and exits with code 2, without a traceback.
Anything else is a bug and keeps its traceback. A new library error derives from
`WeightshareError`.

Output
------
Text output is for people. With ``--json`` a command prints exactly one JSON
document (or one per line, for streams like `sample`) and nothing else on stdout.

Torch-backed modules are imported inside the commands, so ``weightshare --help``
stays fast.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import USER_ERRORS
from ..space import SearchSpace, SubnetConfig

if TYPE_CHECKING:
    from ..models import SuperNet

__all__ = [
    "USER_ERRORS",
    "app",
    "build_supernet",
    "emit_json",
    "fmt_count",
    "main",
    "parse_overrides",
    "parse_subnet",
]

DEFAULT_SUPERNET = "ofa_mbv3_small"


def _is_user_error(err: BaseException) -> bool:
    # one base class (weightshare.errors, which imports nothing heavy) and the built-ins
    # bad values and files raise; anything else is a bug and keeps its traceback
    return isinstance(err, USER_ERRORS)


def _error_message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    return str(err).strip() or type(err).__name__


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


class _Group(TyperGroup):
    """The root group: turns user errors from any command (or subgroup) into one line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not _is_user_error(err):
                raise
            fail(_error_message(err))


app = typer.Typer(
    name="weightshare",
    cls=_Group,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"weightshare {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Weight-shared SuperNets: train one SuperNet for all its SubNets (DepS), search it
    for each target, export SubNets to ONNX, serve it adaptively (SlackFit), train it
    federated (SuperFedNAS on Flower), search bit widths (nablaQDARTS) and model small
    accelerators (FastSwitch, SUSHI).

    Run `weightshare COMMAND --help` for a command's options and an example.
    """


def main() -> None:
    """Console-script entry point (``weightshare = "weightshare.cli:main"``)."""
    app()


# ---------------------------------------------------------------------------------------------
# Shared options
# ---------------------------------------------------------------------------------------------

SupernetOpt = Annotated[
    str,
    typer.Option(
        "--supernet", "-s", metavar="NAME",
        help="Registered SuperNet name (see `weightshare space --list`).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Override a SuperNet constructor argument; repeatable. VALUE is read as YAML, "
        "as every --set and preset (0.5, [3,5], true, {a: 1}); text YAML cannot read stays a "
        "string.",
    ),
]
SubnetOpt = Annotated[
    str,
    typer.Option(
        "--subnet", metavar="SUBNET",
        help="SubnetConfig as JSON text, a file holding that JSON, or 'largest' / 'smallest'.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
ExporterOpt = Annotated[
    Literal["dynamo", "torchscript"],
    typer.Option(
        "--exporter",
        help="ONNX exporter: dynamo (torch.export based, PyTorch's default) or torchscript "
        "(older tracer, faster).",
    ),
]
OpsetOpt = Annotated[int, typer.Option("--opset", min=7, help="ONNX opset version.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", metavar="DIR",
                 help="Dataset folder (default: the dataset's usual place; for Fashion-MNIST the "
                 "system copy or $WEIGHTSHARE_DATA)."),
]


# ---------------------------------------------------------------------------------------------
# Helpers (library calls plus argument parsing; shared by commands)
# ---------------------------------------------------------------------------------------------


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["width_mult=0.5", "kernel_choices=[3,5]"]`` -> ``{"width_mult": 0.5, ...}`` (YAML values,
    as every `--set` of every command)."""
    from ..presets import parse_overrides as _parse

    return _parse(items, "--set")


def build_supernet(name: str, overrides: list[str] | None = None, *, seed: int | None = None
                   ) -> SuperNet:
    """Create registered SuperNet `name` with ``--set`` overrides (weights seeded if `seed`)."""
    import torch

    from ..models import create_supernet

    kwargs = parse_overrides(overrides)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        return create_supernet(name, **kwargs)
    except TypeError as err:  # a --set value of the wrong type reaches the constructor
        raise ValueError(f"cannot build SuperNet {name!r} with {kwargs}: {err}") from None


def parse_subnet(text: str, space: SearchSpace) -> SubnetConfig:
    """A validated SubnetConfig from ``--subnet``: JSON text, a JSON file, 'largest', 'smallest'."""
    word = text.strip()
    if word.lower() == "largest":
        return space.largest()
    if word.lower() == "smallest":
        return space.smallest()
    if word.startswith("{"):
        cfg = SubnetConfig.from_json(word)
    else:
        path = Path(word).expanduser()
        if not path.is_file():
            raise ValueError(
                f"--subnet {text!r} is neither a JSON object, an existing file, 'largest' nor "
                "'smallest'"
            )
        try:
            cfg = SubnetConfig.from_json(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return space.validate(cfg)


def fmt_count(n: float) -> str:
    """Three significant digits with a K/M/G unit: 59425440 -> '59.4 M', 1397354 -> '1.40 M'."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.{max(0, 2 - int(math.floor(math.log10(abs(v)))))}f} {unit}"
    return f"{n:g}"


def fmt_cost(cost: Any) -> str:
    return f"{fmt_count(cost.macs)} MACs, {fmt_count(cost.params)} params"


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout (tuples become lists, odd values strings)."""
    typer.echo(json.dumps(obj, default=str))


def quiet_exporter_logs() -> None:
    """Hide torch.onnx's log warnings (e.g. "torchvision is not installed") from CLI output."""
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def _fmt_shape(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


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
