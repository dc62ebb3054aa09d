"""User responses against their analytic probabilities; session consequences in a full run."""

from __future__ import annotations

import numpy as np
import pytest

from sim.domain import Kind, Scope
from sim.scenario.spec import Behavior
from sim.serving.runner import run_scenario
from tests.conftest import tiny
from users.behavior import respond_to_slates

N, K = 40_000, 6


def respond(utility: float, seed: int = 0, **fields):
    spec = Behavior.model_validate(fields)
    rng = np.random.default_rng(seed)
    value = np.full((N, K), utility, np.float32)
    uniform = rng.random((N, K, 4), dtype=np.float32)
    noise = rng.standard_normal((N, K), dtype=np.float32)
    return spec, *respond_to_slates(spec, value, uniform, noise)


def test_examination_falls_geometrically_with_position():
    _, kind, _, _ = respond(-0.5, examine_decay=0.7, explicit_prob=0.0, click_at=50)
    examined = (kind != Kind.IMPRESSION).mean(axis=0)
    np.testing.assert_allclose(examined, 0.7 ** np.arange(K), atol=0.01)


@pytest.mark.parametrize("utility", [1.0, 2.5, 3.5])
def test_click_probability_is_the_logistic_of_utility(utility):
    spec, kind, _, _ = respond(utility, examine_decay=1.0, short_dwell=0.0)
    expected = 1 / (1 + np.exp(-(utility - spec.click_at) / spec.click_temperature))
    assert (kind == Kind.CLICK).mean() == pytest.approx(expected, abs=0.01)


def test_explicit_negatives_follow_their_weights_and_scopes():
    spec, kind, scope, _ = respond(-3.0, examine_decay=1.0, explicit_prob=0.5)
    explicit = (kind >= Kind.DISMISS) & (kind <= Kind.BLOCK_CREATOR)
    assert explicit.mean() == pytest.approx(0.5, abs=0.01)
    weights = spec.explicit_kinds
    total = weights.dismiss + weights.not_interested + weights.thumbs_down + weights.block_creator
    for code, weight, expected_scope in [
        (Kind.DISMISS, weights.dismiss, Scope.ITEM),
        (Kind.NOT_INTERESTED, weights.not_interested, Scope.TOPIC),
        (Kind.THUMBS_DOWN, weights.thumbs_down, Scope.ITEM),
        (Kind.BLOCK_CREATOR, weights.block_creator, Scope.CREATOR),
    ]:
        share = (kind == code).sum() / explicit.sum()
        assert share == pytest.approx(weight / total, abs=0.01)
        assert (scope[kind == code] == expected_scope).all()
    assert (kind[~explicit] == Kind.SKIP).mean() > 0.999  # the rest passed over (or rare clicks)


def test_short_dwell_is_a_click_under_the_threshold():
    spec, kind, _, dwell = respond(2.5, examine_decay=1.0, dwell_sd=1.5)
    clicked = (kind == Kind.CLICK) | (kind == Kind.SHORT_DWELL)
    assert ((kind == Kind.SHORT_DWELL) == (clicked & (dwell < spec.short_dwell))).all()
    assert (dwell[~clicked] == 0).all()
    assert (kind == Kind.SHORT_DWELL).any()


def test_no_event_after_a_user_churned_or_in_an_abandoned_session():
    result = run_scenario(
        tiny(
            "world.behavior.churn_after_bad_sessions=1",
            "world.behavior.churn_prob=0.5",
            "stack.policy=random",
        )
    )
    events = result.events
    assert result.summary["churned_users"] > 10
    # churn: a user's last event is the one that made them quit
    churned = np.isfinite(result.churned_at)
    last_time = np.full(result.summary["users"], -np.inf)
    np.maximum.at(last_time, events.user, events.time)
    np.testing.assert_array_equal(last_time[churned], result.churned_at[churned])
    # abandonment: nothing of the session after its ABANDON row
    left = events.kind == Kind.ABANDON
    assert left.sum() == result.summary["abandoned_sessions"] + (events.time[left] < 3600).sum()
    left_at = dict(zip(events.session[left].tolist(), events.time[left].tolist(), strict=True))
    later = np.array(
        [
            s in left_at and t > left_at[s]
            for s, t in zip(events.session.tolist(), events.time.tolist(), strict=True)
        ]
    )
    assert not later.any()


def test_a_click_on_hype_is_disliked_after_watching_at_the_letdown_rate():
    spec = Behavior.model_validate(
        {"examine_decay": 1.0, "short_dwell": 0.0, "letdown_prob": 0.4, "letdown_at": 0.0}
    )
    rng = np.random.default_rng(3)
    value = np.full((N, K), 2.5, np.float32)  # clicked half of the time
    hype = np.where(np.arange(K) < 3, 3.0, 0.0)  # first three slots: delivered 2.5 - 3 < 0
    uniform = rng.random((N, K, 4), dtype=np.float32)
    noise = rng.standard_normal((N, K), dtype=np.float32)
    kind, scope, dwell = respond_to_slates(spec, value, uniform, noise, hype)
    let_down = kind == Kind.THUMBS_DOWN
    assert let_down[:, 3:].sum() == 0  # delivered what it promised
    # a click (1/2) then a letdown (0.4): 20% of impressions, and 30% stay clicks
    assert let_down[:, :3].mean() == pytest.approx(0.2, abs=0.01)
    assert (kind[:, :3] == Kind.CLICK).mean() == pytest.approx(0.3, abs=0.01)
    assert (dwell[let_down] > 0).all() and (scope[let_down] == Scope.ITEM).all()
