"""The reference SuperNet shipped in checkpoints/reference/ loads and scores what it recorded.

benchmarks/reference.py scored its smallest and largest SubNet on the first 2 000
test images with the checkpoint's own per-SubNet BN statistics and wrote the result
to benchmarks/results/reference.json; here the same evaluation must reproduce it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "checkpoints" / "reference" / "checkpoint.pt"
RESULT = ROOT / "benchmarks" / "results" / "reference.json"

pytestmark = pytest.mark.skipif(
    not (CKPT.exists() and RESULT.exists()),
    reason="the reference run has not been packaged yet (benchmarks/reference.py)")


def test_reference_checkpoint_reproduces_its_recorded_accuracy():
    from weightshare.checkpoint import load_checkpoint
    from weightshare.search.specialize import dataset_for
    from weightshare.train.evaluate import accuracy

    recorded = json.loads(RESULT.read_text())
    check = recorded["subset_check"]
    ck = load_checkpoint(CKPT)
    assert "optimizer" not in ck.train_state  # shipped slim
    assert CKPT.stat().st_size == recorded["bytes"]
    net, sp = ck.supernet.eval(), ck.supernet.space
    assert sp.smallest() in net.subnet_norms and sp.largest() in net.subnet_norms
    data = dataset_for(ck)
    test = data.test.subset(range(check["test_images"]))
    for name, cfg in (("smallest", sp.smallest()), ("largest", sp.largest())):
        # 0.1 points = 2 of 2 000 images: argmax ties may flip on another CPU's float rounding
        assert accuracy(net, cfg, data, test) == pytest.approx(check[name], abs=0.1), name
