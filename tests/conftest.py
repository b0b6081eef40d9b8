"""Shared fixtures."""

from __future__ import annotations

import random

import pytest
from helpers import build

import weightshare as ws

_CACHE: dict[str, ws.SuperNet] = {}


@pytest.fixture(params=ws.list_supernets())
def supernet(request) -> ws.SuperNet:
    """Every registered SuperNet (built once per session; tests must not modify it)."""
    name = request.param
    if name not in _CACHE:
        _CACHE[name] = build(name)
    return _CACHE[name]


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)
