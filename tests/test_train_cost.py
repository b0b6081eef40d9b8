"""benchmarks/train_cost.py shares its methods between processes: a method another process
trains is skipped, and every process tables all the methods finished so far."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
TINY = ["--preset", "tiny", "--unit-epochs", "1",
        "--set", "dataset=synthetic", "--set", "dataset_args={n_train: 320, n_test: 64}",
        "--set", "calib_size=64", "--set", "batch_size=32", "--set", "eval_spread=1",
        "--set", "supernet_args={width_mult: 0.25, kernel_choices: [3], feature_dim: 32, "
                 "unit_widths: [16, 16, 24, 24, 32]}",
        "--set", "progress=false", "--set", "tensorboard=false"]


def test_a_method_another_process_trains_is_skipped_and_tables_merge(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    from train_cost import main

    from weightshare.train.run import Run

    runs, out = tmp_path / "runs", tmp_path / "results"
    common = [*TINY, "--runs-dir", str(runs), "--out", str(out), "--name", "tc"]
    holder = subprocess.Popen(  # "another process" training deps: holds its run folder
        [sys.executable, "-c", "import time; from weightshare.io import hold_lock; "
         f"lock = hold_lock({str(runs / 'deps' / Run.LOCK)!r}); print('held', flush=True); "
         "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        main([*common, "--methods", "deps,full"])
    finally:
        holder.kill()
        holder.wait()
    assert "[deps] skipped" in capsys.readouterr().out
    assert not (runs / "deps" / "checkpoint.pt").exists()  # untouched
    table = json.loads((out / "tc.json").read_text())
    assert list(table["methods"]) == ["full"] and "deps" in table["partial"]

    main([*common, "--methods", "deps"])  # the other process's turn: its table has both
    table = json.loads((out / "tc.json").read_text())
    assert list(table["methods"]) == ["deps", "full"]
    assert set(table["partial"]) == {"bignas", "ofa", "deps@ofa-compute"}
