"""The `weightshare` command line: every command's happy path and the user errors."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import typer
from typer.testing import CliRunner

import weightshare.data
import weightshare.models
from weightshare.checkpoint import load_checkpoint
from weightshare.cli import app, fmt_count
from weightshare.models import create_supernet, list_supernets
from weightshare.space import SubnetConfig

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def user_error(*args: str, quiet: bool = True) -> str:
    """Run a command expected to fail because of the user; return its error message.

    quiet: the command fails before printing anything on stdout.
    """
    result = run(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == "" or not quiet
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    ok("init", "--seed", "3", "-o", path)
    return path


def _commands(cmd, prefix=()):
    """Every leaf command (including those of later subgroups) with its argv prefix."""
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield prefix, cmd
        return
    for name, sub in subs.items():
        yield from _commands(sub, (*prefix, name))


# --------------------------------------------------------------------------------------- help


def test_every_command_has_help_with_an_example():
    root = typer.main.get_command(app)
    leaves = list(_commands(root))
    names = {" ".join(p) for p, _ in leaves}
    assert {"space", "sample", "cost", "init", "export", "demo"} <= names
    top = ok("--help").stdout
    for argv, _ in leaves:
        assert argv[0] in top
        text = ok(*argv, "--help").stdout
        assert "Example" in text, argv
        assert f"weightshare {' '.join(argv)}" in text, argv


def test_no_arguments_shows_help():
    result = run()
    assert "space" in result.stdout and "export" in result.stdout


# -------------------------------------------------------------------------------------- space


def test_space_text():
    out = ok("space").stdout
    net = create_supernet("ofa_mbv3_small")
    assert "ofa_mbv3_small" in out
    assert net.space.summary() in out
    assert f"{net.space.size():,}" in out
    assert "13.5 M MACs, 1.40 M params" in out  # smallest
    assert "59.4 M MACs, 5.65 M params" in out  # largest
    assert "1x28x28" in out


def test_space_json_matches_library():
    data = json.loads(ok("space", "--json", "--supernet", "ofa_resnet_small").stdout)
    net = create_supernet("ofa_resnet_small")
    assert data["supernet"] == "ofa_resnet_small"
    assert data["size"] == net.space.size()
    assert data["space"] == net.space.to_dict()
    assert data["input_shape"] == list(net.input_shape())
    for which in ("smallest", "largest"):
        cfg = SubnetConfig.from_dict(data[which]["subnet"])
        assert cfg == getattr(net.space, which)()
        assert {k: data[which][k] for k in ("macs", "params")} == net.cost(cfg).to_dict()
    assert set(data["config"]) == set(net.config)


def test_space_set_overrides_constructor_arguments():
    data = json.loads(
        ok("space", "--json", "--set", "kernel_choices=[3,5]", "--set", "width_mult=0.5").stdout
    )
    assert data["space"]["kernel_choices"] == [3, 5]
    assert data["config"]["width_mult"] == 0.5
    net = create_supernet("ofa_mbv3_small", kernel_choices=(3, 5), width_mult=0.5)
    assert data["largest"]["macs"] == net.cost(net.space.largest()).macs


def test_space_list():
    out = ok("space", "--list").stdout
    for name in list_supernets():
        assert name in out
    rows = json.loads(ok("space", "--list", "--json").stdout)
    assert [r["name"] for r in rows] == list_supernets()
    assert all(r["description"] for r in rows)


# ------------------------------------------------------------------------------------- sample


def test_sample_is_reproducible_and_valid():
    first = ok("sample", "-n", "5", "--seed", "1").stdout.splitlines()
    second = ok("sample", "-n", "5", "--seed", "1").stdout.splitlines()
    assert first == second and len(first) == 5
    space = create_supernet("ofa_mbv3_small").space
    rng = random.Random(1)
    for line in first:
        cfg = space.validate(SubnetConfig.from_json(line))
        assert cfg == space.sample(rng)
    other = ok("sample", "-n", "5", "--seed", "2").stdout.splitlines()
    assert other != first


def test_sample_respects_set():
    lines = ok("sample", "-n", "20", "--set", "kernel_choices=[3]").stdout.splitlines()
    assert {k for line in lines for k in SubnetConfig.from_json(line).kernels} == {3}


# --------------------------------------------------------------------------------------- cost


def test_cost_json_equals_library(tmp_path):
    net = create_supernet("ofa_mbv3_small")
    rng = random.Random(0)
    cfgs = [net.space.sample(rng) for _ in range(3)]
    for cfg in cfgs:
        data = json.loads(ok("cost", "--subnet", cfg.to_json(), "--json").stdout)
        assert data == net.cost(cfg).to_dict()
        assert all(type(v) is int for v in data.values())
    path = tmp_path / "subnet.json"
    path.write_text(cfgs[0].to_json() + "\n")
    assert json.loads(ok("cost", "--subnet", path, "--json").stdout) == net.cost(cfgs[0]).to_dict()
    for word in ("largest", "smallest"):
        data = json.loads(ok("cost", "--subnet", word, "--json").stdout)
        assert data == net.cost(getattr(net.space, word)()).to_dict()


def test_cost_text():
    assert ok("cost", "--subnet", "largest").stdout.strip() == "59.4 M MACs, 5.65 M params"
    assert ok("cost", "--subnet", "smallest").stdout.strip() == "13.5 M MACs, 1.40 M params"


def test_fmt_count():
    assert fmt_count(59_425_440) == "59.4 M"
    assert fmt_count(1_397_354) == "1.40 M"
    assert fmt_count(566_000_000) == "566 M"
    assert fmt_count(2_500_000_000) == "2.50 G"
    assert fmt_count(173_000) == "173 K"
    assert fmt_count(12) == "12"


# --------------------------------------------------------------------------------------- init


def test_init_writes_a_loadable_reproducible_checkpoint(ckpt, tmp_path):
    net = load_checkpoint(ckpt).supernet
    assert net.name == "ofa_mbv3_small"
    again = tmp_path / "again.pt"
    ok("init", "--seed", "3", "-o", again)
    other = load_checkpoint(again).supernet.state_dict()
    assert all(torch.equal(v, other[k]) for k, v in net.state_dict().items())
    # An existing file is only replaced with --force.
    assert "--force" in user_error("init", "-o", again)
    ok("init", "--seed", "4", "-o", again, "--force")


def test_init_with_set(tmp_path):
    path = tmp_path / "narrow.pt"
    ok("init", "-o", path, "--set", "width_mult=0.5", "--set", "kernel_choices=[3,5]")
    net = load_checkpoint(path).supernet
    assert net.space.kernel_choices == (3, 5)
    assert net.config["width_mult"] == 0.5


# ------------------------------------------------------------------------------------- export


def _check_onnx(path: Path, ckpt: Path, cfg: SubnetConfig) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = load_checkpoint(ckpt).supernet
    x = torch.randn(4, *net.input_shape(cfg), generator=torch.Generator().manual_seed(0))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = net.extract(cfg)(x).numpy()
    assert got.shape == (4, net.num_classes)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_export_torchscript(ckpt, tmp_path):
    import onnx

    out = tmp_path / "sub.onnx"
    # Mixed depths, expands and kernels, but small: exporting is slow on a busy CPU.
    cfg = SubnetConfig(depths=(2, 3, 2, 2, 2), expands=(3, 4, 6, 3, 4, 3, 6, 3, 4, 3, 6),
                       kernels=(3, 5, 7, 7, 5, 3, 3, 5, 7, 3, 5))
    text = ok("export", "-c", ckpt, "--subnet", cfg.to_json(), "-o", out,
              "--exporter", "torchscript", "--opset", "17").stdout
    assert str(out) in text and "verified" in text and "MACs" in text and "torchscript" in text
    model = onnx.load(str(out))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    _check_onnx(out, ckpt, cfg)


def test_export_default_exporter_json(ckpt, tmp_path):
    out = tmp_path / "dynamo.onnx"
    data = json.loads(ok("export", "-c", ckpt, "--subnet", "smallest", "-o", out, "--json").stdout)
    assert data["exporter"] == "dynamo" and data["opset"] == 18
    assert data["path"] == str(out) and data["bytes"] == out.stat().st_size
    assert data["max_abs_diff"] <= 1e-4
    net = create_supernet("ofa_mbv3_small")
    assert {k: data[k] for k in ("macs", "params")} == net.cost(net.space.smallest()).to_dict()
    _check_onnx(out, ckpt, net.space.smallest())


def test_export_failure_is_reported(ckpt, tmp_path, monkeypatch):
    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    out = tmp_path / "broken.onnx"
    err = user_error("export", "-c", ckpt, "--subnet", "smallest", "-o", out,
                     "--exporter", "torchscript")
    assert err.startswith("error: ONNX export failed") and "unsupported operator" in err
    assert not out.exists()


# --------------------------------------------------------------------------------------- demo


def test_demo(tmp_path):
    out = tmp_path / "demo"
    text = ok("demo", "--out", out, "--exporter", "torchscript", "--preset", "tiny",
              "--serve-seconds", "1").stdout
    steps = [line.split("]")[0] for line in text.splitlines() if line.startswith("[")]
    assert steps == [f"[{i}/6" for i in range(1, 7)]
    # the serving step: a real server under a bursty trace, SlackFit vs a fixed SubNet
    assert "SLO met %" in text and "slackfit" in text and "fixed:s" in text
    assert "server stopped" in text
    assert "fashion-mnist" in text and "training with deps" in text
    assert "top-1 %" in text
    assert sum(1 for line in text.splitlines() if line.rstrip().endswith("]}")) >= 4  # corners
    ck = load_checkpoint(out / "run" / "checkpoint.pt")
    assert len(ck.supernet.subnet_norms) >= 4  # corners recalibrated and saved
    ort.InferenceSession(str(out / "smallest.onnx"), providers=["CPUExecutionProvider"])
    # a second run reuses the finished training instead of starting over
    again = ok("demo", "--out", out, "--exporter", "torchscript", "--preset", "tiny",
               "--serve-seconds", "0").stdout
    assert "training with deps" in again and "[5/5]" in again


def test_demo_without_data(tmp_path, monkeypatch):
    monkeypatch.setattr(weightshare.data, "_FASHION_MNIST_SYSTEM_DIRS", ())
    monkeypatch.delenv(weightshare.data.DATA_ENV_VAR, raising=False)
    err = user_error("demo", "--data-dir", tmp_path / "nothing", "--out", tmp_path / "o",
                     quiet=False)
    assert err.startswith("error: Fashion-MNIST not found")


# ------------------------------------------------------------------------------ user errors


def test_unknown_supernet():
    for args in (("space",), ("sample",), ("cost", "--subnet", "largest"), ("init", "-o", "x")):
        err = user_error(*args, "--supernet", "no_such_net")
        assert "unknown SuperNet 'no_such_net'" in err and "ofa_mbv3_small" in err


def test_invalid_subnet_depth():
    cfg = {"depths": [5, 2, 2, 2, 2], "expands": [3] * 13, "kernels": [3] * 13}
    err = user_error("cost", "--subnet", json.dumps(cfg))
    assert "allowed depths" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("{not json", "not valid SubnetConfig JSON"),
        ('{"depths": [2]}', "missing field"),
        ("no/such/file.json", "neither a JSON object"),
        ('{"depths":[2,2,2,2,2],"expands":[3],"kernels":[3]}', "one expand and one kernel"),
    ],
)
def test_bad_subnet_text(subnet, message):
    assert message in user_error("cost", "--subnet", subnet)


def test_bad_subnet_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"depths": [2, 2, 2, 2, 2], "expands": [9], "kernels": [3]}')
    err = user_error("cost", "--subnet", path)
    assert str(path) in err


def test_missing_checkpoint(tmp_path):
    err = user_error("export", "-c", tmp_path / "nope.pt", "--subnet", "smallest",
                     "-o", tmp_path / "x.onnx")
    assert "no checkpoint" in err


def test_truncated_checkpoint(ckpt, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(ckpt.read_bytes()[: 100_000])
    err = user_error("export", "-c", bad, "--subnet", "smallest", "-o", tmp_path / "x.onnx",
                     "--exporter", "torchscript")
    assert "truncated" in err
    assert not (tmp_path / "x.onnx").exists()


def test_subnet_checked_against_checkpoint_space(ckpt, tmp_path):
    cfg = {"depths": [2] * 5, "expands": [3] * 10, "kernels": [9] * 10}
    err = user_error("export", "-c", ckpt, "--subnet", json.dumps(cfg), "-o", tmp_path / "x.onnx")
    assert "allowed kernel sizes" in err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("no_such_key=1", "unknown argument(s) ['no_such_key']"),
        ("width_mult", "--set expects KEY=VALUE"),
        ("=3", "--set expects KEY=VALUE"),
        ("width_mult=abc", "cannot build SuperNet"),
    ],
)
def test_bad_set(setting, message):
    assert message in user_error("space", "--set", setting)


def test_bugs_keep_their_traceback(monkeypatch):
    """Only user errors become one line; anything else is a bug and must stay visible."""

    def broken(name, **kwargs):
        raise RuntimeError("internal bug")

    monkeypatch.setattr(weightshare.models, "create_supernet", broken)
    result = run("space")
    assert isinstance(result.exception, RuntimeError)
    assert result.exit_code == 1


# ---------------------------------------------------------------------------- entry point


def test_console_script():
    exe = shutil.which("weightshare", path=str(Path(sys.executable).parent))
    assert exe, "the weightshare console script is not installed next to this Python"
    done = subprocess.run([exe, "cost", "--subnet", "smallest", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"macs": 13_524_768, "params": 1_397_354}
    done = subprocess.run([exe, "space", "--supernet", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: unknown SuperNet 'nope'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_evaluate_uses_the_data_the_checkpoint_was_trained_on(tmp_path):
    """A checkpoint trained on synthetic 3-channel data is evaluated on that, not on
    Fashion-MNIST, and reproduces the accuracy its run recorded."""
    from weightshare.train import TrainConfig, train

    cfg = TrainConfig(supernet_args={"width_mult": 0.25, "kernel_choices": [3, 5],
                                     "feature_dim": 32, "unit_widths": [16, 16, 24, 24, 32]},
                      dataset="synthetic", dataset_args={"n_train": 320, "n_test": 64},
                      calib_size=64, epochs=1, batch_size=32, eval_spread=0, progress=False,
                      tensorboard=False, out=str(tmp_path / "run"))
    res = train(cfg)
    out = json.loads(ok("evaluate", "-c", tmp_path / "run" / "checkpoint.pt",
                        "--subnet", "smallest", "--json").stdout)
    assert out[0]["acc"] == res.summary["acc"]["smallest"]


def test_every_library_error_is_a_weightshare_error():
    from weightshare.checkpoint import CheckpointError
    from weightshare.data import DatasetError
    from weightshare.errors import WeightshareError
    from weightshare.export import ExportError
    from weightshare.quant.genotype import GenotypeError
    from weightshare.search.common import SearchError

    for err in (CheckpointError, DatasetError, ExportError, GenotypeError, SearchError):
        assert issubclass(err, WeightshareError), err
    msg = user_error("evaluate", "-c", "/nonexistent/ckpt.pt")
    assert "no checkpoint at" in msg


def test_one_override_syntax_everywhere():
    """--set, presets and serving specs read values the same way (YAML, plus numbers like 1e-3)."""
    from weightshare.presets import parse_overrides
    from weightshare.serve.spec import parse_spec
    from weightshare.train import TrainConfig

    assert parse_overrides(["lr=1e-3", "kernel_choices=[3, 5]", "supernet_args={width_mult: 0.5}"]) == {
        "lr": 0.001, "kernel_choices": [3, 5], "supernet_args": {"width_mult": 0.5}}
    assert TrainConfig.load("tiny", ["lr=1e-3"]).lr == 0.001
    assert parse_spec("slackfit:margin_ms=1e-1,x=off", "policy") == (
        "slackfit", {"margin_ms": 0.1, "x": "off"})
    with pytest.raises(ValueError, match="expects KEY=VALUE"):
        parse_overrides(["lr"])
