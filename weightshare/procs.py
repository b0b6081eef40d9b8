"""Run a worker in a fresh interpreter and read its JSON answer: the one subprocess runner.

The load generator, the live FastSwitch comparison and the benchmarks' timing
workers all need the same thing: start a separate process (its memory, its
interpreter lock, optionally its own CPU core and environment), hand it a job as
JSON on stdin, and read one JSON answer back from the last line of its stdout.

A separate interpreter rather than multiprocessing: spawn would re-import the
caller's main script, which breaks any script without an ``if __name__ ==
"__main__"`` guard. Only the last stdout line is parsed, so anything a library
prints before the answer is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["cpu_list", "run_json", "run_json_module"]


def cpu_list(cpus: int | str | Sequence[int]) -> str:
    """`taskset -c` syntax for `cpus`: 1 -> "1", [0, 2] -> "0,2", "0-3" stays."""
    if isinstance(cpus, int):
        return str(cpus)
    if isinstance(cpus, str):
        return cpus
    return ",".join(str(int(c)) for c in cpus)


def run_json(cmd: Sequence[str], job: Any = None, *, timeout_s: float | None, what: str,
             env: Mapping[str, str] | None = None, cpus: int | str | Sequence[int] | None = None,
             cwd: str | os.PathLike | None = None) -> Any:
    """Run `cmd` with `job` (if any) as JSON on stdin; return its last stdout line, parsed.

    env: variables set on top of this process's environment (e.g. OMP_NUM_THREADS="1").
    cpus: pin the child to these cores (`taskset -c`), e.g. to keep a timing worker off
        the core a server or a long training run uses.
    what: names the worker in errors ("the load generator failed (exit code 1): ...").
    """
    cmd = list(cmd)
    if cpus is not None:
        if shutil.which("taskset") is None:
            raise RuntimeError(f"cannot pin {what} to CPU {cpu_list(cpus)}: no `taskset` "
                               "on PATH (util-linux)")
        cmd = ["taskset", "-c", cpu_list(cpus), *cmd]
    full_env = None if env is None else {**os.environ, **{k: str(v) for k, v in env.items()}}
    try:
        out = subprocess.run(cmd, input=None if job is None else json.dumps(job),
                             capture_output=True, text=True, timeout=timeout_s, env=full_env,
                             cwd=None if cwd is None else str(cwd))
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} gave no result within {timeout_s:.0f} s") from None
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed (exit code {out.returncode}): "
                           f"{out.stderr.strip()[-2000:]}")
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{what} printed no answer: {out.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def run_json_module(module: str, job: Mapping[str, Any], timeout_s: float | None, what: str, *,
                    env: Mapping[str, str] | None = None,
                    cpus: int | str | Sequence[int] | None = None) -> Any:
    """`python -m module` in a fresh interpreter (see `run_json`)."""
    return run_json([sys.executable, "-m", module], job, timeout_s=timeout_s, what=what,
                    env=env, cpus=cpus)
