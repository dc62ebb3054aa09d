"""Regret against the oracle: the expected clicks behind it are right, and the oracle has none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from sim.domain import Kind
from sim.measuring.metrics import measure
from sim.scenario.spec import Behavior
from sim.serving.runner import run_scenario
from tests.conftest import tiny
from users.behavior import click_probability

REGRET = ("metrics.regret=true", "duration=3h")


@pytest.mark.parametrize(
    ("temperature", "noise_sd"), [(0.5, 1.0), (0.05, 1.0), (0.2, 1.0), (2.0, 0.3), (0.3, 0.0)]
)
def test_click_probability_integrates_the_noise_to_1e_5(temperature, noise_sd):
    spec = Behavior(click_temperature=temperature, noise_sd=noise_sd)
    values = np.linspace(-3.0, 6.0, 19)
    ours = click_probability(spec, values)
    for value, estimate in zip(values, ours, strict=True):
        if noise_sd == 0:
            exact = 1 / (1 + np.exp(-(value - spec.click_at) / temperature))
        else:
            kink = (spec.click_at - value) / noise_sd

            def density(z, value=value):
                margin = (value + noise_sd * z - spec.click_at) / temperature
                return np.exp(-z * z / 2 - np.logaddexp(0, -margin)) / np.sqrt(2 * np.pi)

            exact = integrate.quad(
                density, -12, 12, epsabs=1e-13, limit=400, points=[kink] if abs(kink) < 12 else None
            )[0]
        assert abs(estimate - exact) < 1e-5


@pytest.mark.parametrize("policy", ["oracle", "random", "embedding"])
def test_expected_clicks_match_the_clicks_users_made(policy):
    params = "stack.policy.params={dim: 8}" if policy == "embedding" else "stack.policy.params={}"
    result = run_scenario(tiny(*REGRET, f"stack.policy.name={policy}", params))
    times, served, best = result.expected_clicks
    assert served.shape[0] == int(((result.events.position == 0) & (result.events.item >= 0)).sum())
    made = int(np.isin(result.events.kind, [Kind.CLICK, Kind.SHORT_DWELL]).sum())
    # clicks are a sum of independent Bernoullis, variance sum p (1 - p); per request only the
    # sum s of a slate's k probabilities is known, and sum p^2 >= s^2 / k bounds the variance by
    # s - s^2 / k (exact when a slate's probabilities are equal; the oracle's are about 1/3)
    k = result.scenario.stack.slate_size
    standard_error = np.sqrt(np.sum(served - served**2 / k))
    assert abs(made - served.sum()) < 4 * standard_error
    assert np.all(best >= served - 1e-6)  # float32 utilities


@pytest.mark.parametrize("freshness", [0.0, 1.5])
def test_the_oracle_has_no_regret_and_random_slates_have_much(freshness):
    # with freshness, utilities change with every request's time: the oracle's separable
    # shortcut must agree with the per-slate utility users respond to
    oracle, random = (
        measure(
            run_scenario(
                tiny(
                    *REGRET,
                    f"stack.policy.name={name}",
                    "stack.policy.params={}",
                    f"world.behavior.freshness_weight={freshness}",
                )  # fmt: skip
            )
        )
        for name in ("oracle", "random")
    )
    assert oracle.scalars["regret_per_request"] == pytest.approx(0.0, abs=1e-6)
    assert (
        random.scalars["regret_per_request"]
        > 0.5 * random.scalars["oracle_expected_clicks_per_request"]
    )
    hourly = random.tables["timeseries"].column("regret_per_request").to_numpy()
    assert np.all(np.isfinite(hourly)) and np.all(hourly > 0)


def test_regret_is_left_out_unless_asked_for():
    result = run_scenario(tiny("duration=2h"))
    metrics = measure(result)
    assert result.expected_clicks is None and "regret_per_request" not in metrics.scalars
    column = metrics.tables["timeseries"].column("regret_per_request")
    assert column.null_count == len(column) > 0
