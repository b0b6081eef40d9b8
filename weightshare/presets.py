"""Typed run configs from YAML presets: one loader for training and quantization.

A preset is a name (a YAML file in a package config folder) or a path to a YAML
file; `KEY=VALUE` overrides (VALUE parsed as YAML) and keyword arguments that
are not None are applied on top, in that order. The dataclass validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["check_options", "list_presets", "load_options", "parse_overrides", "parse_value"]


def parse_value(text: str) -> Any:
    """One option value written on a command line, read as YAML: the one syntax of every
    `--set KEY=VALUE`, preset file and policy/trace spec ("3" -> 3, "[3, 5]" -> [3, 5],
    "{width_mult: 0.5}" -> a mapping, "true" -> True); text YAML cannot read stays text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # PyYAML (YAML 1.1) reads "1e-3" as text; on a command line it is a number.
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf") else value
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str] | None, what: str = "override") -> dict[str, Any]:
    """``["lr=0.2", "kernel_choices=[3, 5]"]`` -> ``{"lr": 0.2, "kernel_choices": [3, 5]}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def check_options(cls: type, data: Mapping[str, Any], what: str,
                  error: type[Exception] = ConfigError) -> None:
    """Raise `error` naming the keys of `data` that are no field of dataclass `cls`."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise error(f"unknown {what} option(s) {sorted(unknown)}; known: {sorted(names)}")


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
            raise ConfigError(f"no {what} preset {preset!r}; presets: {list_presets(folder)}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of options")
    data.update(parse_overrides(overrides))
    data.update({k: v for k, v in kwargs.items() if v is not None})
    return data
