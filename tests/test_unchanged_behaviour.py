"""The packaged scenarios' quick configurations write the event logs recorded in
``tests/data/quick_event_logs.json`` (``python -m tests.fingerprints --record`` re-records them
after a change meant to alter runs; a refactor must leave them bitwise identical)."""

from __future__ import annotations

import json

import pytest

from sim.scenario.loader import packaged_scenarios
from tests.fingerprints import RECORDED, quick_run_hashes

RECORDED_HASHES = json.loads(RECORDED.read_text())
#: every layer on (layers-tour) and the default loop (quickstart): a few seconds each
DEFAULT_RUN = ["quickstart", "layers-tour"]


def test_every_packaged_scenario_has_recorded_event_logs():
    assert sorted(RECORDED_HASHES) == sorted(packaged_scenarios())
    assert all(RECORDED_HASHES[name] for name in RECORDED_HASHES)


@pytest.mark.parametrize("name", DEFAULT_RUN)
def test_quick_event_logs_unchanged(name):
    assert quick_run_hashes(name) == RECORDED_HASHES[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(RECORDED_HASHES) - set(DEFAULT_RUN)))
def test_quick_event_logs_unchanged_every_scenario(name):
    assert quick_run_hashes(name) == RECORDED_HASHES[name]
