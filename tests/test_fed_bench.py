"""benchmarks/federated.py's shared state: processes that fill one --work folder cell by
cell never overwrite each other's results."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_each_process_writes_only_its_cells_and_reads_the_others(tmp_path):
    from federated import SharedState

    first, second = SharedState(tmp_path), SharedState(tmp_path)
    mine = first.own("resnet/100")
    theirs = second.own("resnet/1")  # started before the first wrote anything
    mine["superfednas"] = {"rounds": 40}
    first.sync()
    theirs["superfednas"] = {"rounds": 7}
    second.sync()  # must not drop the first's cell, which it last saw empty
    mine["targets"] = ["small"]
    first.sync()
    again = SharedState(tmp_path).data
    assert again == {"resnet/100": {"superfednas": {"rounds": 40}, "targets": ["small"]},
                     "resnet/1": {"superfednas": {"rounds": 7}}}
    assert first.data == again and second.data["resnet/100"]["superfednas"] == {"rounds": 40}
    assert first.own("resnet/100") is mine  # still the object bench_alpha fills
