"""The one training-run scaffold: run folder, resume checks, clock, step log, progress, batch loop.

Every loop that trains something uses it (DepS/OFA training in `train.loop`,
SubNet fine-tuning in `search.finetune`, nablaQDARTS search and retraining in
`quant.search` / `quant.retrain`); each keeps only its own step and its own
checkpoint payload (a SuperNet checkpoint or a quant run file, both written
atomically by `weightshare.checkpoint`). What they share lives here once:

- the run folder: created, and a finished or running one is not overwritten
  unless the caller resumes (`RunExistsError`, which says to pass --resume); a
  folder another process is training is not touched at all (`RunBusyError`: two
  processes resuming one run would interleave its checkpoints and log);
- resume checks: settings saved in a checkpoint must equal the ones asked for
  now (`check_resume`, one message naming what differs);
- the run state that survives a resume: step, per-epoch history, wall seconds
  (the clock adds this session's time to what earlier sessions spent);
- the step log: ``log.jsonl`` (one JSON record a line, line-buffered so
  ``tail -f`` and a killed run keep every finished step), optional TensorBoard
  scalars, written by the first DDP rank only; on resume the records a killed
  run wrote after its last checkpoint are dropped, because they are replayed;
- the progress bar (`weightshare.progress`, readable in a pipe);
- the epoch / start-batch loop: `Run.batches` sets the loader's epoch and first
  batch from the step count, so a resumed run sees exactly the batches the
  killed one would have (data order is a pure function of seed, epoch, batch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import WeightshareError
from ..io import atomic_write_text, hold_lock

__all__ = ["Batch", "EpochMeter", "ResumeError", "Run", "RunBusyError", "RunExistsError", "StepLog", "check_resume",
           "progress_bar", "truncate_log"]


class RunExistsError(WeightshareError, FileExistsError):
    """The output folder already holds a run and the caller did not ask to resume it."""


class RunBusyError(WeightshareError, BlockingIOError):
    """Another process is training in the output folder now."""


class ResumeError(WeightshareError, ValueError):
    """A checkpoint to resume was made with other settings than the ones asked for now."""


def check_resume(path: Path | str, saved: Mapping[str, Any], expected: Mapping[str, Any], *,
                 what: str = "settings", error: type[Exception] = ResumeError,
                 missing_ok: bool = False, option: str = "--out") -> None:
    """Raise `error` naming each key of `expected` whose saved value differs.

    `missing_ok`: a key the checkpoint does not hold (an older file) is no mismatch.
    """
    mismatch = {k: (saved.get(k), v) for k, v in expected.items()
                if saved.get(k) != v and not (missing_ok and saved.get(k) is None)}
    if mismatch:
        shown = {k: tuple(_short(x) for x in pair) for k, pair in mismatch.items()}
        raise error(f"{path} was made with other {what} {shown} (saved, now); use the same "
                    f"ones to resume, or another {option}")


def _short(value: Any, limit: int = 200) -> Any:
    text = repr(value)
    return value if len(text) <= limit else text[:limit] + "..."


def truncate_log(path: Path, step: int) -> None:
    """Drop the records after `step` that a killed run wrote past its last checkpoint.

    A resumed run replays those steps; without this its log would hold them twice
    and plots of it would be wrong. Records without a step (none today) are kept,
    a run's "final" record is dropped (the resumed run writes its own).
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by the kill
        if record.get("step", 0) <= step and record.get("kind") != "final":
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class StepLog:
    """``log.jsonl`` + optional TensorBoard, first rank only; appends so a resumed run keeps one log."""

    def __init__(self, out: Path, *, tensorboard: bool = False, resume_step: int | None = None,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        if resume_step is not None:
            truncate_log(out / "log.jsonl", resume_step)
        # line-buffered: `tail -f log.jsonl` and a killed run keep every finished step
        self.file = open(out / "log.jsonl", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def progress_bar(enabled: bool, total: int, initial: int, desc: str) -> Any:
    """A `weightshare.progress` bar over steps, or None when disabled."""
    if not enabled:
        return None
    from ..progress import progress

    return progress(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


class EpochMeter:
    """Sample-weighted mean loss and top-1 accuracy (percent) of the steps since `take`."""

    def __init__(self) -> None:
        self.loss = self.correct = self.n = 0.0

    def add(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        self.loss += float(loss.detach()) * len(y)
        self.correct += float((logits.argmax(1) == y).sum())
        self.n += len(y)

    def take(self) -> tuple[float, float]:
        """(mean loss, accuracy) so far; starts the next epoch's count."""
        out = (self.loss / max(self.n, 1), 100.0 * self.correct / max(self.n, 1))
        self.loss = self.correct = self.n = 0.0
        return out


@dataclass
class Batch:
    """One step's batch: `step` counts the steps done before it (0-based)."""

    step: int
    epoch: int
    index: int  # batch index within the epoch
    x: Tensor
    y: Tensor


@dataclass
class Run:
    """One training run in folder `out`, whose checkpoint is ``out / checkpoint``.

    Lifecycle: construct (claims the folder), load the loop's own checkpoint if
    `resuming` and `restore` the counters, `start` (log, bar, clock), iterate
    `batches` calling `advance` once per step, `close` (or use as a context manager).
    `primary` is False on every DDP rank but the first: it writes no files.
    """

    out: Path
    checkpoint: str
    resume: bool = False
    primary: bool = True
    claim: bool = True  # False: an existing checkpoint is the caller's to judge
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    total: int = 0
    last: int = 0
    steps_per_epoch: int = 0
    log: StepLog = field(init=False)
    bar: Any = field(init=False, default=None)
    _lock: Any = field(init=False, default=None)

    LOCK = ".run.lock"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.log = StepLog(self.out, enabled=False)
        self._t0 = time.perf_counter()
        self._wall0 = 0.0
        if self.primary:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.claim:
                self._lock = hold_lock(self.out / self.LOCK)
                if self._lock is None:
                    holder = (self.out / self.LOCK).read_text().strip() or "?"
                    raise RunBusyError(f"{self.out} is being trained by another process (pid "
                                       f"{holder}); wait for it to end, or choose another --out")
            if self.claim and not self.resume and self.path.exists():
                raise RunExistsError(f"{self.path} exists: pass --resume to continue it, or "
                                     "choose another --out")

    @property
    def path(self) -> Path:
        return self.out / self.checkpoint

    @property
    def resuming(self) -> bool:
        """Resume asked for and there is a checkpoint to resume from."""
        return self.resume and self.path.exists()

    def restore(self, step: int = 0, history: list | None = None, wall_s: float = 0.0) -> None:
        """The counters a loaded checkpoint holds."""
        self.step, self.history, self.wall_s = int(step), list(history or []), float(wall_s)

    def start(self, *, total: int, steps_per_epoch: int, max_steps: int | None = None,
              desc: str = "train", progress: bool = False, log: bool = True,
              tensorboard: bool = False, restart_clock: bool = True) -> None:
        """Open the step log (truncated to `step` when resuming), the bar, start the clock.

        `max_steps` stops the run early (it resumes later to `total`); `restart_clock`
        False keeps a clock the caller started earlier (to count its set-up too).
        """
        self.total, self.steps_per_epoch = total, steps_per_epoch
        self.last = total if max_steps is None else min(total, max_steps)
        self.log = StepLog(self.out, tensorboard=tensorboard,
                           resume_step=self.step if self.resume else None,
                           enabled=log and self.primary)
        self.bar = progress_bar(progress and self.primary, self.last, min(self.step, self.last),
                                desc)
        if restart_clock:
            self.restart_clock()

    def restart_clock(self) -> None:
        """From now on `tick` adds this session's time to the `wall_s` restored."""
        self._t0, self._wall0 = time.perf_counter(), self.wall_s

    def tick(self) -> float:
        """Update and return `wall_s`: earlier sessions' seconds plus this one's so far."""
        self.wall_s = self._wall0 + time.perf_counter() - self._t0
        return self.wall_s

    @property
    def epoch_done(self) -> bool:
        """The step just advanced ended an epoch, or the run (`last`)."""
        return self.step % self.steps_per_epoch == 0 or self.step >= self.last

    def save_due(self, every: int | None) -> bool:
        """The step just advanced is an `every`-th one (a mid-epoch checkpoint is due)."""
        return bool(every) and self.step % every == 0

    def record_epoch(self, record: dict[str, Any]) -> None:
        """Keep an end-of-epoch record in `history` (saved with the checkpoint) and the log."""
        self.history.append(record)
        self.log.write(record)

    def batches(self, loader: Any) -> Iterator[Batch]:
        """The batches from `step` to `last`, each epoch's loader set from the step count.

        The caller runs its step on each and calls `advance` before taking the next.
        """
        spe = self.steps_per_epoch
        while self.step < self.last:
            epoch, first = divmod(self.step, spe)
            loader.set_epoch(epoch, start_batch=first)
            for index, (x, y) in enumerate(loader, start=first):
                at = self.step
                yield Batch(at, epoch, index, x, y)
                if self.step != at + 1:
                    raise RuntimeError("Run.batches: call advance() exactly once per batch")
                if self.epoch_done:
                    break

    def advance(self, **postfix: Any) -> int:
        """One step done: count it, update the clock and the bar (`postfix` shown on it)."""
        self.step += 1
        self.tick()
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(**postfix)
            self.bar.update(1)
        return self.step

    def end_progress(self) -> None:
        """Close the bar (the log stays open for a final record)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.end_progress()
        self.log.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
