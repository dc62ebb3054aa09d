"""An example policy shipped as its own package: recently clicked topics up, rejected topics down.

Registered through the ``recloop.policies`` entry point (see pyproject.toml), so a scenario
names it ``recent-dislikes`` once the package is installed.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.base import BasePolicy, top_k
from sim.domain import EXPLICIT_NEGATIVE_KINDS, Kind, Requests, TrainingData, View


class RecentDislikesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    penalty: float = Field(5.0, ge=0, description="score penalty per decayed rejection of a topic")
    half_life: float = Field(86400.0, gt=0, description="seconds after which an event counts half")


class RecentDislikes(BasePolicy):
    """Per-user topic scores from decayed clicks (+1) and explicit rejections (-penalty)."""

    name = "recent-dislikes"
    Params = RecentDislikesParams
    params: RecentDislikesParams

    def fit(self, data: TrainingData) -> np.ndarray:
        """The retrain hook: a new (users x topics) score matrix from the visible events."""
        events = data.events
        shown = events.item >= 0
        topic = data.catalog.topic[np.where(shown, events.item, 0)]
        weight = np.exp2(-(data.now - events.time) / self.params.half_life)
        value = np.where(events.kind == Kind.CLICK, 1.0, 0.0)
        value -= self.params.penalty * np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS)
        scores = np.zeros((data.n_users, data.catalog.n_topics))
        np.add.at(scores, (events.user[shown], topic[shown]), (weight * value)[shown])
        return scores

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        """The model's topic score of every live item, random tie-breaks, best k."""
        noise = self._rng.random((len(requests), view.catalog.n_items))
        if view.model is None:  # before the first retrain
            return top_k(noise, requests.k)
        return top_k(view.model[requests.users][:, view.catalog.topic] + noise, requests.k)
