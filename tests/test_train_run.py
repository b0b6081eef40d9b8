"""The shared run scaffold (train.run): run folder, resume checks, step log."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from weightshare.errors import WeightshareError
from weightshare.train.run import (
    ResumeError,
    Run,
    RunBusyError,
    RunExistsError,
    check_resume,
    truncate_log,
)


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


def test_run_folder_another_process_trains_is_refused(tmp_path):
    """Two processes resuming one run would interleave its checkpoints; the second is
    refused while the first lives, and the folder is free again once it exits."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from weightshare.train.run import Run; "
         f"run = Run({str(tmp_path)!r}, 'ck.pt'); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=rf"another process \(pid {holder.pid}\)") as err:
            Run(tmp_path, "ck.pt", resume=True)
        assert isinstance(err.value, WeightshareError)
    finally:
        holder.kill()
        holder.wait()
    run = Run(tmp_path, "ck.pt", resume=True)  # killed holder: no stale lock
    Run(tmp_path, "ck.pt", resume=True)  # the same process may reopen its own run
    run.close()


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
