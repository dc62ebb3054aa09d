"""Tiny scenarios shared by the tests: a few hundred users, a few simulated hours."""

from __future__ import annotations

from typing import Any

import pytest

from sim.scenario.loader import apply_override, parse_scenario
from sim.scenario.spec import Scenario

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "duration": "4h",
    "warmup": "1h",
    "world": {
        "users": {"count": 400, "sessions_per_day": {"median": 6}},
        "catalog": {"items": 300, "topics": 6, "creators": 40, "dim": 8, "new_items_per_day": 50},
    },
    "stack": {
        "policy": {"name": "embedding", "params": {"dim": 8}},
        "slate_size": 5,
        "layers": {"retrain": {"every": "30m", "latency": "2m", "compute_time": "5m"}},
    },
}


def tiny(*overrides: str) -> Scenario:
    """The tiny scenario with ``dotted.path=value`` overrides applied."""
    data = TINY
    for override in overrides:
        data = apply_override(data, override)
    return parse_scenario(data, "tiny")


@pytest.fixture
def tiny_scenario() -> Scenario:
    return tiny()
