"""The `weightshare` command line: thin wrappers that parse, call the library and print.

This module is the application (`app` and its error handling), the shared options and
the helpers; the commands live in the sibling modules (`supernet`, `search`, `serve`,
...), each adding its commands to `app` when `weightshare.cli` imports it.

Adding a command
----------------
Write a function decorated with ``@app.command()`` in the sibling module of its area
(a new module is imported from ``cli/__init__.py``) whose docstring says what it
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
