"""Extracted SubNets export to ONNX, pass the checker and match onnxruntime."""

from __future__ import annotations

import onnx
import pytest
import torch

from weightshare.export import ExportError, export_onnx, verify_onnx


def test_export_smallest_of_every_supernet(supernet, tmp_path):
    cfg = supernet.space.smallest()
    model = supernet.extract(cfg)
    report = export_onnx(model, tmp_path / "m.onnx", supernet.input_shape(cfg),
                         exporter="torchscript")
    assert report.max_abs_diff <= 1e-4 and report.bytes > 0
    onnx.checker.check_model(onnx.load(str(report.path)))


def test_dynamo_exporter_and_dynamic_batch(supernet, tmp_path):
    if supernet.name != "ofa_mbv3_small":
        pytest.skip("the slower dynamo exporter is exercised once")
    cfg = supernet.space.largest()
    model = supernet.extract(cfg)
    report = export_onnx(model, tmp_path / "m.onnx", supernet.input_shape(cfg))
    # any batch size runs: verify with 7 images
    diff = verify_onnx(report.path, model, torch.randn(7, *supernet.input_shape(cfg)))
    assert diff <= 1e-4


def test_mismatch_is_detected(supernet, tmp_path):
    if supernet.name != "ofa_mbv3_small":
        pytest.skip("one SuperNet is enough")
    a = supernet.extract(supernet.space.smallest())
    b = supernet.extract(supernet.space.largest())
    report = export_onnx(a, tmp_path / "a.onnx", supernet.input_shape(), exporter="torchscript")
    with pytest.raises(ExportError, match="differ by"):
        verify_onnx(report.path, b, torch.randn(2, *supernet.input_shape()))
