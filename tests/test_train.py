"""Training end to end on synthetic data: every method, resume after SIGKILL, DDP with 2 ranks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from weightshare.checkpoint import load_checkpoint
from weightshare.train import TrainConfig, method_names, train
from weightshare.train.loop import planned_train_macs

TINY_NET = {"width_mult": 0.25, "kernel_choices": [3, 5], "feature_dim": 32,
            "unit_widths": [16, 16, 24, 24, 32]}


def tiny_config(tmp: Path, **kw) -> TrainConfig:
    base = dict(
        supernet_args=TINY_NET, dataset="synthetic",
        dataset_args={"n_train": 320, "n_test": 64}, calib_size=64,
        epochs=2, batch_size=32, lr=0.05, eval_spread=1, progress=False,
        tensorboard=False, out=str(tmp),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("method", method_names())  # every registered method
def test_every_method_trains_and_evaluates(method, tmp_path):
    res = train(tiny_config(tmp_path / method, method=method))
    s = res.summary
    assert s["steps"] == s["total_steps"] == 2 * 8  # (320 - 64 calib) / 32
    assert s["train_macs"] > 0 and s["wall_s"] > 0
    assert {"smallest", "largest", "mean"} <= set(s["acc"])
    assert len(s["eval"]) == 5  # 4 corners + 1 spread
    losses = [json.loads(line)["loss"] for line in (tmp_path / method / "log.jsonl").read_text().splitlines()
              if '"kind": "train"' in line]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
    ck = load_checkpoint(tmp_path / method / "checkpoint.pt")
    assert ck.train_state["step"] == 16
    # the plans alone predict the compute exactly (used to budget runs before training)
    cfg = tiny_config(tmp_path / method, method=method)
    assert planned_train_macs(cfg, ck.supernet, 8) == s["train_macs"]
    assert len(ck.supernet.subnet_norms) == 5  # recalibrated stats saved for serving


def test_deps_costs_less_than_bignas_per_epoch(tmp_path):
    deps = train(tiny_config(tmp_path / "d", method="deps"))
    bignas = train(tiny_config(tmp_path / "b", method="bignas"))
    # first half of DepS trains one SubNet per step, BigNAS four from the start
    assert deps.summary["train_macs"] < bignas.summary["train_macs"]


def test_refuses_to_overwrite_without_resume(tmp_path):
    train(tiny_config(tmp_path, epochs=1, method="full"))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, epochs=1, method="full"))


def test_resume_of_a_finished_run_reuses_it(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, method="full")
    first = train(cfg)
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    again = train(cfg, resume=True)
    assert again.summary["acc"] == first.summary["acc"]
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime  # nothing retrained
    assert load_checkpoint(tmp_path / "checkpoint.pt").train_state["step"] == first.summary["steps"]


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="choose from"):
        TrainConfig(method="nas")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.load("tiny", ["colour=red"])
    cfg = TrainConfig.load("tiny", ["epochs=3", "supernet_args={width_mult: 0.25}"])
    assert cfg.epochs == 3 and cfg.supernet_args == {"width_mult": 0.25}
    with pytest.raises(ValueError, match="no training preset"):
        TrainConfig.load("huge")


SCRIPT = """
import sys, json
from weightshare.train import TrainConfig, train
from weightshare.train.loop import planned_train_macs
cfg = TrainConfig(**json.loads(sys.argv[1]))
train(cfg, resume=len(sys.argv) > 2)
"""


def _run(tmp: Path, cfg: TrainConfig, resume: bool = False, **popen) -> subprocess.Popen:
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    args = [sys.executable, str(script), json.dumps(cfg.to_dict())] + (["resume"] if resume else [])
    return subprocess.Popen(args, **popen)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).supernet.state_dict()


def test_resume_after_sigkill_reaches_the_same_weights(tmp_path):
    common = dict(method="deps", epochs=4, eval_spread=1)
    ref_cfg = tiny_config(tmp_path / "ref", **common)
    assert _run(tmp_path, ref_cfg).wait(timeout=300) == 0
    cfg = tiny_config(tmp_path / "killed", **common)
    proc = _run(tmp_path, cfg)
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 240
    # kill mid-epoch (just after the shrink point at step 16), once a checkpoint exists
    while time.time() < deadline:
        steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines()] if log.exists() else []
        if steps and max(steps) >= 19:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(tmp_path / "killed" / "checkpoint.pt").train_state
    assert 0 < state["step"] < 32, "the kill must land before the run finished"
    assert _run(tmp_path, cfg, resume=True).wait(timeout=300) == 0
    ref, got = _weights(tmp_path / "ref" / "checkpoint.pt"), _weights(tmp_path / "killed" / "checkpoint.pt")
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
    ref_res = json.loads((tmp_path / "ref" / "results.json").read_text())
    got_res = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert ref_res["acc"] == got_res["acc"]
    # the steps replayed after the kill are logged once, not twice
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()
             if '"kind": "train"' in line]
    assert steps == list(range(1, 33))


def test_ddp_two_ranks_match_one_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    # dropout masks and crops are drawn per rank, so compare without them
    # a small LR keeps this tiny net out of its chaotic regime, where float noise (SyncBN sums
    # in another order) grows step by step; the gradients themselves agree to ~1e-6
    common = dict(method="bignas", epochs=1, dropout=0.0, augment=False, eval_spread=1, lr=0.01,
                  dataset_args={"n_train": 192, "n_test": 64})
    one = tiny_config(tmp_path / "one", **common)
    assert _run(tmp_path, one).wait(timeout=300) == 0
    two = tiny_config(tmp_path / "two", **common)
    script = tmp_path / "run.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", str(script),
           json.dumps(two.to_dict())]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = _weights(tmp_path / "one" / "checkpoint.pt"), _weights(tmp_path / "two" / "checkpoint.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
