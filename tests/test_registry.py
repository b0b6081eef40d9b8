"""Every name -> thing lookup is a weightshare.registry.Registry with one clear error."""

from __future__ import annotations

import pytest

from weightshare.errors import USER_ERRORS, ConfigError, WeightshareError
from weightshare.registry import Registry, UnknownNameError


def _registries() -> dict[str, Registry]:
    from weightshare.accel.device import DEVICES
    from weightshare.data import DATASETS
    from weightshare.models.base import _REGISTRY as SUPERNETS
    from weightshare.nn.layers import ACTIVATIONS
    from weightshare.quant.ops import OPS
    from weightshare.serve.executors import EXECUTORS
    from weightshare.train.methods import METHODS
    from weightshare.train.samplers import SAMPLERS

    return {"device": DEVICES, "dataset": DATASETS, "SuperNet": SUPERNETS,
            "activation": ACTIVATIONS, "operation": OPS, "executor": EXECUTORS,
            "training method": METHODS, "sampler": SAMPLERS}


@pytest.mark.parametrize("kind", sorted(_registries()))
def test_unknown_names_list_the_registered_ones(kind):
    reg = _registries()[kind]
    assert isinstance(reg, Registry) and reg.kind == kind and len(reg) >= 2
    with pytest.raises(UnknownNameError, match=rf"unknown {kind} 'nope'; choose from the "
                       rf"registered: {', '.join(reg.names())}$") as err:
        reg.get("nope")
    assert isinstance(err.value, WeightshareError) and isinstance(err.value, ValueError)
    first = reg.names()[0]
    assert first in reg and reg[first] is reg.get(first) and list(reg) == reg.names()


def test_registry_refuses_a_second_entry_of_a_name():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_user_errors_are_weightshare_errors_or_builtins():
    assert issubclass(ConfigError, WeightshareError) and issubclass(ConfigError, ValueError)
    assert isinstance(ConfigError("x"), USER_ERRORS)
    assert not isinstance(RuntimeError("a bug"), USER_ERRORS)
    from weightshare.train import TrainConfig

    with pytest.raises(ConfigError, match="choose from"):
        TrainConfig(method="nas")
