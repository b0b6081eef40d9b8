"""`weightshare quant ...`: search -> retrain -> export -> show from the CLI, and user errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from weightshare.cli import app

runner = CliRunner()
FAST = ["--set", "dataset=synthetic",
        "--set", "dataset_args={n_train: 128, n_test: 32, image_size: 8}",
        "--set", "train_subset=null", "--set", "arch_size=64", "--set", "test_subset=null",
        "--set", "retrain_subset=null", "--set", "batch_size=32",
        "--set", "retrain_batch_size=32"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def user_error(*args) -> str:
    result = run(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    return result.stderr


def test_quant_cli_end_to_end(tmp_path):
    s = json.loads(ok("quant", "search", "--preset", "tiny", "--lambda", "1e-2",
                      "--bits", "2,4", "--epochs", "2", "--out", tmp_path / "s", *FAST,
                      "--json").stdout)
    # stem and classifier float (the reference's), not searched
    assert s["finished"] and s["genotype"]["bits"]["stem.qconv"] == [32, 32]
    geno = tmp_path / "s" / "genotype.json"
    assert geno.is_file()
    text = ok("quant", "show", "--genotype", geno).stdout
    assert "BitOps per image" in text
    r = json.loads(ok("quant", "retrain", "--genotype", geno, "--preset", "tiny", "--out",
                      tmp_path / "r", *FAST, "--json").stdout)
    assert r["finished"] and r["bitops"] > 0 and "test_acc" in r
    u = ok("quant", "retrain", "--genotype", geno, "--preset", "tiny", "--uniform-bits", "4",
           "--out", tmp_path / "u", *FAST).stdout
    assert "test top-1" in u
    e = json.loads(ok("quant", "export", "-c", tmp_path / "r" / "retrain.pt", "-o",
                      tmp_path / "m.onnx", "--json").stdout)
    assert e["max_abs_diff"] <= 1e-3 and (tmp_path / "m.onnx").is_file()
    # a finished run is not silently overwritten
    assert "--resume" in user_error("quant", "retrain", "--genotype", geno, "--preset", "tiny",
                                    "--out", tmp_path / "r", *FAST)


def test_quant_cli_user_errors(tmp_path):
    assert "no genotype" in user_error("quant", "retrain", "--genotype", tmp_path / "none.json",
                                       "--out", tmp_path / "r")
    bad = tmp_path / "g.json"
    bad.write_text("{oops")
    assert "corrupt JSON" in user_error("quant", "show", "--genotype", bad)
    assert "unknown searched bit width 3" in user_error(
        "quant", "search", "--bits", "2,3", "--out", tmp_path / "s")
    assert "--bits expects" in user_error("quant", "search", "--bits", "two", "--out",
                                          tmp_path / "s")
    assert "no quant preset" in user_error("quant", "search", "--preset", "nope", "--out",
                                           tmp_path / "s")
    junk = tmp_path / "retrain.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in user_error("quant", "export", "-c", junk, "-o",
                                                     tmp_path / "m.onnx")
    assert "no retrain checkpoint" in user_error("quant", "export", "-c", tmp_path / "x.pt",
                                                 "-o", tmp_path / "m.onnx")
