"""FastSwitch: a delta-assembled SubNet computes what the extracted SubNet computes."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from weightshare.accel.fastswitch import DeltaLoader, FullLoader, save_supernet_weights
from weightshare.accel.footprint import subnet_footprint
from weightshare.models import create_supernet


def _tiny():
    return create_supernet("ofa_mbv3_small", width_mult=0.25, kernel_choices=(3, 5),
                           feature_dim=32, unit_widths=(16, 16, 24, 24, 32))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    net = _tiny().eval()
    with torch.no_grad():  # non-trivial BN statistics and transforms
        for name, t in net.state_dict().items():
            if name.endswith(("running_mean", "transforms.5to3")):
                t.add_(0.05 * torch.randn_like(t))
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
    rng = random.Random(0)
    subnets = [net.space.smallest(), net.space.largest()] + [net.space.sample(rng) for _ in range(3)]
    own = subnets[2]
    # Own statistics as calibration stores them: recorded by a forward of that SubNet.
    from weightshare.nn import NormContext, StatsRecorder
    rec = StatsRecorder()
    net(torch.randn(8, 1, 28, 28), own, norm=NormContext(recorder=rec))
    net.set_subnet_stats(own, rec.result())
    path = save_supernet_weights(net, tmp_path_factory.mktemp("fs") / "supernet.safetensors")
    return net, subnets, path


def test_delta_switches_reproduce_extracted_outputs(setup):
    net, subnets, path = setup
    loader = DeltaLoader(_tiny(), path, fill=float("nan"))
    x = torch.randn(4, 1, 28, 28)
    order = subnets + subnets[::-1]
    prev = None
    for cfg in order:
        stats = loader.switch(cfg)
        want = net.extract(cfg)(x)
        got = loader.extract()(x)
        assert torch.allclose(got, want, atol=1e-5), cfg
        assert torch.allclose(loader.net(x, cfg), want, atol=1e-5)
        if prev is not None:
            delta = subnet_footprint(net, cfg) - subnet_footprint(net, prev)
            assert stats.bytes_read == delta.nbytes(32)
        prev = cfg


def test_switch_to_same_subnet_reads_nothing(setup):
    _, subnets, path = setup
    loader = DeltaLoader(_tiny(), path)
    loader.switch(subnets[1])
    assert loader.switch(subnets[1]).bytes_read == 0


def test_full_loader_matches(setup, tmp_path):
    net, subnets, _ = setup
    full = FullLoader(net, subnets[:2], tmp_path)
    x = torch.randn(2, 1, 28, 28)
    model, stats = full.load(subnets[1])
    assert stats.bytes_read > 0
    assert torch.allclose(model(x), net.extract(subnets[1])(x), atol=1e-6)


def test_wrong_file_is_a_clear_error(setup, tmp_path):
    _, subnets, _ = setup
    other = create_supernet("ofa_mbv3_small", width_mult=0.25, kernel_choices=(3, 5),
                            feature_dim=32, unit_widths=(16, 16, 24, 24, 32))
    bad = copy.deepcopy(other)
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file
    save_file({"stem.weight": bad.stem.weight.detach().clone()}, str(path))
    with pytest.raises(ValueError, match="no tensor"):
        DeltaLoader(other, path).switch(subnets[0])
