"""Checkpoints round-trip, load with weights_only, fail clearly and are written atomically."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import build

from weightshare.checkpoint import CheckpointError, load_checkpoint, read_payload, save_checkpoint
from weightshare.nn import NormContext, StatsRecorder


@pytest.fixture
def net():
    return build("ofa_mbv3_small")


def _with_norms(net):
    cfg = net.space.sample(random.Random(1))
    rec = StatsRecorder()
    with torch.no_grad():
        net(torch.randn(8, *net.input_shape()), cfg, norm=NormContext(recorder=rec))
    net.set_subnet_stats(cfg, rec.result())
    return cfg


def test_roundtrip_weights_norms_and_train_state(net, tmp_path):
    cfg = _with_norms(net)
    path = save_checkpoint(tmp_path / "a.pt", net, train_state={"epoch": 3, "lr": [0.1, 0.2]})
    ck = load_checkpoint(path)
    assert ck.supernet.name == "ofa_mbv3_small" and ck.train_state["epoch"] == 3
    assert ck.supernet.space == net.space
    assert set(ck.supernet.subnet_norms) == {cfg}
    x = torch.randn(2, *net.input_shape())
    ck.supernet.eval()
    with torch.no_grad():
        for c in (cfg, net.space.largest()):
            torch.testing.assert_close(ck.supernet(x, c), net(x, c))
    # weights_only loading works on the raw file (no pickled code)
    torch.load(path, weights_only=True)


def test_nondefault_config_is_rebuilt(tmp_path):
    import weightshare as ws

    net = ws.create_supernet("ofa_mbv3_small", width_mult=0.5, kernel_choices=(3, 5), num_classes=7)
    ck = load_checkpoint(save_checkpoint(tmp_path / "b.pt", net))
    assert ck.supernet.space.kernel_choices == (3, 5) and ck.supernet.num_classes == 7


def test_missing_truncated_and_foreign_files(net, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint(tmp_path / "good.pt", net)
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a torch file"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"hello world" * 10)
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a weightshare checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_weights_that_do_not_fit_are_reported(net, tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", net)
    payload = read_payload(path)
    payload["state_dict"].pop("classifier.weight")
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(tmp_path / "broken.pt")
    payload = read_payload(path)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="newer than this"):
        load_checkpoint(tmp_path / "future.pt")


def test_failed_write_keeps_previous_checkpoint(net, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "d.pt", net, train_state={"epoch": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, net, train_state={"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path).train_state["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]  # no temp files left behind
