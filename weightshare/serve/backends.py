"""Switch-mode backends by name: what the worker runs batches on when one SubNet is held.

The normal backend is the SubNetAct runtime (the whole SuperNet resident). A switch
mode holds one SubNet at a time instead, for small-memory devices: ``full`` loads
the next SubNet's whole extracted model on a switch (defined here); other modes
plug in from outside the serving package, so the server never imports them.
FastSwitch's ``delta`` (read only the slices a SubNet lacks, `weightshare.accel`)
is one: it is declared as an entry point of the ``weightshare.switch_modes`` group
in pyproject.toml, and loaded the first time a mode is looked up. A third-party
package adds a mode the same way, or by calling `register_switch_mode` itself.

A builder is ``builder(runtime, directory) -> backend``: `runtime` is the stack's
`SubNetActRuntime` (SuperNet, deployed SubNets, input shape), `directory` a
scratch folder that lives as long as the stack. The backend has the runtime's
``run(batch, name)`` / ``prepare(name)`` interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:
    from .runtime import SubNetActRuntime

__all__ = ["ENTRY_POINT_GROUP", "SWITCH_MODES", "make_switch_backend", "register_switch_mode",
           "switch_modes"]

ENTRY_POINT_GROUP = "weightshare.switch_modes"

SwitchBuilder = Callable[["SubNetActRuntime", str], Any]
SWITCH_MODES: Registry[SwitchBuilder] = Registry("switch mode")
_plugins_loaded = False


def register_switch_mode(name: str) -> Callable[[SwitchBuilder], SwitchBuilder]:
    return SWITCH_MODES.register(name)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in SWITCH_MODES:
            SWITCH_MODES.register(ep.name)(ep.load())


def switch_modes() -> list[str]:
    """Every switch mode: the built-in ones and those installed packages declare."""
    _load_plugins()
    return SWITCH_MODES.names()


def make_switch_backend(name: str, runtime: SubNetActRuntime, directory: str) -> Any:
    _load_plugins()
    return SWITCH_MODES.get(name)(runtime, directory)


@register_switch_mode("full")
def _full(runtime: SubNetActRuntime, directory: str) -> Any:
    """Load the next SubNet's whole extracted model from disk on every switch."""
    from .runtime import ExtractedModelStore, SeparateModelsRuntime

    store = ExtractedModelStore.from_runtime(runtime, directory)
    return SeparateModelsRuntime(store, 1, runtime.input_shape(), runtime.num_classes)
