"""Export an extracted SubNet to ONNX and prove the file computes what PyTorch does.

`export_onnx` writes the file, runs `onnx.checker`, then runs the same random
batch through onnxruntime and PyTorch and compares; a file is only reported as
exported once that comparison passes.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import WeightshareError

__all__ = ["ExportError", "ExportReport", "export_onnx", "verify_onnx"]


class ExportError(WeightshareError, RuntimeError):
    """The ONNX file could not be written, failed the checker or disagrees with PyTorch."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    opset: int
    bytes: int
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"path": str(self.path), "max_abs_diff": self.max_abs_diff, "opset": self.opset,
                "bytes": self.bytes, "input_shape": list(self.input_shape)}


def verify_onnx(path: str | os.PathLike, model: nn.Module, x: torch.Tensor,
                atol: float = 1e-4) -> float:
    """Check the ONNX graph, run `x` through onnxruntime and `model`; return the max difference."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as err:
        raise ExportError(f"{path} fails onnx.checker: {err}") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    if got.shape != want.shape:
        raise ExportError(f"onnxruntime output shape {got.shape} != PyTorch {want.shape}")
    diff = float(np.abs(got - want).max())
    if not diff <= atol:
        raise ExportError(f"onnxruntime and PyTorch differ by {diff:.3g} > {atol:g} on {path}")
    return diff


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, int, int], *,
                opset: int = 18, atol: float = 1e-4, dynamic_batch: bool = True,
                exporter: str = "dynamo", seed: int = 0) -> ExportReport:
    """Export `model` (eval mode, input `(N, *input_shape)`) to `path` and verify it.

    exporter: "dynamo" (torch.export based, PyTorch's default) or "torchscript"
    (the older tracer, faster to run, deprecated by PyTorch).
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, *input_shape, generator=gen)
    kwargs: dict = {"input_names": ["input"], "output_names": ["logits"], "opset_version": opset}
    if exporter == "dynamo":
        kwargs["dynamo"] = True
        # one self-contained file (weights inline), so it can be moved and renamed
        kwargs["external_data"] = False
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
    else:
        kwargs["dynamo"] = False
        if dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # The exporters print progress and deprecation notes; keep the CLI readable.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), **kwargs)
        check = torch.randn(3, *input_shape, generator=gen)  # another batch size than traced
        diff = verify_onnx(tmp, model, check if dynamic_batch else example, atol)
        os.replace(tmp, path)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}") from err
    return ExportReport(path, diff, opset, path.stat().st_size, tuple(input_shape))
