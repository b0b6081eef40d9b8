"""`weightshare accel simulate|fastswitch` on a tiny SuperNet checkpoint."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from weightshare.checkpoint import save_checkpoint
from weightshare.cli import app
from weightshare.models import create_supernet

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3_small", width_mult=0.25, kernel_choices=(3, 5),
                          feature_dim=32, unit_widths=(16, 16, 24, 24, 32))
    d = tmp_path_factory.mktemp("accel")
    ckpt = save_checkpoint(d / "ckpt.pt", net)
    rng = random.Random(0)
    cfgs = [net.space.smallest(), net.space.sample(rng), net.space.largest()]
    frontier = d / "frontier.json"
    frontier.write_text(json.dumps([{"subnet": c.to_dict(), "acc": 70.0 + 5 * i}
                                    for i, c in enumerate(cfgs)]))
    return ckpt, frontier


def test_simulate_prints_rows(files):
    ckpt, frontier = files
    res = runner.invoke(app, ["accel", "simulate", "--checkpoint", str(ckpt), "--frontier",
                              str(frontier), "--device", "fpga-small", "--buffer-kb", "16",
                              "--trace", "gamma:duration=2", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["policy"] for r in rows} == {"none", "lru", "subgraph-stationary"}
    none = [r for r in rows if r["policy"] == "none"][0]
    sgs = [r for r in rows if r["policy"] == "subgraph-stationary"][0]
    assert sgs["offchip_bytes_per_query"] < none["offchip_bytes_per_query"]
    text = runner.invoke(app, ["accel", "simulate", "-c", str(ckpt), "-f", str(frontier),
                               "--trace", "poisson:duration=1"])
    assert text.exit_code == 0 and "subgraph-stationary" in text.output


def test_fastswitch_reports_pairs(files):
    ckpt, frontier = files
    res = runner.invoke(app, ["accel", "fastswitch", "-c", str(ckpt), "-f", str(frontier),
                              "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 6
    assert all(r["delta_bytes"] < r["full_bytes"] for r in rows if r["to"] == "s0")


def test_user_errors_are_one_line(files, tmp_path):
    ckpt, frontier = files
    res = runner.invoke(app, ["accel", "simulate", "-c", str(ckpt), "-f", str(frontier),
                              "--device", "tpu"])
    assert res.exit_code == 2 and "unknown device" in res.output
    bad = tmp_path / "f.json"
    bad.write_text(json.dumps([{"subnet": json.loads(frontier.read_text())[0]["subnet"]}]))
    res = runner.invoke(app, ["accel", "simulate", "-c", str(ckpt), "-f", str(bad)])
    assert res.exit_code == 2 and "no accuracy" in res.output
