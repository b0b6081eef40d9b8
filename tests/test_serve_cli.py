"""The serving commands: `serve profile`, `serve simulate`, `serve runtime`, `loadtest`, and
the `serve` group's user errors."""

from __future__ import annotations

import json

import pytest
from test_serve_fixtures import tiny_checkpoint, tiny_stack
from typer.testing import CliRunner

from weightshare.cli import app
from weightshare.serve.metrics import ServeMetrics
from weightshare.serve.policies import make_policy
from weightshare.serve.server import ServerConfig, ServerThread, create_app
from weightshare.serve.worker import InferenceWorker

runner = CliRunner()


def ok(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


def user_error(*args) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
    assert "Traceback" not in r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve-cli"))


# --keep-dominated: exactly the 2 SubNets spread in MACs (a random tiny SuperNet has no
# meaningful frontier; filtering is tested in test_serve_executors.py).
COMMON = ("--dataset", "synthetic", "-n", "2", "--max-batch", "2", "--threads", "1",
          "--keep-dominated")


@pytest.fixture(scope="module")
def profile(ckpt):
    out = ok("serve", "profile", "-c", ckpt, *COMMON, "--runs", "2", "--json").stdout
    data = json.loads(out)
    assert data["batch_sizes"] == [1, 2] and len(data["subnets"]) == 2
    return data["path"]


def test_serve_profile_text(ckpt, tmp_path):
    out = ok("serve", "profile", "-c", ckpt, *COMMON, "--runs", "2",
             "--profile", tmp_path / "p.json").stdout
    assert "s0" in out and "s1" in out and "switch cost" in out
    assert (tmp_path / "p.json").is_file()


def test_serve_simulate(profile):
    rows = json.loads(ok("serve", "simulate", "-p", profile, "--trace",
                         "poisson:rate=50,duration=2", "--slo-ms", "200", "--json").stdout)
    assert {r["policy"] for r in rows} == {"slackfit", "maxacc", "infaas", "fixed:smallest",
                                           "fixed:largest"}
    assert all(r["requests"] == rows[0]["requests"] for r in rows)
    text = ok("serve", "simulate", "-p", profile, "--policy", "slackfit").stdout
    assert "slackfit" in text and "SLO %" in text


def test_serve_runtime_report(ckpt, profile):
    data = json.loads(ok("serve", "runtime", "-c", ckpt, *COMMON, "--json").stdout)
    assert data["memory"]["separate_total_bytes"] > 0
    assert set(data["load_ms"]) == {"s0", "s1"} and "switch_us" in data["switch"]


def test_serve_user_errors(ckpt, profile, tmp_path):
    assert "--checkpoint is required" in user_error("serve")
    assert "unknown policy" in user_error("serve", "-c", ckpt, "--policy", "nope")
    assert "no checkpoint" in user_error("serve", "profile", "-c", tmp_path / "none.pt")
    assert "unknown trace" in user_error("serve", "simulate", "-p", profile, "--trace", "x")
    assert "unknown policy" in user_error("serve", "simulate", "-p", profile, "--policy", "x")
    assert "no profile" in user_error("serve", "simulate", "-p", tmp_path / "none.json")


def test_loadtest_command(ckpt):
    stack = tiny_stack(ckpt, num_subnets=2, max_batch=2)
    worker = InferenceWorker(stack.runtime, make_policy("slackfit"), stack.profile,
                             metrics=ServeMetrics())
    app_ = create_app(worker, stack.runtime.input_shape(), 10,
                      ServerConfig(max_request_batch=2, token="t"))
    with ServerThread(app_) as server:
        data = json.loads(ok("loadtest", "--url", server.url, "--token", "t", "--trace",
                             "poisson:rate=20,duration=1", "--slo-ms", "2000",
                             "--json").stdout)
        assert data["summary"]["requests"] > 5 and data["summary"]["ok"] > 0
        assert "cannot read model" in user_error("loadtest", "--url", server.url)  # no token
