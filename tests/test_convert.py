"""weightshare.convert: a user's CNN becomes a SuperNet whose largest SubNet is the model."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from convert_models import (
    BottleneckResNet,
    MobileNet,
    PlainStack,
    ResNet,
    resnet_tiny,
    trained_like,
)
from test_cli import ok, user_error
from torch import nn

import weightshare as ws
from weightshare.checkpoint import load_checkpoint, save_checkpoint
from weightshare.convert import ConvertError
from weightshare.metrics import count_macs_params

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from convert import SmallMobileNetV2, SmallResNet  # noqa: E402  (the benchmark's user models)

HERE = Path(__file__).resolve().parent

# name: (model factory, input shape, convert kwargs, expected depth choices)
ARCHS = {
    "plain_stack": (PlainStack, (1, 28, 28), {}, (1,)),
    "resnet_basic": (ResNet, (1, 28, 28), {}, (1, 2)),
    "resnet_bottleneck": (BottleneckResNet, (3, 32, 32), {}, (1, 2)),
    "mobilenetv2": (MobileNet, (1, 28, 28), {}, (1, 2)),
    "mobilenetv3_se": (lambda: MobileNet(se=True, k=5, act=nn.Hardswish), (1, 28, 28),
                       {"kernel": (3, 5)}, (1, 2)),
    "benchmark_resnet": (SmallResNet, (1, 28, 28), {}, (1, 2)),
    "benchmark_mobilenetv2": (SmallMobileNetV2, (1, 28, 28), {}, (1, 2)),
}


def _convert(name: str, seed: int = 0):
    make, shape, kwargs, _ = ARCHS[name]
    torch.manual_seed(seed)
    model = trained_like(make(), seed)
    net = ws.convert(model, torch.randn(2, *shape), width=(0.25, 0.5, 0.75, 1.0), **kwargs)
    return model, net.eval(), shape


@pytest.mark.parametrize("name", list(ARCHS))
def test_largest_is_the_original_and_subnets_extract(name):
    model, net, shape = _convert(name)
    x = torch.randn(5, *shape)  # not the example input the converter checked with
    sp = net.space
    assert sp.depth_choices == ARCHS[name][3]
    with torch.no_grad():
        want = model(x)
        assert (net(x, sp.largest()) - want).abs().max() <= 1e-5
        assert (net.extract(sp.largest())(x) - want).abs().max() <= 1e-5
        for cfg in (sp.smallest(), sp.sample(random.Random(1)), sp.sample(random.Random(2))):
            torch.testing.assert_close(net.extract(cfg)(x), net(x, cfg), atol=1e-5, rtol=1e-4)
            macs, params = count_macs_params(net.extract(cfg), net.input_shape(cfg))
            assert (net.cost(cfg).macs, net.cost(cfg).params) == (macs, params)
    assert net.cost(sp.smallest()).macs < net.cost(sp.largest()).macs / 2
    if "kernel" in ARCHS[name][2]:
        assert sp.kernel_choices == (3, 5)


def test_reorder_keeps_the_original_and_sorts_importance():
    model, net, shape = _convert("resnet_bottleneck")
    x = torch.randn(3, *shape)
    net.reorder_channels()
    with torch.no_grad():
        assert (net(x, net.space.largest()) - model(x)).abs().max() <= 1e-5
    # conv3 of the first bottleneck reads an elastic group: importance now descends
    s = net.structure
    reader = next(i for i, op in enumerate(s.ops) if op["name"] == "blocks.0.body.6")
    imp = net.layers[str(reader)].weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp[:-1] >= imp[1:])



def test_reorder_moves_the_optimizer_state_with_the_weights():
    from test_models import assert_reorder_moves_optimizer_state

    assert_reorder_moves_optimizer_state(_convert("resnet_bottleneck")[1])

class _Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(9, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.b(torch.cat([x, self.a(x)], 1)).mean((2, 3)))


class _WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.grouped = nn.Conv2d(8, 8, 3, groups=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.grouped(self.conv(x)).mean((2, 3)))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace it
            x = -x
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize("model, words", [
    (_WithLayerNorm(), ["'norm'", "GroupNorm"]),
    (_Dense(), ["cat"]),
    (_Grouped(), ["'grouped'", "groups=2"]),
    (_Branchy(), ["torch.fx cannot trace"]),
])
def test_unsupported_models_are_refused_naming_the_layer(model, words):
    with pytest.raises(ConvertError) as err:
        ws.convert(model, torch.randn(1, 1, 28, 28))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert isinstance(err.value, ws.errors.WeightshareError)


def test_bad_arguments_are_clear():
    model = ResNet()
    x = torch.randn(1, 1, 28, 28)
    with pytest.raises(ConvertError, match="include 1.0"):
        ws.convert(model, x, width=(0.5, 0.75))
    with pytest.raises(ConvertError, match="no block of this model has a depthwise"):
        ws.convert(model, x, kernel=(3, 5))
    with pytest.raises(ConvertError, match="depth choices must lie in 1..2"):
        ws.convert(model, x, depth=(1, 3))
    assert ws.convert(model, x, depth=False).space.depth_choices == (1,)


def test_checkpoint_reloads_in_a_fresh_process_without_the_class(tmp_path):
    model, net, shape = _convert("mobilenetv3_se")
    cfg = net.space.sample(random.Random(3))
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.save({"x": x, "largest": model(x), "cfg": cfg.to_json(), "sub": net(x, cfg)},
                   tmp_path / "io.pt")
    save_checkpoint(tmp_path / "ck.pt", net)
    script = (
        "import sys, torch\n"
        "from weightshare.checkpoint import load_checkpoint\n"
        "from weightshare.space import SubnetConfig\n"
        "payload = torch.load('ck.pt', weights_only=True)\n"
        "assert payload['supernet']['name'] == 'converted'\n"
        "net = load_checkpoint('ck.pt').supernet.eval()\n"
        "io = torch.load('io.pt', weights_only=True)\n"
        "with torch.no_grad():\n"
        "    d1 = (net(io['x'], net.space.largest()) - io['largest']).abs().max().item()\n"
        "    d2 = (net(io['x'], SubnetConfig.from_json(io['cfg'])) - io['sub']).abs().max().item()\n"
        "assert 'convert_models' not in sys.modules\n"
        "print(d1, d2)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d1, d2 = map(float, out.stdout.split())
    assert d1 <= 1e-5 and d2 <= 1e-6


def test_onnx_export_of_a_converted_subnet(tmp_path):
    from weightshare.export import export_onnx

    _, net, _ = _convert("mobilenetv3_se")
    cfg = net.space.smallest()
    report = export_onnx(net.extract(cfg), tmp_path / "s.onnx", net.input_shape(cfg),
                         exporter="torchscript")
    assert report.max_abs_diff <= 1e-4 and report.bytes > 0


# ------------------------------------------------------------------ CLI and training
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("convert")
    torch.save(resnet_tiny().state_dict(), d / "w.pt")
    ck = d / "ck.pt"
    res = json.loads(ok("convert", f"{HERE / 'convert_models.py'}:resnet_tiny", "--weights",
                        d / "w.pt", "-o", ck, "--width", "0.5,1", "--json").stdout)
    assert res["largest_vs_original_maxdiff"] <= 1e-5
    assert res["space"]["depth_choices"] == [1, 2]
    return {"dir": d, "ck": ck}


def test_cli_convert_help_and_errors(converted, tmp_path):
    text = ok("convert", "--help").stdout
    assert "MODULE:CALLABLE" in text and "--weights" in text and "largest SubNet" in text
    assert "MODULE:CALLABLE" in user_error("convert", "nocolon", "-o", tmp_path / "x.pt")
    assert "cannot import" in user_error("convert", "no_such_mod:f", "-o", tmp_path / "x.pt")
    target = f"{HERE / 'convert_models.py'}:PlainStack"
    err = user_error("convert", target, "--weights", converted["dir"] / "w.pt",
                     "-o", tmp_path / "x.pt")
    assert "does not fit the model" in err
    err = user_error("convert", f"{Path(__file__)}:_Grouped", "-o", tmp_path / "x.pt")
    assert "'grouped'" in err


def test_train_from_converted_then_frontier_and_export(converted):
    from weightshare.train import TrainConfig, train
    from weightshare.train.loop import build_supernet

    d = converted["dir"]
    cfg = TrainConfig(method="deps", init_from=str(converted["ck"]), shrink_at=0.0, epochs=1,
                      dataset="synthetic", dataset_args={"n_train": 160, "n_test": 64},
                      calib_size=32, batch_size=32, eval_spread=1, out=str(d / "run"),
                      device="cpu", amp="off", tensorboard=False, progress=False)
    start = load_checkpoint(converted["ck"]).supernet
    from weightshare.data import load_dataset

    data = load_dataset("synthetic", n_train=160, n_test=64, calib_size=32)
    built = build_supernet(cfg, data)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(),
                                                 built.state_dict().values(), strict=True))
    res = json.loads(ok("train", "--method", "deps", "--from", converted["ck"], "--epochs", "1",
                        "--out", d / "run", "--set", "shrink_at=0", "--set", "dataset=synthetic",
                        "--set", "dataset_args={n_train: 160, n_test: 64}", "--set",
                        "calib_size=32", "--set", "batch_size=32", "--set", "eval_spread=1",
                        "--set", "device=cpu", "--set", "amp=off", "--set", "tensorboard=false",
                        "--json").stdout)
    log = [json.loads(line) for line in (d / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["phase"] == "shrink"  # no "largest alone" phase on a pretrained start
    assert res["eval"] and res["config"]["init_from"] == str(converted["ck"])
    ck = d / "run" / "checkpoint.pt"
    assert load_checkpoint(ck).supernet.name == "converted"
    ok("predictor", "fit", "-c", ck, "--samples", "8", "--epochs", "3")
    front = d / "frontier.json"
    ok("frontier", "-c", ck, "-o", front, "--population", "8", "--generations", "2", "--no-save")
    assert json.loads(front.read_text())["frontier"]
    ok("export", "-c", ck, "--subnet", "smallest", "-o", d / "s.onnx", "--exporter", "torchscript")
    assert (d / "s.onnx").stat().st_size > 0
    # a converted model only trains on data of its shape
    wrong = cfg.replace(dataset_args={"n_train": 64, "n_test": 32, "in_channels": 3},
                        out=str(d / "run2"))
    with pytest.raises(ws.checkpoint.CheckpointError, match="1 channel"):
        train(wrong)
