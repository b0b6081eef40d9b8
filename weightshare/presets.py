"""Typed run configs from YAML presets: one loader for training and quantization.

A preset is a name (a YAML file in a package config folder) or a path to a YAML
file; `KEY=VALUE` overrides (VALUE parsed as YAML) and keyword arguments that
are not None are applied on top, in that order. The dataclass validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["list_presets", "load_options"]


def list_presets(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_options(preset: str | Path | None, folder: Path, what: str,
                 overrides: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The merged option mapping; bad presets and overrides raise ValueError saying why."""
    data: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        if not path.suffix:
            path = folder / f"{preset}.yaml"
        if not path.is_file():
            raise ValueError(f"no {what} preset {preset!r}; presets: {list_presets(folder)}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of options")
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        data[key.strip()] = yaml.safe_load(value)
    data.update({k: v for k, v in kwargs.items() if v is not None})
    return data
