"""The online-learning layer: per-event River updates, applied at serving, with their cost."""

from __future__ import annotations

import numpy as np
import pytest

from policies.online import OnlineModel
from sim.runner import run_scenario
from sim.spec import OnlineLearning
from tests.conftest import tiny
from tests.test_torch_ranker import N_TOPICS, N_USERS, synthetic


def test_learns_per_event_that_topic_negatives_predict_no_click():
    data = synthetic()
    model = OnlineModel(OnlineLearning(learning_rate=0.1), N_USERS, N_TOPICS)
    events = data.events
    for start in range(0, len(events), 300):  # absorbed in slices, as the layer does
        model.absorb(events.slice(start, start + 300), data.catalog.topic)
    examined = int((events.kind != 0).sum())
    assert model.updates == examined
    assert model.weights.user_topic_negative < -0.3


def test_cost_is_charged_per_event_processed():
    result = run_scenario(
        tiny("stack.layers={online_learning: {latency: 2s, cost: {per_event: 0.5, per_run: 1}}}")
    )
    history = [v for v in result.versions if v.layer == "online_learning"]
    summary = result.summary["layers"]["online_learning"]
    charged = [v for v in history if v.origin == "update"]  # the warm-up's bootstrap is free
    processed = sum(v.events for v in charged)
    assert summary["cost_units"] == pytest.approx(0.5 * processed + len(charged), rel=1e-9)
    days = result.scenario.duration / 86400
    assert summary["cost_units_per_day"] == pytest.approx(summary["cost_units"] / days, rel=1e-6)
    processed = sum(v.events for v in history)
    assert processed == int((result.events.time < history[-1].horizon).sum())
    assert summary["trigger"] == "continuous"
    assert result.summary["timing_error_bound_seconds"] == result.summary["tick_seconds"]
    np.testing.assert_array_equal(np.unique(result.events.versions["online_learning"]) >= 0, True)
