"""Same seed, identical results; batching (the serving window) changes speed, not answers."""

from __future__ import annotations

import numpy as np
import pytest

from sim.serving.runner import run_scenario
from tests.conftest import tiny

STABLE_SUMMARY_KEYS = (
    "requests",
    "impressions",
    "clicks",
    "negatives",
    "sessions",
    "abandoned_sessions",
    "churned_users",
    "layers",
    "items_at_end",
)


def assert_same_events(a, b):
    for name, column in a.events.columns().items():
        np.testing.assert_array_equal(column, b.events.columns()[name], err_msg=name)


def test_same_seed_gives_identical_summary_and_event_log():
    first, second = run_scenario(tiny()), run_scenario(tiny())
    assert len(first.events) > 10_000
    assert_same_events(first, second)
    for key in STABLE_SUMMARY_KEYS:
        assert first.summary[key] == second.summary[key], key
    assert [v.as_row() | {"wall_seconds": 0} for v in first.versions] == [
        v.as_row() | {"wall_seconds": 0} for v in second.versions
    ]


ALL_LAYERS = (
    "stack.layers={realtime_features: {latency: 1s}, nearline_embeddings: {every: 20m}, "
    "retrain: {every: 1h, rollout: {canary: {fraction: 0.1, for: 10m}}}, session_context: {}, "
    "profile_memory: {every: 2h}, bandit: {every: 5m}, online_learning: {latency: 2s}}"
)


def test_every_layer_on_is_still_bitwise_reproducible():
    first, second = run_scenario(tiny(ALL_LAYERS)), run_scenario(tiny(ALL_LAYERS))
    assert set(first.events.versions) == {
        "realtime_features",
        "nearline_embeddings",
        "retrain",
        "session_context",
        "profile_memory",
        "bandit",
        "online_learning",
    }
    assert_same_events(first, second)


def test_another_seed_gives_other_results():
    assert run_scenario(tiny()).summary["clicks"] != run_scenario(tiny("seed=4")).summary["clicks"]


#: Periodic layers: releases end a serving window, so their changes are exact at any tick. (A
#: continuous layer acts at window starts instead, its timing error of at most one tick reported
#: with the results, so a smaller tick may change what it serves.)
EXACT_AT_ANY_TICK = "stack.layers={nearline_embeddings: {every: 20m}, retrain: {every: 1h}}"
#: Periodic too, yet a smaller tick changes their event logs, because some randomness is drawn
#: per call rather than per request, and a smaller tick makes more, smaller calls:
#: - profile memory: before the first model, a layer that adjusts scores (even by nothing, as an
#:   empty profile) sends serving through random scores drawn from one seed per batch
#:   (``serve_scores``' ``uniform_fill``) instead of ``_cold_start``'s k uniforms per request;
#: - bandit: MABWiser's Thompson sampling draws arm by arm for the whole call (``size`` draws per
#:   arm), so a request's draws depend on the call's size (``implementation: vectorized`` draws
#:   row by row and passes this test);
#: - canary: the stack ranks each cohort in its own call, so the policy's generator serves the
#:   cohorts' requests in an order that depends on the windows.
#: Keying the draws by request (time, user) fixes all three; it is issue 28's prerequisite too
#: (shards must not depend on how requests are grouped either).
NOT_YET_EXACT = {
    "profile memory": "stack.layers.profile_memory={every: 2h}",
    "bandit": "stack.layers.bandit={every: 5m}",
    "canary": "stack.layers.retrain.rollout={canary: {fraction: 0.1, for: 10m}}",
}


@pytest.mark.parametrize(
    "layers",
    [
        pytest.param((), id="retrain"),
        pytest.param((EXACT_AT_ANY_TICK,), id="retrain and near-line"),
        *(
            pytest.param((override,), id=name, marks=pytest.mark.xfail(strict=True))
            for name, override in NOT_YET_EXACT.items()
        ),
    ],
)
def test_a_smaller_tick_gives_bitwise_identical_events(layers):
    auto = run_scenario(tiny(*layers))
    assert auto.summary["tick_seconds"] == 10.0
    for tick in ("1s", "3.7s"):
        finer = run_scenario(tiny(*layers, f"tick={tick}"))
        assert finer.summary["windows"] > auto.summary["windows"]
        assert_same_events(auto, finer)
