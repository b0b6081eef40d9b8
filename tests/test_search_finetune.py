"""`weightshare finetune`: KD fine-tuning of one SubNet, resumable, exportable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import ok, user_error
from test_search_cli import TINY_SET

from weightshare.checkpoint import load_checkpoint, read_payload
from weightshare.data import load_dataset
from weightshare.search import SearchError
from weightshare.search.finetune import FinetuneConfig, finetune, load_subnet_choice
from weightshare.space import SubnetConfig

DATA = ["--dataset", "synthetic"]
FAST = FinetuneConfig(epochs=2, batch_size=32, lr=0.1)


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ft") / "ck.pt"
    ok("init", *TINY_SET, "--seed", "2", "-o", path)
    return path


@pytest.fixture(scope="module")
def data():
    # The dataset `dataset_for` builds for a checkpoint without a training config.
    return load_dataset("synthetic", n_train=256, n_test=64, calib_size=64)


@pytest.fixture(scope="module")
def space(ck):
    return load_checkpoint(ck).supernet.space


def test_cli_finetune_then_export(ck, space, tmp_path):
    sub = tmp_path / "subnet.json"
    sub.write_text(space.smallest().to_json())
    out = tmp_path / "tuned.pt"
    res = json.loads(ok("finetune", "-c", ck, "--subnet", sub, "--epochs", "1", "-o", out,
                        "--batch-size", "128", *DATA, "--threads", "1", "--json").stdout)
    assert res["subnet"] == space.smallest().to_dict() and res["steps"] >= 1
    assert 0 <= res["acc_before"] <= 100 and 0 <= res["acc_after"] <= 100
    payload = read_payload(out)
    assert payload["meta"]["finetuned_subnet"] == space.smallest().to_json()
    assert payload["train_state"]["finetune"]["done"] is True
    # Only the fine-tuned SubNet's BN statistics are kept.
    assert [e["subnet"] for e in payload["subnet_norms"]] == [space.smallest().to_json()]
    onnx = tmp_path / "tuned.onnx"
    ok("export", "-c", out, "--subnet", sub, "-o", onnx, "--exporter", "torchscript")
    assert onnx.stat().st_size > 0
    # Running it again does not train again.
    again = json.loads(ok("finetune", "-c", ck, "--subnet", sub, "--epochs", "1", "-o", out,
                          "--batch-size", "128", *DATA, "--json").stdout)
    assert again["acc_after"] == res["acc_after"]


def test_cli_finetune_errors(ck, tmp_path):
    out = tmp_path / "o.pt"
    assert "--checkpoint" in user_error("finetune", "-c", ck, "--subnet", "largest", "-o", ck,
                                        *DATA)
    err = user_error("finetune", "-c", ck, "--subnet", str(tmp_path / "nope.json"), "-o", out,
                     *DATA)
    assert "neither JSON" in err
    # An existing file that is not a fine-tune of this SubNet is never overwritten.
    ok("init", *TINY_SET, "-o", out)
    assert "not a fine-tune" in user_error("finetune", "-c", ck, "--subnet", "largest", "-o",
                                            out, *DATA, "--epochs", "1")


def test_finetune_learns_and_resumes_identically(ck, space, data, tmp_path):
    cfg = space.smallest()
    whole = finetune(ck, cfg, data, tmp_path / "whole.pt", FAST)
    assert whole.steps == 2 * (len(data.train) // 32) and len(whole.history) == 2
    assert whole.acc_after > whole.acc_before  # random init: fine-tuning must help

    class Stop(Exception):
        pass

    def stop_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise Stop

    part = tmp_path / "part.pt"
    with pytest.raises(Stop):
        finetune(ck, cfg, data, part, FAST, save_every=1, on_step=stop_at_5)
    assert read_payload(part)["train_state"]["finetune"]["step"] == 4  # saved before the kill
    resumed = finetune(ck, cfg, data, part, FAST)
    assert resumed.resumed_from_step == 4
    a = load_checkpoint(tmp_path / "whole.pt").supernet.state_dict()
    b = load_checkpoint(part).supernet.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert resumed.acc_after == pytest.approx(whole.acc_after)
    # Other settings do not silently resume a run made with different ones.
    with pytest.raises(SearchError, match="other settings"):
        finetune(ck, cfg, data, part, FinetuneConfig(epochs=3, batch_size=32, lr=0.1))


def test_subnet_choice_reads_search_outputs(space, tmp_path):
    small, large = space.smallest(), space.largest()
    assert load_subnet_choice(small.to_json(), space) == small
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"name": "target", "subnet": large.to_dict(), "macs": 1}))
    assert load_subnet_choice(str(single), space) == large
    many = tmp_path / "many.json"
    many.write_text(json.dumps([{"name": "a", "subnet": small.to_dict()},
                                {"name": "b", "subnet": large.to_dict()}]))
    assert load_subnet_choice(str(many), space, "b") == large
    with pytest.raises(ValueError, match="choose one with --target"):
        load_subnet_choice(str(many), space)
    with pytest.raises(ValueError, match="not in"):
        load_subnet_choice(str(many), space, "zzz")
    front = tmp_path / "frontier.json"
    front.write_text(json.dumps({"frontier": [{"subnet": small.to_dict()},
                                              {"subnet": large.to_dict()}]}))
    assert load_subnet_choice(str(front), space, "1") == large
    with pytest.raises(ValueError, match="--target INDEX"):
        load_subnet_choice(str(front), space)
    bad = SubnetConfig(small.depths, small.expands, small.kernels, small.widths, 999)
    with pytest.raises(ValueError, match="not a SubNet"):
        load_subnet_choice(json.dumps(bad.to_dict()), space)
