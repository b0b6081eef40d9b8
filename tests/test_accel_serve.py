"""`serve --switch-mode`: a one-SubNet-at-a-time backend answers as the SuperNet runtime does."""

from __future__ import annotations

import pytest
import torch
from test_serve_fixtures import tiny_checkpoint, tiny_stack

from weightshare.serve.stack import StackConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("accel_serve"))


@pytest.mark.parametrize("mode", ["delta", "full"])
def test_switch_mode_backend_matches_runtime(ckpt, mode):
    stack = tiny_stack(ckpt, switch_mode=mode)
    try:
        rt, backend = stack.runtime, stack.backend
        assert backend is not rt
        x = torch.randn(3, *rt.input_shape())
        names = rt.names + rt.names[::-1]
        for name in names:
            want = rt.run(x, name)
            with torch.inference_mode():
                got = backend.run(x, name)
            assert torch.allclose(got, want, atol=1e-5), name
        if mode == "delta":
            assert backend.loads == len(names) - 1  # the middle repeat needs no switch
            assert backend.bytes_read > 0
    finally:
        stack.close()


def test_bad_switch_mode(ckpt):
    with pytest.raises(ValueError, match="switch_mode"):
        StackConfig(checkpoint=str(ckpt), switch_mode="half")
