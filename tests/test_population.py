"""The simulated population's preference drift."""

from __future__ import annotations

import numpy as np

import users.population as population_module
from sim.spec import Users
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
