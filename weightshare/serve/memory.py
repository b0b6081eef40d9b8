"""Bytes held: a module's weights, this process's resident set.

Apart from the runtime so that the executors (which the runtime runs on) and the
runtime both measure memory the same way without importing each other.
"""

from __future__ import annotations

from torch import nn

__all__ = ["module_bytes", "rss_bytes"]


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size()
               for t in [*module.parameters(), *module.buffers()])


def rss_bytes() -> int | None:
    """This process's resident set size (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
