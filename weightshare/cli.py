"""The `weightshare` command line: thin wrappers that parse, call the library and print.

Adding a command
----------------
Write a function decorated with ``@app.command()`` whose docstring says what it
does and ends with an ``Example:`` paragraph (see the existing commands). Reuse
the option aliases below (`SupernetOpt`, `SetOpt`, `SubnetOpt`, `JsonOpt`, ...)
and the helpers (`build_supernet`, `parse_subnet`, `emit_json`, `fmt_count`).
A group of commands is a second Typer added to the root::

    serve_app = typer.Typer(help="...", no_args_is_help=True)
    app.add_typer(serve_app, name="serve")

Errors
------
Commands do not catch errors. Mistakes a user can cause surface as ValueError,
FileNotFoundError (and friends), CheckpointError, DatasetError or ExportError;
`_Group.invoke`, the one place that handles them, prints ``error: <message>``
to stderr and exits with code 2, without a traceback. Anything else is a bug
and keeps its traceback. Register further user-error types in `USER_ERRORS`.

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
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from typer.core import TyperGroup

from . import __version__
from .space import SearchSpace, SubnetConfig

if TYPE_CHECKING:
    from .models import SuperNet

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

# Exceptions that mean "the user asked for something wrong", by dotted name so this
# module need not import torch to know them. Extend it for new library errors.
USER_ERRORS: list[str] = [
    "builtins.ValueError",
    "builtins.FileNotFoundError",
    "builtins.FileExistsError",
    "builtins.IsADirectoryError",
    "builtins.NotADirectoryError",
    "builtins.PermissionError",
    "weightshare.checkpoint.CheckpointError",
    "weightshare.data.DatasetError",
    "weightshare.export.ExportError",
]


def _is_user_error(err: BaseException) -> bool:
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}
    return not names.isdisjoint(USER_ERRORS)


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
    """Weight-shared SuperNets: train one SuperNet for all its SubNets (DepS), inspect and
    cost SubNets, evaluate them, make checkpoints and export SubNets to ONNX.

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
        help="Override a SuperNet constructor argument; repeatable. VALUE is read as JSON "
        "when it parses (0.5, [3,5], true), else as a string.",
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


