"""The simulated population's preference drift."""

from __future__ import annotations

import numpy as np

import users.population as population_module
from sim.scenario.spec import Users
from users.population import DAY, Population


def test_drift_in_runs_of_users_equals_one_draw_over_every_user(monkeypatch):
    """Drift steps through the users in runs (bounded temporaries); the preferences after it are
    bitwise those of one ``(n, dim)`` draw scaled by the analytic per-step sd."""
    spec = Users(count=1000, drift={"sd_per_day": 0.3, "every": 3600})
    centroids = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    population = Population(spec, centroids, np.random.default_rng(1))
    before = population.preferences.copy()
    monkeypatch.setattr(population_module, "DRIFT_ROWS", 300)  # 4 runs, the last ragged
    population.drift(DAY / 4, np.random.default_rng(2))
    sd = 0.3 * np.sqrt(0.25) / np.sqrt(8)
    expected = before + (np.random.default_rng(2).standard_normal(before.shape) * sd).astype(
        np.float32
    )
    np.testing.assert_array_equal(population.preferences, expected)


def _appeal(exponent: float) -> np.ndarray:
    from sim.scenario.spec import Catalog as CatalogSpec
    from users.catalog import Catalog

    spec = CatalogSpec(items=2000, new_items_per_day=0, zipf_exponent=exponent)
    return Catalog(spec, DAY, np.random.default_rng(5)).appeal


def test_zipf_exponent_one_is_the_standardized_log_prior_bit_for_bit():
    # The formula before the exponent took effect: -s * log(rank) standardized by its own sd (s
    # cancels). Appeal falls strictly with rank, so its order gives back each item's rank.
    appeal = _appeal(1.0)
    ranks = np.empty(appeal.shape[0])
    ranks[np.argsort(-appeal, kind="stable")] = np.arange(1, appeal.shape[0] + 1)
    log_prior = -1.0 * np.log(ranks)
    old = ((log_prior - log_prior.mean()) / log_prior.std()).astype(np.float32)
    assert np.array_equal(appeal, old)


def test_zipf_exponent_scales_the_popularity_skew():
    one, two, zero = _appeal(1.0), _appeal(2.0), _appeal(0.0)
    # s times the standardized log prior: the sd is s, the top item's lead over the median is s x
    assert abs(one.std() - 1.0) < 1e-5 and abs(two.std() - 2.0) < 1e-5
    np.testing.assert_allclose(two, 2.0 * one, rtol=1e-6)
    assert np.all(zero == 0.0)
    # the top 1% of items hold a larger share of exp(appeal) under the larger exponent
    top = lambda a: np.sort(np.exp(a))[-20:].sum() / np.exp(a).sum()  # noqa: E731
    assert top(two) > 2 * top(one)
