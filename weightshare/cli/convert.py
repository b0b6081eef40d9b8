"""`weightshare convert`: a user's trained CNN (their Python class + weights) -> a SuperNet checkpoint."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .core import JsonOpt, app, emit_json, fmt_count


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} is a comma-separated list of numbers, got {text!r}") \
            from None


def _load_callable(target: str) -> Any:
    """MODULE:CALLABLE (a dotted module on sys.path or a .py file) -> the object it names."""
    from ..convert import ConvertError

    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConvertError(f"{target!r} is not MODULE:CALLABLE (e.g. mypkg.models:build_net or "
                           "models.py:Net)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConvertError(f"no Python file {path}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules in the cwd
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConvertError(f"cannot import {module_name!r}: {err}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConvertError(f"module {module_name!r} has no attribute {attr!r}") from None


def _load_weights(model: Any, path: Path) -> None:
    from ..checkpoint import load_torch_file
    from ..convert import ConvertError

    state = load_torch_file(path, missing="weights file", what="weights file")
    if isinstance(state, dict) and not any(hasattr(v, "shape") for v in state.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ConvertError(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        raise ConvertError(f"{path} does not fit the model: {' '.join(lines[:3])[:400]}") from None


@app.command("convert")
def convert_command(
    target: Annotated[str, typer.Argument(
        metavar="MODULE:CALLABLE",
        help="Your model: a callable returning the torch.nn.Module (its class, or a function), "
        "as dotted.module:name or path/to/file.py:name; or an nn.Module instance.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="CKPT",
                                         help="The SuperNet checkpoint to write.")],
    weights: Annotated[Path | None, typer.Option(
        "--weights", "-w", metavar="FILE",
        help="Trained weights: a state_dict saved with torch.save (also under a 'state_dict' "
        "or 'model' key). Without it the model's own initial weights are used.")] = None,
    input_shape: Annotated[str, typer.Option(
        "--input-shape", metavar="C,H,W", help="One input image's shape (square).")] = "1,28,28",
    width: Annotated[str, typer.Option(
        "--width", metavar="R,R,...",
        help="Width ratios offered for every inner width (must include 1).")] = "0.5,0.75,1",
    depth: Annotated[bool, typer.Option(
        "--depth/--no-depth", help="Make skippable residual blocks elastic (depth).")] = True,
    kernel: Annotated[str | None, typer.Option(
        "--kernel", metavar="K,K,...",
        help="Elastic depthwise kernel sizes, e.g. 3,5 (centre crop + learned transforms).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn your trained CNN into an elastic SuperNet checkpoint, without changing its code.

    The model is traced with torch.fx; inner widths of residual, inverted-residual
    and plain conv blocks become elastic, identity-shortcut blocks skippable, and
    (with --kernel) depthwise kernels elastic. The largest SubNet is your model:
    the command checks that it computes the same outputs (max |diff| <= 1e-5) and
    refuses layers it cannot handle, naming them. The checkpoint stores the
    structure as data and loads without your class, so every other command takes
    it: train --from, evaluate, frontier, search, export, serve.

    Supported layers: Conv2d (dense or depthwise), BatchNorm2d, Linear, ReLU/ReLU6/
    Hardswish/Hardsigmoid/SiLU/Sigmoid/GELU/Tanh, Dropout, Max/AvgPool2d, residual
    adds, squeeze-excite gates (x * gate), global average pooling, flatten. Elastic
    depth needs the runs of skippable blocks to share a length (one depth range
    for all units); the command says when it had to keep depth fixed.

    Example:

        weightshare convert mymodels:resnet --weights resnet.pt -o resnet_ws.pt

        weightshare train --method deps --from resnet_ws.pt --set shrink_at=0 --epochs 3
    """
    import torch

    from ..checkpoint import save_checkpoint
    from ..convert import ConvertError, convert

    shape = tuple(int(v) for v in _floats(input_shape, "--input-shape"))
    if len(shape) != 3 or shape[1] != shape[2] or min(shape) < 1:
        raise ConvertError(f"--input-shape must be C,H,W with H == W, got {input_shape!r}")
    obj = _load_callable(target)
    model = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(model, torch.nn.Module):
        raise ConvertError(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(model, weights)
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    net = convert(model, example, width=_floats(width, "--width"), depth=depth,
                  kernel=tuple(int(k) for k in _floats(kernel, "--kernel")) if kernel else None)
    save_checkpoint(output, net, meta={"converted_from": target,
                                       "weights": str(weights) if weights else None,
                                       "largest_vs_original_maxdiff": net.conversion_maxdiff})
    big, small = net.space.largest(), net.space.smallest()
    cb, cs = net.cost(big), net.cost(small)
    summary = {"output": str(output), "space": net.space.to_dict(),
               "space_summary": net.space.summary(), "notes": net.structure.notes,
               "largest_vs_original_maxdiff": net.conversion_maxdiff,
               "largest": cb.to_dict(), "smallest": cs.to_dict()}
    if as_json:
        emit_json(summary)
        return
    typer.echo(f"converted {target}: {net.space.summary()}")
    for note in net.structure.notes:
        typer.echo(f"  note: {note}")
    typer.echo(f"largest SubNet == your model: max |diff| {net.conversion_maxdiff:.3g} "
               f"({fmt_count(cb.macs)} MACs, {fmt_count(cb.params)} params); smallest "
               f"{fmt_count(cs.macs)} MACs, {fmt_count(cs.params)} params")
    typer.echo(f"checkpoint: {output}\nnext: weightshare train --method deps --from {output} "
               "--set shrink_at=0")
