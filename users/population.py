"""Users' true preferences and activity levels; nothing here is visible to a policy."""

from __future__ import annotations

import numpy as np

from sim.scenario.spec import Users as UsersSpec

__all__ = ["Population"]

DAY = 86400.0


#: Users per step of a drift update.
DRIFT_ROWS = 65_536


class Population:
    """Latent preferences as topic mixtures plus a personal offset, and per-user activity.

    ``preferences @ item_vector`` is a user's true affinity for an item.
    """

    def __init__(self, spec: UsersSpec, centroids: np.ndarray, rng: np.random.Generator):
        self.spec = spec
        n, dim = spec.count, centroids.shape[1]
        topics = centroids.shape[0]
        # The mixture only places each user; not kept (76 MB a million users at 20 topics).
        mixture = rng.dirichlet(np.full(topics, spec.topic_concentration), n).astype(np.float32)
        offset = rng.standard_normal((n, dim)) * (spec.idiosyncrasy / np.sqrt(dim))
        self.preferences = (mixture @ centroids + offset).astype(np.float32)
        activity = spec.sessions_per_day
        if activity.distribution == "lognormal":
            per_day = activity.median * np.exp(activity.sigma * rng.standard_normal(n))
        else:
            per_day = np.full(n, activity.median)
        self.sessions_per_day = per_day

    @property
    def count(self) -> int:
        return int(self.preferences.shape[0])

    def drift(self, elapsed: float, rng: np.random.Generator) -> None:
        """Random-walk every user's preferences for ``elapsed`` simulated seconds."""
        sd = (
            self.spec.drift.sd_per_day * np.sqrt(elapsed / DAY) / np.sqrt(self.preferences.shape[1])
        )
        if sd <= 0:
            return
        # In runs of users: the same draws in the same order as one (n, dim) draw, without its
        # float64 temporaries (about 300 MB a million users, every drift step).
        preferences = self.preferences
        for start in range(0, preferences.shape[0], DRIFT_ROWS):
            rows = preferences[start : start + DRIFT_ROWS]
            rows += (rng.standard_normal(rows.shape) * sd).astype(np.float32)
