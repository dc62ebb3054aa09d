"""No policy sees an event before it is visible, nor anything of the world's ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from policies.builtin import EmbeddingPolicy
from sim.domain import CatalogView, EventTable, RefreshData, Requests, TrainingData, View
from sim.serving.runner import run_scenario
from tests.conftest import tiny

#: Everything a policy may be handed, field by field; ground truth (preferences, item vectors,
#: quality, appeal, churn state) must never be among them.
ALLOWED_FIELDS = {
    Requests: {"times", "users", "sessions", "k"},
    # truth is None for every policy but a declared oracle (test_policy_api checks it)
    View: {"now", "model", "states", "catalog", "n_users", "versions", "truth"},
    RefreshData: {
        "events",
        "catalog",
        "n_users",
        "now",
        "horizon",
        "model",
        "windows",
        "negative_weight",
    },
    CatalogView: {"n_items", "n_topics", "n_creators", "topic", "creator", "created_at"},
    TrainingData: {"events", "catalog", "n_users", "now", "horizon", "previous", "unlabelled"},
    EventTable: {
        "time",
        "user",
        "item",
        "position",
        "kind",
        "scope",
        "dwell",
        "session",
        "versions",
        "arrival",  # with label delays: when each visible label arrived (sim.serving.labels)
    },
}


class SpyPolicy(EmbeddingPolicy):
    """The embedding policy, recording everything serving and the layer hand it."""

    name = "spy"
    seen_fits: list = []
    seen_ranks: list = []

    def fit(self, data):
        SpyPolicy.seen_fits.append(data)
        return super().fit(data)

    def rank(self, requests, view):
        SpyPolicy.seen_ranks.append((requests, view))
        return super().rank(requests, view)


@pytest.fixture
def spied_run():
    SpyPolicy.seen_fits.clear()
    SpyPolicy.seen_ranks.clear()
    result = run_scenario(tiny("stack.policy.name=tests.test_causality:SpyPolicy"))
    return result, list(SpyPolicy.seen_fits), list(SpyPolicy.seen_ranks)


def test_only_observable_fields_reach_a_policy():
    for cls, allowed in ALLOWED_FIELDS.items():
        assert {f.name for f in dataclasses.fields(cls)} == allowed, cls.__name__


def test_fit_never_sees_an_event_before_it_is_visible(spied_run):
    _, fits, _ = spied_run
    latency = tiny().stack.layers.retrain.latency
    assert len(fits) >= 7
    for data in fits:
        assert data.horizon == data.now - latency
        if len(data.events):
            assert data.events.time.max() < data.now - latency
        assert not data.events.time.flags.writeable


def test_fit_sees_every_event_that_is_visible(spied_run):
    result, fits, _ = spied_run
    for data in fits:
        expected = int((result.events.time < data.horizon).sum())
        assert len(data.events) == expected


def test_rank_gets_only_requests_due_in_its_window_and_the_model_then_live(spied_run):
    result, _, ranks = spied_run
    live = sorted((v.live_at, v.version) for v in result.versions)
    for requests, view in ranks:
        assert requests.times.min() >= view.now
        expected = max((version for at, version in live if at <= view.now), default=0)
        assert view.versions["retrain"] == expected
        assert len(np.unique(requests.users)) == len(requests)  # one request per user per window


def test_served_events_carry_the_version_that_served_them(spied_run):
    result, _, _ = spied_run
    events = result.events
    live_at = {0: -np.inf} | {v.version: v.live_at for v in result.versions}
    served_from = np.array([live_at[v] for v in events.versions["retrain"]])
    assert (events.time >= served_from).all()
