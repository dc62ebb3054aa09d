"""The online-learning layer: per-event River updates, applied at serving, with their cost."""

from __future__ import annotations

import numpy as np
import pytest

from policies.online import OnlineModel
from sim.measuring.metrics import measure
from sim.scenario.spec import OnlineLearning
from sim.serving.runner import run_scenario
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


def test_online_learning_changes_what_is_served_after_a_negative():
    """The same world from the same warm state, with the online model updating per event or
    frozen after warm-up: learning that a user's negatives on a topic predict no click, it
    shows them far less of a topic they rejected (measured: 0.86 against 2.66 impressions per
    negative within 40 minutes)."""
    scenario = ("stack.layers={online_learning: {latency: 2s}}", "world.behavior.explicit_prob=0.5")
    learning = run_scenario(tiny(*scenario))
    frozen = run_scenario(tiny(*scenario, "stack.frozen_after_warmup=true"))

    def served_versions(result):
        measured = result.events.time >= result.scenario.warmup
        return np.unique(result.events.versions["online_learning"][measured]).shape[0]

    assert served_versions(frozen) == 1 and served_versions(learning) > 100

    def topic_exposure(result):
        curves = measure(result).tables["exposure"].to_pandas()
        return curves[(curves.match == "topic") & (curves.seconds_since_negative >= 2400)].iloc[0]

    learned, unchanged = topic_exposure(learning), topic_exposure(frozen)
    assert min(learned.negatives_observed, unchanged.negatives_observed) > 100
    assert learned.impressions_per_negative < 0.5 * unchanged.impressions_per_negative
