"""The latency artefacts' command names: `latency-table build|check` and `serve serving-profile`,
and the old names (`profile`, `profile-check`, `serve profile`) still working for one release
with a warning on stderr that leaves stdout (and --json) as it was."""

from __future__ import annotations

import json

import pytest
from test_search_cli import TINY_SET
from test_serve_fixtures import tiny_checkpoint
from typer.testing import CliRunner

from weightshare.cli import app
from weightshare.timing import machine_identity

runner = CliRunner()
TABLE_ARGS = ("--runs", "2", "--warmup", "1", "--rounds", "1", "--threads", "1", "--json")
SERVE_ARGS = ("--dataset", "synthetic", "-n", "2", "--max-batch", "2", "--threads", "1",
              "--keep-dominated", "--runs", "2", "--json")


def run(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "ck.pt"
    run("init", *TINY_SET, "--seed", "1", "-o", path)
    return path


def test_latency_table_build_and_check(ck, tmp_path):
    table = tmp_path / "t.json"
    new = run("latency-table", "build", "-c", ck, "-o", table, *TABLE_ARGS)
    assert "deprecated" not in new.stderr
    assert json.loads(new.stdout)["entries"] > 0
    # the table records the machine it was timed on (weightshare.timing)
    assert json.loads(table.read_text())["meta"]["machine"] == machine_identity()
    out = run("latency-table", "check", "-c", ck, "-t", table, "-n", "3", "--runs", "2",
              "--rounds", "1")
    assert "MAPE" in out.stdout and "deprecated" not in out.stderr


def test_old_latency_table_names_warn_and_still_work(ck, tmp_path):
    table = tmp_path / "t.json"
    old = run("profile", "-c", ck, "-o", table, *TABLE_ARGS)
    assert "`weightshare profile` is deprecated" in old.stderr
    assert "weightshare latency-table build" in old.stderr
    assert json.loads(old.stdout)["entries"] > 0  # stdout is the new command's, untouched
    chk = run("profile-check", "-c", ck, "-t", table, "-n", "3", "--runs", "2", "--rounds", "1")
    assert "weightshare latency-table check" in chk.stderr and "MAPE" in chk.stdout


def test_serving_profile_and_its_old_name(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    new = run("serve", "serving-profile", "-c", ckpt, *SERVE_ARGS,
              "--profile", tmp_path / "a.json")
    assert "deprecated" not in new.stderr
    assert json.loads(new.stdout)["format"] == "weightshare-serve-profile"
    old = run("serve", "profile", "-c", ckpt, *SERVE_ARGS, "--profile", tmp_path / "b.json")
    assert "`weightshare serve profile` is deprecated" in old.stderr
    assert "weightshare serve serving-profile" in old.stderr
    assert json.loads(old.stdout)["batch_sizes"] == [1, 2]
