"""benchmarks/federated.py's shared state: processes that fill one --work folder cell by
cell never overwrite each other's results; federated_share.py's check of its cell."""

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


def test_share_ablation_refuses_a_cell_that_has_not_finished(tmp_path, monkeypatch):
    """The ablation compares against the cell's per-target baselines and searched
    targets; without them it stops before training anything."""
    import json

    import federated_share
    import pytest

    (tmp_path / "state.json").write_text(json.dumps({"mbv3/1": {"superfednas": {}}}))
    monkeypatch.setattr(sys, "argv", ["federated_share.py", "--work", str(tmp_path),
                                      "--space", "mbv3", "--alpha", "1"])
    with pytest.raises(SystemExit, match="cell mbv3/1 .* has not finished"):
        federated_share.main()
    assert not (tmp_path / "mbv3").exists()
