"""The shared run scaffold (train.run) and the reference run's in-flight checkpoint resuming on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from weightshare.errors import WeightshareError
from weightshare.train import TrainConfig
from weightshare.train.loop import prepare
from weightshare.train.run import ResumeError, Run, RunExistsError, check_resume, truncate_log

IN_FLIGHT = Path(__file__).resolve().parents[1] / "checkpoints" / "reference" / "in_flight"


class _Loader:
    """Records set_epoch calls; yields (epoch, batch) markers from the start batch on."""

    def __init__(self, n: int) -> None:
        self.n, self.calls, self.epoch, self.start = n, [], 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.calls.append((epoch, start_batch))
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for b in range(self.start, self.n):
            yield torch.tensor([self.epoch, b]), torch.tensor([0])


def _steps(run: Run, loader: _Loader) -> list[tuple[int, int, int]]:
    seen = []
    for b in run.batches(loader):
        assert b.x.tolist() == [b.epoch, b.index]
        seen.append((b.step, b.epoch, b.index))
        run.advance()
    return seen


def test_batches_resume_mid_epoch_at_the_same_batch(tmp_path):
    full = Run(tmp_path / "a", "ck.pt")
    full.start(total=10, steps_per_epoch=4)
    every = _steps(full, _Loader(4))
    assert [s for s, _, _ in every] == list(range(10))
    assert every[5] == (5, 1, 1)
    resumed = Run(tmp_path / "b", "ck.pt")
    resumed.restore(step=5)
    loader = _Loader(4)
    resumed.start(total=10, steps_per_epoch=4)
    assert _steps(resumed, loader) == every[5:]
    assert loader.calls == [(1, 1), (2, 0)]
    # max_steps stops early and the stop counts as the end of an epoch
    short = Run(tmp_path / "c", "ck.pt")
    short.start(total=10, steps_per_epoch=4, max_steps=6)
    ends = []
    for _ in short.batches(_Loader(4)):
        short.advance()
        ends.append(short.epoch_done)
    assert short.step == 6 and ends == [False, False, False, True, False, True]


def test_batches_insist_on_one_advance_per_step(tmp_path):
    run = Run(tmp_path, "ck.pt")
    run.start(total=4, steps_per_epoch=4)
    with pytest.raises(RuntimeError, match="advance"):
        for _ in run.batches(_Loader(4)):
            pass


def test_run_folder_is_claimed_unless_resuming(tmp_path):
    Run(tmp_path, "ck.pt")  # empty folder: fine
    (tmp_path / "ck.pt").write_bytes(b"x")
    with pytest.raises(RunExistsError, match="--resume") as err:
        Run(tmp_path, "ck.pt")
    assert isinstance(err.value, WeightshareError) and isinstance(err.value, FileExistsError)
    assert Run(tmp_path, "ck.pt", resume=True).resuming
    assert not Run(tmp_path / "new", "ck.pt", resume=True).resuming


def test_check_resume_names_what_differs(tmp_path):
    check_resume("ck", {"a": 1, "b": 2}, {"a": 1})
    check_resume("ck", {}, {"method": "deps"}, missing_ok=True)
    with pytest.raises(ResumeError, match=r"other settings \{'a': \(1, 2\)\}") as err:
        check_resume("ck", {"a": 1}, {"a": 2})
    assert isinstance(err.value, ValueError) and isinstance(err.value, WeightshareError)
    with pytest.raises(ResumeError, match="method"):
        check_resume("ck", {}, {"method": "deps"})


def test_step_log_truncated_to_the_resumed_step(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"kind": "train", "step": s} for s in range(1, 8)] + [{"kind": "final", "step": 7}]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"kind": "tra')
    run = Run(tmp_path, "ck.pt", resume=True)
    run.restore(step=4)
    run.start(total=8, steps_per_epoch=4)
    run.log.write({"kind": "train", "step": 5})
    run.close()
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    truncate_log(tmp_path / "absent.jsonl", 3)  # nothing to do


@pytest.mark.skipif(not (IN_FLIGHT / "checkpoint.pt").is_file(),
                    reason="the reference run's in-flight checkpoint is not in this checkout")
def test_reference_in_flight_checkpoint_resumes_where_it_stopped(tmp_path):
    """The long reference run resumes on this code: same step, weights, optimizer, log."""
    shutil.copy(IN_FLIGHT / "checkpoint.pt", tmp_path / "checkpoint.pt")
    if (IN_FLIGHT / "log.jsonl").is_file():
        shutil.copy(IN_FLIGHT / "log.jsonl", tmp_path / "log.jsonl")
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state = raw["train_state"]
    assert set(state) == {"step", "epoch", "steps_per_epoch", "total_steps", "config",
                          "optimizer", "history", "train_macs", "wall_s", "teacher", "scaler"}
    cfg = TrainConfig.from_dict({**state["config"], "out": str(tmp_path), "device": "cpu",
                                 "progress": False, "tensorboard": False})
    session = prepare(cfg, resume=True)
    run = session.run
    assert session.done is None and session.runner is not None
    assert run.step == state["step"] and run.history == state["history"]
    assert run.wall_s == state["wall_s"] and session.train_macs == state["train_macs"]
    assert len(session.loader) == state["steps_per_epoch"]
    assert cfg.epochs * len(session.loader) == state["total_steps"]
    got = session.net.state_dict()
    assert set(got) == set(raw["state_dict"])
    for k, v in raw["state_dict"].items():
        assert torch.equal(got[k].cpu(), v), k
    opt = session.runner.optimizer.state_dict()
    saved = state["optimizer"]
    assert opt["param_groups"] == saved["param_groups"]
    assert set(opt["state"]) == set(saved["state"]) and saved["state"]
    for i, entry in saved["state"].items():
        for name, value in entry.items():
            assert torch.equal(opt["state"][i][name].cpu(), value), (i, name)
    run.start(total=state["total_steps"], steps_per_epoch=state["steps_per_epoch"])
    first = next(iter(run.batches(session.loader)))
    assert (first.step, first.epoch, first.index) == (
        state["step"], *divmod(state["step"], state["steps_per_epoch"]))
    run.close()
    if (tmp_path / "log.jsonl").is_file():
        steps = [json.loads(x).get("step", 0) for x in (tmp_path / "log.jsonl").read_text()
                 .splitlines()]
        assert steps and max(steps) == state["step"]
