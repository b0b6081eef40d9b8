"""The specialize commands: profile, profile-check, predictor fit, search, frontier, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import ok, user_error

from weightshare.space import SubnetConfig

TINY_SET = ["--supernet", "ofa_mbv3_small", "--set", "width_mult=0.25",
            "--set", "kernel_choices=[3,5]", "--set", "feature_dim=32",
            "--set", "unit_widths=[16,16,24,24,32]"]
DATA = ["--dataset", "synthetic"]
QUICK = ["--population", "12", "--generations", "3"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("search")
    ck = d / "ck.pt"
    ok("init", *TINY_SET, "--seed", "1", "-o", ck)
    table = d / "table.json"
    out = json.loads(ok("profile", "-c", ck, "-o", table, "--runs", "3", "--warmup", "1",
                        "--rounds", "1", "--threads", "1", "--json").stdout)
    assert out["entries"] > 0 and out["largest_ms"] > out["smallest_ms"] > 0
    ok("predictor", "fit", "-c", ck, "--samples", "10", "--epochs", "5", *DATA)
    return {"dir": d, "ck": ck, "table": table}


def test_profile_check(work):
    out = ok("profile-check", "-c", work["ck"], "-t", work["table"], "-n", "3", "--runs", "3",
             "--rounds", "1").stdout
    assert "MAPE" in out and "Kendall tau" in out


def test_predictor_fit_reuses_samples(work):
    res = json.loads(ok("predictor", "fit", "-c", work["ck"], "--samples", "12", "--epochs", "5",
                        *DATA, "--json").stdout)
    assert res["n_fit"] + res["n_test"] == 12
    lines = Path(res["samples_file"]).read_text().splitlines()
    assert len(lines) == 12


def test_search_writes_subnet_that_export_takes(work):
    sub = work["dir"] / "subnet.json"
    res = json.loads(ok("search", "-c", work["ck"], "-t", work["table"], "--max-latency-ms",
                        "1000", *QUICK, "-o", sub, "--json").stdout)
    assert res["latency_ms"] <= 1000 and res["output"] == str(sub)
    SubnetConfig.from_json(sub.read_text())
    onnx = work["dir"] / "s.onnx"
    ok("export", "-c", work["ck"], "--subnet", sub, "-o", onnx, "--exporter", "torchscript")
    assert onnx.stat().st_size > 0


def test_search_many_targets(work):
    targets = work["dir"] / "targets.yaml"
    targets.write_text("- {name: a, max_macs: 2.0e6}\n- {name: b, max_params: 60000}\n")
    outdir = work["dir"] / "chosen"
    rows = json.loads(ok("search", "-c", work["ck"], "--targets", targets, *QUICK, "-o", outdir,
                         "--json").stdout)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["macs"] <= 2.0e6 and rows[1]["params"] <= 60000
    assert (outdir / "a.json").is_file() and (outdir / "b.json").is_file()


def test_search_errors(work, tmp_path):
    err = user_error("search", "-c", work["ck"], "--max-macs", "10", *QUICK)
    assert "smallest achievable" in err and "MACs" in err
    err = user_error("search", "-c", work["ck"], "--max-latency-ms", "5", *QUICK)
    assert "latency table" in err
    assert "limit" in user_error("search", "-c", work["ck"], *QUICK)
    # A table made for another SuperNet is refused.
    other = tmp_path / "other.pt"
    ok("init", "--supernet", "ofa_resnet_small", "--set", "width_mult=0.25", "-o", other)
    err = user_error("search", "-c", other, "-t", work["table"], "--max-latency-ms", "5")
    assert "made for" in err
    # No predictor beside this checkpoint.
    err = user_error("search", "-c", other, "--max-macs", "1e9")
    assert "predictor fit" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert "corrupt" in user_error("search", "-c", work["ck"], "-t", bad, "--max-macs", "1e9")


def test_frontier(work):
    out = work["dir"] / "frontier.json"
    res = json.loads(ok("frontier", "-c", work["ck"], "-t", work["table"], *QUICK, *DATA,
                        "-o", out, "--no-save", "--json").stdout)
    doc = json.loads(out.read_text())
    assert doc["frontier"] and doc["frontier"] == res["frontier"]
    lat = [p["latency_ms"] for p in doc["frontier"]]
    assert lat == sorted(lat)
    assert all(p["measured_acc"] is not None for p in doc["frontier"])
    # what is kept is Pareto in *measured* accuracy: each costlier SubNet is more accurate
    acc = [p["measured_acc"] for p in doc["frontier"]]
    assert all(b > a for a, b in zip(acc, acc[1:], strict=False))
    assert len(doc["frontier"]) + len(doc["dominated_when_measured"]) == doc["searched"]
    assert Path(res["plot"]).stat().st_size > 0


def test_frontier_saves_statistics_of_the_kept_subnets_only(work, tmp_path):
    import shutil

    from weightshare.checkpoint import load_checkpoint
    from weightshare.space import SubnetConfig

    ck = tmp_path / "ck.pt"
    for src in work["ck"].parent.glob(work["ck"].stem + ".*"):  # the checkpoint + predictor
        shutil.copy(src, tmp_path / src.name)
    before = set(load_checkpoint(ck).supernet.subnet_norms)
    out = tmp_path / "frontier.json"
    ok("frontier", "-c", ck, "-t", work["table"], *QUICK, *DATA, "-o", out)
    doc = json.loads(out.read_text())
    stats = set(load_checkpoint(ck).supernet.subnet_norms) - before
    kept = {SubnetConfig.from_dict(p["subnet"]) for p in doc["frontier"]}
    dropped = {SubnetConfig.from_dict(p["subnet"]) for p in doc["dominated_when_measured"]}
    assert dropped - before, "this seeded search drops some SubNets once measured"
    assert kept - before <= stats and not (dropped - before) & stats


def test_profile_calibrated_and_check_reports_both_errors(work):
    table = work["dir"] / "cal_table.json"
    out = json.loads(ok("profile", "-c", work["ck"], "-o", table, "--runs", "2", "--warmup", "1",
                        "--rounds", "1", "--calibrate", "3", "--threads", "1", "--json").stdout)
    assert out["calibration"]["n"] == 3 and "subnets" not in out["calibration"]
    text = ok("profile-check", "-c", work["ck"], "-t", table, "-n", "3", "--runs", "2",
              "--rounds", "2").stdout
    assert "raw sum" in text and "none of them used to calibrate" in text
    assert "timing noise" in text