# ---------------------------------------------------------------------------------------------
# Helpers (library calls plus argument parsing; shared by commands)
# ---------------------------------------------------------------------------------------------


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["width_mult=0.5", "kernel_choices=[3,5]"]`` -> ``{"width_mult": 0.5, ...}``."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def build_supernet(name: str, overrides: list[str] | None = None, *, seed: int | None = None
                   ) -> SuperNet:
    """Create registered SuperNet `name` with ``--set`` overrides (weights seeded if `seed`)."""
    import torch

    from .models import create_supernet

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
    from .models import list_supernets, supernet_description

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
    from .checkpoint import save_checkpoint

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
    from .checkpoint import load_checkpoint
    from .export import export_onnx

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
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", metavar="DIR",
                     help="Folder with the Fashion-MNIST IDX files (default: the system copy "
                     "or $WEIGHTSHARE_DATA)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Where to write the run and ONNX.")
    ] = Path("demo_out"),
    exporter: ExporterOpt = "dynamo",
    preset: Annotated[
        str, typer.Option("--preset", metavar="NAME|FILE", help="Training preset to run.")
    ] = "demo",
) -> None:
    """The main job end to end on real data: train a SuperNet with DepS on Fashion-MNIST,
    evaluate its corner SubNets, export the smallest to ONNX.

    Uses the `demo` preset (a few minutes on 2 CPU cores); a finished run in --out is
    reused, an interrupted one resumed.

    Example:

        weightshare demo --out demo_out
    """
    from .data import load_dataset
    from .export import export_onnx
    from .models import supernet_description
    from .train import TrainConfig
    from .train import train as run_training

    quiet_exporter_logs()
    steps = 5

    def step(i: int, text: str) -> None:
        typer.echo(f"[{i}/{steps}] {text}")

    cfg = TrainConfig.load(preset, out=str(out / "run"),
                           data_dir=str(data_dir) if data_dir else None)
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, cfg.data_dir, calib_size=cfg.calib_size, seed=cfg.seed,
                      train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    step(1, f"loaded {cfg.dataset}: {len(ds.train):,} train / {len(ds.calib):,} calib / "
            f"{len(ds.test):,} test images of {ds.in_channels}x{ds.image_size}x{ds.image_size} "
            f"({time.perf_counter() - t0:.1f} s)")
    from .train.loop import build_supernet as build_for_data

    space = build_for_data(cfg, ds).space
    step(2, f"SuperNet {cfg.supernet} {cfg.supernet_args}: {supernet_description(cfg.supernet)}"
            f"\n      search space: {space.summary()}")
    step(3, f"training with {cfg.method} for {cfg.epochs} epochs "
            f"(shrinking from {cfg.shrink_at:.0%}) -> {cfg.out}")
    resume = (Path(cfg.out) / "checkpoint.pt").exists()
    result = run_training(cfg, resume=resume, data=ds)
    summary = result.summary
    step(4, f"trained in {summary['wall_s']:.0f} s ({summary['train_macs'] / 1e12:.2f} T "
            "training MACs); corner SubNets after BN recalibration:")
    _print_eval_table(summary["eval"])
    net = result.supernet.eval()
    smallest = net.space.smallest()
    t0 = time.perf_counter()
    report = export_onnx(net.extract(smallest), out / "smallest.onnx", net.input_shape(smallest),
                         exporter=exporter)
    step(5, f"exported the smallest SubNet to {report.path} ({report.bytes:,} bytes, {exporter}), "
            f"verified with onnxruntime: max |diff| {report.max_abs_diff:.3g} "
            f"({time.perf_counter() - t0:.1f} s)")


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
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", metavar="DIR", help="Dataset folder.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
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
    from .train import TrainConfig
    from .train import train as run_training

    cfg = TrainConfig.load(
        preset, overrides, method=method, sampler=sampler, epochs=epochs,
        out=str(out) if out else None, data_dir=str(data_dir) if data_dir else None,
        device=device,
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
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name.")] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", metavar="DIR")] = None,
    save: Annotated[
        bool, typer.Option("--save/--no-save",
                           help="Store the recalibrated BN statistics back in the checkpoint.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Recalibrate BN on 2000 held-out training images, then report test top-1 per SubNet.

    Example:

        weightshare evaluate -c runs/deps/checkpoint.pt --subnet smallest --subnet largest
    """
    from .checkpoint import load_checkpoint, save_checkpoint
    from .data import load_dataset
    from .train import evaluate_subnets, evaluation_subnets

    ck = load_checkpoint(checkpoint)
    net = ck.supernet
    data = load_dataset(dataset, data_dir)
    cfgs = ([parse_subnet(s, net.space) for s in subnet] if subnet
            else evaluation_subnets(net))
    rows = evaluate_subnets(net, cfgs, data, progress=not as_json)
    if save:
        save_checkpoint(checkpoint, net, train_state=ck.train_state, meta=ck.meta)
    if as_json:
        emit_json(rows)
    else:
        _print_eval_table(rows)


# ---------------------------------------------------------------------------------------------
# Specialize: latency tables, accuracy predictor, search, frontier
# ---------------------------------------------------------------------------------------------

CheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", "-c", metavar="CKPT", help="SuperNet checkpoint.")
]
TableOpt = Annotated[
    Path | None,
    typer.Option("--latency-table", "-t", metavar="TABLE",
                 help="Latency table from `weightshare profile` (needed for latency limits and "
                 "the latency objective)."),
]
DatasetNameOpt = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset name (default: the one the checkpoint was trained on)."),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", metavar="DIR", help="Dataset folder.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's).")
]
MaxLatencyOpt = Annotated[
    float | None, typer.Option("--max-latency-ms", help="Latency limit (ms, from the table).")
]
MaxMacsOpt = Annotated[float | None, typer.Option("--max-macs", help="MACs limit (e.g. 20e6).")]
MaxParamsOpt = Annotated[float | None, typer.Option("--max-params", help="Parameter limit.")]
ObjectiveOpt = Annotated[
    str | None,
    typer.Option("--objective", help="Cost to minimize beside accuracy: latency | macs | params "
                 "(default: the capped one; for frontier, latency with a table, else macs)."),
]
MeasuredOpt = Annotated[
    bool, typer.Option("--measured", help="Rank by measured accuracy (BN recalibration + held-out "
                       "top-1 per SubNet; slow) instead of the fitted predictor.")
]
PopulationOpt = Annotated[int, typer.Option("--population", min=2, help="NSGA-II population.")]
GenerationsOpt = Annotated[int, typer.Option("--generations", min=1, help="NSGA-II generations.")]


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _load_for_search(checkpoint: Path, table: Path | None, measured: bool, dataset: str | None,
                     data_dir: Path | None, device: str):
    """(checkpoint, evaluator, accuracy source, dataset or None) for search and frontier."""
    from .checkpoint import load_checkpoint
    from .search.latency_table import load_latency_table
    from .search.nsga import Evaluator
    from .search.specialize import accuracy_fn, dataset_for

    ck = load_checkpoint(checkpoint, map_location=device)
    net = ck.supernet.eval()
    lut = load_latency_table(table, net) if table is not None else None
    data = dataset_for(ck, dataset, data_dir) if measured else None
    fn, source = accuracy_fn(net, checkpoint, measured=measured, dataset=data, device=device)
    return ck, Evaluator(net, fn, lut), source, data


def _caps(max_latency_ms: float | None, max_macs: float | None,
          max_params: float | None) -> dict[str, float]:
    caps = {"max_latency_ms": max_latency_ms, "max_macs": max_macs, "max_params": max_params}
    return {k: v for k, v in caps.items() if v is not None}


def _fmt_candidate(c: Any) -> str:
    lat = f", {c.costs['latency_ms']:.3f} ms" if "latency_ms" in c.costs else ""
    return (f"acc {c.acc:.2f} %, {fmt_count(c.costs['macs'])} MACs, "
            f"{fmt_count(c.costs['params'])} params{lat}")


@app.command()
def profile(
    checkpoint: CheckpointOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="TABLE.json", help="Latency table to write.")
    ],
    device: DeviceOpt = "cpu",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size to time.")] = 1,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed calls per op and round.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed calls first.")] = 10,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Timing rounds per op (the lowest median is "
                          "kept: other processes only add time).")
    ] = 3,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a per-operator latency table of a SuperNet on this machine.

    Every elastic block is timed at each of its choices and input shapes (plus the
    fixed stem, final layers and head) as a static extracted layer: warm-up, then the
    median of repeated timings. A SubNet's latency is then predicted as the sum of
    its layers' entries (microseconds) plus the measured cost of running an empty
    network. The table records the device, batch, thread count and the SuperNet it
    was made for; check its error with `weightshare profile-check`.

    Example:

        weightshare profile -c runs/deps/checkpoint.pt --device cpu -o cpu_table.json
    """
    from .checkpoint import load_checkpoint
    from .search.latency_table import build_latency_table

    _set_threads(threads)
    net = load_checkpoint(checkpoint).supernet.eval()
    table = build_latency_table(net, device=device, batch=batch, warmup=warmup, runs=runs,
                                rounds=rounds, progress=not as_json)
    table.save(output)
    sp = net.space
    ends = {w: table.predict_ms(sp, c) for w, c in (("smallest", sp.smallest()),
                                                     ("largest", sp.largest()))}
    if as_json:
        emit_json({"path": str(output), "entries": len(table.entries), "device": table.device,
                   "batch": table.batch, "threads": table.threads,
                   "overhead_us": table.overhead_us, **{f"{k}_ms": v for k, v in ends.items()},
                   "build_s": table.meta["build_s"]})
        return
    typer.echo(f"wrote {output}: {len(table.entries)} ops timed on {table.device}, batch "
               f"{table.batch}, {table.threads} threads ({table.meta['build_s']:.1f} s)")
    typer.echo(f"per-call overhead added to every prediction: {table.overhead_us:.1f} us")
    typer.echo(f"predicted: smallest {ends['smallest']:.3f} ms, largest {ends['largest']:.3f} ms")


@app.command("profile-check")
def profile_check(
    checkpoint: CheckpointOpt,
    latency_table: Annotated[
        Path, typer.Option("--latency-table", "-t", metavar="TABLE", help="Table to check.")
    ],
    n: Annotated[int, typer.Option("-n", "--num", min=2, help="SubNets to time end to end.")] = 20,
    seed: SeedOpt = 0,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed calls per SubNet and round.")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Timing rounds per SubNet.")] = 3,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a latency table: time N extracted SubNets end to end (the smallest, the largest
    and random ones) on the table's device and batch, and report the table's error.

    Prints the mean absolute percentage error (MAPE) of the predicted latency and the
    Kendall rank correlation between predicted and measured latency. Run it on the
    machine (and thread count) the table was made on.

    Example:

        weightshare profile-check -c runs/deps/checkpoint.pt -t cpu_table.json -n 30
    """
    from .checkpoint import load_checkpoint
    from .search.latency_table import check_latency_table, load_latency_table

    _set_threads(threads)
    net = load_checkpoint(checkpoint).supernet.eval()
    table = load_latency_table(latency_table, net)
    report = check_latency_table(table, net, n=n, seed=seed, runs=runs, rounds=rounds,
                                 progress=not as_json)
    if as_json:
        emit_json(report.to_dict())
        return
    typer.echo(f"{'predicted ms':>12}  {'measured ms':>11}  {'error %':>7}  MACs")
    for r in sorted(report.rows, key=lambda r: r["measured_ms"]):
        cfg = SubnetConfig.from_dict(r["subnet"])
        err = 100 * (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
        typer.echo(f"{r['predicted_ms']:12.3f}  {r['measured_ms']:11.3f}  {err:7.1f}  "
                   f"{fmt_count(net.cost(cfg).macs)}")
    typer.echo(f"{report.n_subnets} SubNets: MAPE {report.mape:.1f} %, Kendall tau "
               f"{report.kendall_tau:.3f} (per-call overhead {report.overhead_us:.1f} us included)")


predictor_app = typer.Typer(help="Accuracy predictor of a checkpoint's SubNets.",
                            no_args_is_help=True)
app.add_typer(predictor_app, name="predictor")


@predictor_app.command("fit")
def predictor_fit(
    checkpoint: CheckpointOpt,
    samples: Annotated[int, typer.Option("--samples", "-n", min=6, help="SubNets to measure.")
                       ] = 1000,
    kind: Annotated[
        str, typer.Option("--kind", help="auto (MLP or linear, whichever ranks a validation "
                          "slice better) | mlp (OFA: 3 x 400) | linear.")
    ] = "auto",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 200,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Measure SubNets and fit an accuracy predictor, saved beside the checkpoint.

    Each SubNet's BN statistics are recalibrated on one half of the held-out calib
    split and its top-1 is measured on the other half (never the test split). The
    measurements are appended to CKPT.predictor.jsonl as they are made, so an
    interrupted run resumes and a later run with more --samples reuses them. The
    model (CKPT.predictor.safetensors + .json) is scored on SubNets it was not
    fitted on: RMSE and Kendall tau.

    Example:

        weightshare predictor fit -c runs/deps/checkpoint.pt --samples 1000
    """
    from .checkpoint import load_checkpoint
    from .search.predictor import fit_and_save, predictor_paths
    from .search.specialize import dataset_for

    ck = load_checkpoint(checkpoint, map_location=device)
    data = dataset_for(ck, dataset, data_dir)
    pred = fit_and_save(ck.supernet.eval(), data, checkpoint, samples, kind=kind, seed=seed,
                        epochs=epochs, device=device, progress=not as_json)
    rep = pred.report
    assert rep is not None
    paths = predictor_paths(checkpoint)
    if as_json:
        emit_json({**rep.to_dict(), "weights": str(paths["weights"]), "meta": str(paths["meta"]),
                   "samples_file": str(paths["samples"])})
        return
    typer.echo(f"fitted a {rep.kind} predictor on {rep.n_fit} SubNets "
               f"(samples: {paths['samples']})")
    typer.echo(f"on {rep.n_test} unseen SubNets: RMSE {rep.rmse:.3f} points, "
               f"Kendall tau {rep.kendall_tau:.3f}")
    typer.echo(f"saved {paths['weights']} and {paths['meta']}")


@app.command()
def search(
    checkpoint: CheckpointOpt,
    latency_table: TableOpt = None,
    max_latency_ms: MaxLatencyOpt = None,
    max_macs: MaxMacsOpt = None,
    max_params: MaxParamsOpt = None,
    targets: Annotated[
        Path | None,
        typer.Option("--targets", metavar="YAML",
                     help="Many targets at once: a YAML list of {name, max_latency_ms, max_macs, "
                     "max_params}; they share the predictor and the table."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="PATH",
                     help="Write the chosen SubnetConfig JSON here (for `export --subnet`); with "
                     "--targets, a folder that gets NAME.json per target."),
    ] = None,
    objective: ObjectiveOpt = None,
    measured: MeasuredOpt = False,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    population: PopulationOpt = 100,
    generations: GenerationsOpt = 50,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Find the most accurate SubNet within a latency / MACs / parameter budget, with no
    training: NSGA-II over the space, ranked by the fitted accuracy predictor.

    Give the limits with --max-latency-ms (needs --latency-table), --max-macs,
    --max-params, or many targets with --targets. A limit below the smallest SubNet's
    cost is refused, naming the smallest achievable value. -o writes the SubNet for
    `weightshare export --subnet`.

    Example:

        weightshare search -c ckpt.pt -t cpu_table.json --max-latency-ms 5 -o subnet.json
    """
    from .search.common import atomic_write_text
    from .search.specialize import specialize_targets
    from .search.targets import Target, load_targets

    caps = _caps(max_latency_ms, max_macs, max_params)
    if targets is not None and caps:
        raise ValueError("give either --targets or --max-latency-ms/--max-macs/--max-params")
    goals = (load_targets(targets) if targets is not None
             else [Target("target", **caps)] if caps else None)
    if goals is None:
        raise ValueError("give a limit (--max-latency-ms, --max-macs, --max-params) or --targets; "
                         "for the whole frontier use `weightshare frontier`")
    _, evaluator, source, _ = _load_for_search(checkpoint, latency_table, measured, dataset,
                                               data_dir, device)
    results = specialize_targets(evaluator.net, evaluator, goals, objective=objective,
                                 pop_size=population, generations=generations, seed=seed,
                                 progress=not as_json)
    written = []
    if output is not None:
        for r in results:
            path = output / f"{r.target.name}.json" if targets is not None else output
            atomic_write_text(path, r.best.subnet.to_json() + "\n")
            written.append(str(path))
    if as_json:
        rows = [{**r.to_dict(), "accuracy_source": source} for r in results]
        for row, path in zip(rows, written or [None] * len(rows), strict=True):
            row["output"] = path
        emit_json(rows if targets is not None else rows[0])
        return
    for i, r in enumerate(results):
        typer.echo(f"{r.target.name} {r.target.constraints}: {_fmt_candidate(r.best)} "
                   f"[{source}; {r.result.evaluations} evaluations, {r.seconds:.1f} s]")
        typer.echo(f"  {r.best.subnet.to_json()}")
        if written:
            typer.echo(f"  wrote {written[i]} (weightshare export -c {checkpoint} --subnet "
                       f"{written[i]} -o {Path(written[i]).with_suffix('.onnx')})")


@app.command()
def frontier(
    checkpoint: CheckpointOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FRONTIER.json", help="Frontier file.")
    ],
    latency_table: TableOpt = None,
    max_latency_ms: MaxLatencyOpt = None,
    max_macs: MaxMacsOpt = None,
    max_params: MaxParamsOpt = None,
    objective: ObjectiveOpt = None,
    measured: MeasuredOpt = False,
    remeasure: Annotated[
        bool, typer.Option("--remeasure/--no-remeasure",
                           help="Re-measure the frontier's true test top-1 after BN recalibration.")
    ] = True,
    plot: Annotated[
        Path | None, typer.Option("--plot", metavar="PNG", help="Plot (default: FRONTIER.png).")
    ] = None,
    save: Annotated[
        bool, typer.Option("--save/--no-save", help="Store the frontier SubNets' recalibrated "
                           "BN statistics in the checkpoint (for serving).")
    ] = True,
    dataset: DatasetNameOpt = None,
    data_dir: DataDirOpt = None,
    population: PopulationOpt = 100,
    generations: GenerationsOpt = 50,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Search the whole accuracy-vs-cost Pareto frontier in one NSGA-II run, re-measure the
    frontier SubNets' true accuracy, and write them as JSON plus a plot.

    The file is a list of {subnet, predicted_acc, measured_acc, macs, params, latency_ms},
    by increasing cost: what serving deploys. Limits (--max-*) keep the frontier within a
    budget. The plot shows accuracy vs latency (with a table) and vs MACs.

    Example:

        weightshare frontier -c ckpt.pt -t cpu_table.json -o frontier.json
    """
    from .checkpoint import save_checkpoint
    from .search.common import supernet_identity
    from .search.frontier import measure_frontier, plot_frontier, save_frontier
    from .search.nsga import nsga2_search, require_feasible
    from .search.specialize import dataset_for
    from .search.targets import Target, check_feasible

    caps = _caps(max_latency_ms, max_macs, max_params)
    ck, evaluator, source, data = _load_for_search(checkpoint, latency_table, measured, dataset,
                                                   data_dir, device)
    net = evaluator.net
    constraints: dict[str, float] = {}
    if caps:
        target = Target("frontier", **caps)
        check_feasible(target, evaluator.costs(net.space.smallest()))
        constraints = target.constraints
    obj = objective or ("latency" if evaluator.table is not None else "macs")
    t0 = time.perf_counter()
    result = require_feasible(nsga2_search(net.space, evaluator, objective=obj,
                                           constraints=constraints, pop_size=population,
                                           generations=generations, seed=seed,
                                           progress=not as_json), "the frontier search")
    search_s = time.perf_counter() - t0
    if remeasure and data is None:
        data = dataset_for(ck, dataset, data_dir)
    points = measure_frontier(net, result.pareto, data if remeasure else None, device=device,
                              progress=not as_json)
    table = evaluator.table
    save_frontier(output, points, supernet=supernet_identity(net), extra={
        "objective": result.objective, "constraints": constraints, "accuracy_source": source,
        "evaluations": result.evaluations, "search_s": search_s,
        "latency_table": ({"path": str(latency_table), "device": table.device,
                           "batch": table.batch, "threads": table.threads}
                          if table is not None else None),
    })
    plot_path = plot_frontier(points, plot or output.with_suffix(".png"),
                              title=f"{net.name}: {len(points)} Pareto SubNets ({source})")
    if save and remeasure:
        save_checkpoint(checkpoint, net, train_state=ck.train_state, meta=ck.meta)
    if as_json:
        emit_json({"path": str(output), "plot": str(plot_path), "evaluations": result.evaluations,
                   "search_s": search_s, "frontier": [p.to_dict() for p in points]})
        return
    typer.echo(f"{len(points)} Pareto SubNets from {result.evaluations} evaluations "
               f"({search_s:.1f} s, accuracy {source})")
    typer.echo(f"{'MACs':>10}  {'params':>9}  {'lat ms':>7}  {'pred %':>6}  {'test %':>6}")
    for p in points:
        lat = f"{p.latency_ms:7.3f}" if p.latency_ms is not None else f"{'-':>7}"
        meas = f"{p.measured_acc:6.2f}" if p.measured_acc is not None else f"{'-':>6}"
        typer.echo(f"{fmt_count(p.macs):>10}  {fmt_count(p.params):>9}  {lat}  "
                   f"{p.predicted_acc:6.2f}  {meas}")
    typer.echo(f"wrote {output} and {plot_path}")


# ---------------------------------------------------------------------------------------------
# Serving (weightshare.serve): `serve` (the server), `serve profile|simulate|runtime`, `loadtest`
# ---------------------------------------------------------------------------------------------

serve_app = typer.Typer(
    help="Serve a SuperNet adaptively (SuperServe): the Open Inference Protocol server, its "
    "latency profile, the simulator and the runtime report.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(serve_app, name="serve")

ServeCheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", "-c", metavar="CKPT", help="SuperNet checkpoint.")
]
ServeDeployOpt = Annotated[
    Path | None,
    typer.Option("--deploy", metavar="FRONTIER.json",
                 help='SubNets to deploy: a JSON list of {"subnet": {...}, "acc": ...} '
                 "(default: --num-subnets spread evenly in MACs)."),
]
ServeNumSubnetsOpt = Annotated[
    int, typer.Option("--num-subnets", "-n", min=1, help="SubNets to deploy without --deploy.")
]
ServeDatasetOpt = Annotated[
    str, typer.Option("--dataset", help="Dataset for BN recalibration and test accuracy of "
                      "SubNets the checkpoint lacks them for.")
]
ServeDataDirOpt = Annotated[Path | None, typer.Option("--data-dir", metavar="DIR",
                                                 help="Dataset folder.")]
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


def _stack_config(checkpoint: Path, **kw: Any) -> Any:
    from .serve.stack import StackConfig

    for key in ("deploy", "data_dir", "profile"):
        if kw.get(key) is not None:
            kw[key] = str(kw[key])
    return StackConfig(checkpoint=str(checkpoint), **kw)


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
    data_dir: ServeDataDirOpt = None,
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
) -> None:
    """Serve a checkpoint over the Open Inference Protocol (KServe v2 / Triton HTTP): one
    SuperNet in memory, the SubNet and batch size chosen per batch by the policy (SlackFit by
    default) from the latency profile, measured once and saved beside the checkpoint.

    Requests may set "parameters": {"slo_ms": 50}; answers say which SubNet served them.
    Ctrl-C drains in-flight requests, then exits. Subcommands: profile, simulate, runtime.

    Example:

        weightshare serve --checkpoint runs/deps/checkpoint.pt --policy slackfit --slo-ms 100
    """
    if ctx.invoked_subcommand is not None:
        return
    if checkpoint is None:
        typer.echo(ctx.get_help())
        fail("--checkpoint is required to serve (or name a subcommand)")
    import uvicorn

    from .serve.metrics import ServeMetrics
    from .serve.server import ServerConfig, create_app
    from .serve.stack import build_stack
    from .serve.worker import InferenceWorker

    if host not in ("127.0.0.1", "localhost", "::1"):
        _log(f"warning: binding {host}: the server is reachable from other machines"
             + ("" if token else " without a token"))
    stack = build_stack(_stack_config(
        checkpoint, policy=policy, deploy=deploy, num_subnets=num_subnets, dataset=dataset,
        data_dir=data_dir, test_subset=test_subset, profile=profile, max_batch=max_batch,
        threads=threads, switch_mode=switch_mode), log=_log)
    metrics = ServeMetrics()
    worker = InferenceWorker(stack.backend, stack.policy, stack.profile,
                             queue_capacity=queue_size, metrics=metrics)
    app_ = create_app(worker, stack.runtime.input_shape(), stack.runtime.num_classes,
                      ServerConfig(model_name=model_name, slo_ms=slo_ms,
                                   max_request_batch=max_batch, token=token,
                                   info={"checkpoint": str(checkpoint)}), metrics)
    for s in stack.profile.subnets:
        _log(f"  {s.name}: {fmt_count(s.macs)} MACs, {s.acc:.2f} %, "
             f"{stack.profile.latency_ms(s.name, 1, 'median'):.2f} ms at batch 1")
    _log(f"serving {model_name!r} with {stack.policy.describe()} on http://{host}:{port}/v2")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=30)
    finally:
        stack.close()


