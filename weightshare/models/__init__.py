"""SuperNets by name: `create_supernet("ofa_mbv3_small")`, `list_supernets()`.

Importing this package registers the built-in SuperNets.
"""

from . import mobilenetv3, resnet  # noqa: F401  (registration side effect)
from .base import (
    Cost,
    StaticNet,
    SuperNet,
    create_supernet,
    list_supernets,
    register_supernet,
    supernet_defaults,
    supernet_description,
)
from .mobilenetv3 import OFAMobileNetV3
from .resnet import OFAResNet

__all__ = [
    "Cost",
    "OFAMobileNetV3",
    "OFAResNet",
    "StaticNet",
    "SuperNet",
    "create_supernet",
    "list_supernets",
    "register_supernet",
    "supernet_defaults",
    "supernet_description",
]

# The SuperNet of a user's converted model registers as "converted", so checkpoints
# of converted models load like any other (imported last: it builds on `base`).
from ..convert import supernet as _converted  # noqa: E402,F401