@serve_app.command("profile")
def serve_profile(
    checkpoint: ServeCheckpointOpt,
    deploy: ServeDeployOpt = None,
    num_subnets: ServeNumSubnetsOpt = 6,
    dataset: ServeDatasetOpt = "fashion-mnist",
    data_dir: ServeDataDirOpt = None,
    test_subset: ServeTestSubsetOpt = None,
    profile: ServeProfileOpt = None,
    max_batch: ServeMaxBatchOpt = 32,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per batch size.")] = 20,
    threads: ServeThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure the latency profile the scheduler plans with: every deployed SubNet at batch
    sizes 1, 2, 4, ... up to --max-batch (median and p99), the time to load each as a
    separate model from disk, and the SubNetAct switch cost; saved as JSON with the machine,
    thread count and checkpoint identity (`serve` reuses it while they match).

    Example:

        weightshare serve profile -c runs/deps/checkpoint.pt --max-batch 32 --threads 2
    """
    from .serve.stack import build_stack

    stack = build_stack(_stack_config(
        checkpoint, deploy=deploy, num_subnets=num_subnets, dataset=dataset, data_dir=data_dir,
        test_subset=test_subset, profile=profile, reprofile=True, max_batch=max_batch,
        profile_runs=runs, threads=threads), log=_log)
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


@serve_app.command("simulate")
def serve_simulate(
    profile: Annotated[Path, typer.Option("--profile", "-p", metavar="FILE.json",
                                          help="Profile from `serve profile`.")],
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
    from .serve.policies import make_policy
    from .serve.profile import Profile
    from .serve.simulate import SimConfig, simulate
    from .serve.traces import make_trace

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
    data_dir: ServeDataDirOpt = None,
    test_subset: ServeTestSubsetOpt = None,
    profile: ServeProfileOpt = None,
    max_batch: ServeMaxBatchOpt = 32,
    threads: ServeThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report the SubNetAct runtime: bytes held for all deployed SubNets in one SuperNet vs
    the same SubNets as separate extracted models, the switch cost between SubNets (µs) and
    the cost of loading an extracted model from disk (ms).

    Example:

        weightshare serve runtime -c runs/deps/checkpoint.pt --json
    """
    import tempfile

    from .serve.runtime import ExtractedModelStore
    from .serve.stack import build_stack

    stack = build_stack(_stack_config(
        checkpoint, deploy=deploy, num_subnets=num_subnets, dataset=dataset, data_dir=data_dir,
        test_subset=test_subset, profile=profile, max_batch=max_batch, threads=threads),
        log=_log)
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

    from .serve.loadgen import LoadConfig, run_load_sync
    from .serve.traces import make_trace

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


# ------------------------------------------------------------------------ accel
accel_app = typer.Typer(
    help="Small accelerators: SUSHI SubGraph-cache simulator and FastSwitch delta loading.",
    no_args_is_help=True,
)
app.add_typer(accel_app, name="accel")

AccelFrontierOpt = Annotated[
    Path, typer.Option("--frontier", "-f", metavar="F.json",
                       help='Deployed SubNets: a JSON list of {"subnet": {...}, "acc": ...} '
                       "(a serving profile's \"subnets\" works too).")
]


@accel_app.command("simulate")
def accel_simulate(
    checkpoint: ServeCheckpointOpt,
    frontier: AccelFrontierOpt,
    device: Annotated[str, typer.Option("--device", help="Device preset: fpga-small, mcu.")
                      ] = "fpga-small",
    buffer_kb: Annotated[list[float] | None, typer.Option(
        "--buffer-kb", help="On-chip buffer (KiB); repeatable (default: the preset's).")] = None,
    trace: Annotated[str, typer.Option(
        "--trace", help="Serving trace spec (shape only: stretched to --load).")
    ] = "gamma:cv2=4,duration=10",
    policy: Annotated[list[str] | None, typer.Option(
        "--policy", help="Cache policy; repeatable (default: none, lru, subgraph-stationary).")
    ] = None,
    scheduler: Annotated[list[str] | None, typer.Option(
        "--scheduler", help="Scheduler; repeatable (default: static, cache-aware).")] = None,
    load: Annotated[float, typer.Option(
        "--load", help="Mean arrivals per uncached service time of the most accurate SubNet.")
    ] = 0.5,
    slo_factor: Annotated[float, typer.Option(
        "--slo-factor", help="Latency target = this x the most accurate SubNet's uncached "
        "service time.")] = 2.0,
    window: Annotated[int, typer.Option("--window", min=1,
                                        help="SubGraph Stationary: queries it looks back.")] = 32,
    every: Annotated[int, typer.Option("--every", min=1,
                                       help="SubGraph Stationary: update every N queries.")] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Replay a serving trace on a modeled accelerator with an on-chip weight cache: per
    (buffer, cache policy, scheduler) the off-chip bytes per query, modeled latency and
    energy, mean served accuracy and the fraction of latency targets met.

    Example:

        weightshare accel simulate --checkpoint ckpt.pt --frontier F.json --device fpga-small --buffer-kb 512 --trace gamma
    """
    from .accel.cache import list_caches
    from .accel.device import get_device
    from .accel.run import load_deployment, sweep
    from .accel.sim import AccelModel

    dev = get_device(device)
    net, deployed = load_deployment(checkpoint, frontier)
    model = AccelModel.from_supernet(net, deployed)
    rows = sweep(model, [dev], buffer_kb or [dev.buffer_bytes / 1024], policy or list_caches(),
                 scheduler or ["static", "cache-aware"], trace, load=load, slo_factor=slo_factor,
                 cache_options={"window": window, "every": every})
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"{'device':<11} {'buf KiB':>8} {'policy':<20} {'scheduler':<12} "
               f"{'offchip KB/q':>12} {'lat ms':>8} {'E mJ':>8} {'acc %':>6} {'met %':>6}")
    for r in rows:
        typer.echo(f"{r['device']:<11} {r['buffer_kb']:8g} {r['policy']:<20} "
                   f"{r['scheduler']:<12} {r['offchip_bytes_per_query'] / 1e3:12.1f} "
                   f"{r['latency_ms']:8.3f} {r['energy_mj']:8.4f} {r['mean_acc']:6.2f} "
                   f"{100 * r['target_met']:6.1f}")


@accel_app.command("fastswitch")
def accel_fastswitch(
    checkpoint: ServeCheckpointOpt,
    frontier: AccelFrontierOpt,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed switches per pair.")
                       ] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Measure FastSwitch on this machine: for every ordered pair of deployed SubNets, the
    bytes read and wall time of a delta switch (safetensors slices of the SuperNet) vs
    loading the target's whole extracted model (torch.load).

    Example:

        weightshare accel fastswitch --checkpoint ckpt.pt --frontier F.json --repeats 3
    """
    from .accel.run import fastswitch_pairs, load_deployment

    net, deployed = load_deployment(checkpoint, frontier)
    rows = fastswitch_pairs(net, deployed, repeats=repeats)
    if as_json:
        emit_json(rows)
        return
    typer.echo(f"{'from':<5} {'to':<5} {'delta KB':>9} {'full KB':>9} {'delta ms':>9} "
               f"{'full ms':>9}")
    for r in rows:
        typer.echo(f"{r['from']:<5} {r['to']:<5} {r['delta_bytes'] / 1e3:9.1f} "
                   f"{r['full_bytes'] / 1e3:9.1f} {r['delta_ms']:9.3f} {r['full_ms']:9.3f}")
    n = len(rows)
    typer.echo(f"mean: delta {sum(r['delta_bytes'] for r in rows) / n / 1e3:.1f} KB "
               f"{sum(r['delta_ms'] for r in rows) / n:.3f} ms, full "
               f"{sum(r['full_bytes'] for r in rows) / n / 1e3:.1f} KB "
               f"{sum(r['full_ms'] for r in rows) / n:.3f} ms")


if __name__ == "__main__":  # python -m weightshare.cli
    sys.exit(main())
