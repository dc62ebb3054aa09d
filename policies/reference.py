"""Reference policies: ``oracle`` (the upper bound), ``river_online`` (learning only per event)
and ``linucb`` (a contextual bandit over topics, MABWiser's LinUCB)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from mabwiser.mab import MAB, LearningPolicy
from pydantic import BaseModel, ConfigDict, Field

from policies.base import BasePolicy
from policies.builtin import click_rate_lift, serve_scores
from sim.domain import Kind, Requests, TrainingData, View
from sim.scenario.spec import Duration

__all__ = ["OraclePolicy", "RiverOnlinePolicy", "LinUCBPolicy", "LinUCBModel"]


class OraclePolicy(BasePolicy):
    """Ranks by each user's true expected utility, read from the world: an upper bound no real
    stack reaches. Registered as an oracle, so it is the only built-in that receives
    ``view.truth``, and every output labels runs that use it."""

    name = "oracle"
    oracle: ClassVar[bool] = True

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        if view.truth is None:
            raise RuntimeError("the oracle policy was served without the ground truth")
        scores = view.truth.utility(requests.users, requests.times).astype(np.float32)
        return serve_scores(self._rng, scores, requests, view)


class RiverOnlinePolicy(BasePolicy):
    """No batch model: what it shows comes from the ``online_learning`` layer's River model,
    updated per event, plus the other layers' signals (random until they have learned)."""

    name = "river_online"
    requires_layers: ClassVar[tuple[str, ...]] = ("online_learning",)

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        return serve_scores(self._rng, None, requests, view)


class LinUCBParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alpha: float = Field(1.0, ge=0, description="exploration weight of the upper bound")
    half_life: Duration = Field(3 * 86400.0, gt=0, description="decay of the user context")
    max_examples: int = Field(50_000, ge=100, description="examined impressions per fit (sampled)")
    popularity_weight: float = Field(0.1, ge=0, description="within-topic click-rate lift weight")


@dataclass(frozen=True)
class LinUCBModel:
    """A fitted LinUCB over topics and the user contexts it was fitted with."""

    bandit: Any  # mabwiser MAB, None when fitted on nothing
    contexts: np.ndarray  # (n_users, n_topics): each user's decayed click share per topic
    lift: np.ndarray  # (n_items at fit,) click-rate lift, to order items within a topic


class LinUCBPolicy(BasePolicy):
    """MABWiser LinUCB choosing topics from a user context (the user's recent click share per
    topic); items within a topic by click-rate lift. ``fit`` is its retrain hook."""

    name = "linucb"
    Params = LinUCBParams
    params: LinUCBParams

    def fit(self, data: TrainingData) -> LinUCBModel:
        p = self.params
        events = data.events
        n_topics = data.catalog.n_topics
        shown = events.item >= 0
        topic = np.where(shown, data.catalog.topic[np.where(shown, events.item, 0)], -1)
        clicked = events.kind == Kind.CLICK
        weight = np.exp2(-(data.now - events.time) / p.half_life)
        contexts = np.zeros((data.n_users, n_topics))
        np.add.at(contexts, (events.user[clicked], topic[clicked]), weight[clicked])
        totals = contexts.sum(axis=1, keepdims=True)
        contexts = np.divide(contexts, totals, out=np.zeros_like(contexts), where=totals > 0)
        examined = np.flatnonzero(shown & (events.kind != Kind.IMPRESSION))
        rng = np.random.default_rng(self.seed)
        if examined.shape[0] > p.max_examples:
            examined = np.sort(rng.choice(examined, p.max_examples, replace=False))
        bandit = None
        if examined.shape[0]:  # with nothing examined yet, serving stays a cold start
            bandit = MAB(
                arms=list(range(n_topics)),
                learning_policy=LearningPolicy.LinUCB(alpha=p.alpha),
                seed=self.seed,
            )
            bandit.fit(
                decisions=topic[examined].tolist(),
                rewards=clicked[examined].astype(float),
                contexts=contexts[events.user[examined]],
            )
        lift = click_rate_lift(events, data.catalog.n_items, data.now, p.half_life, 20.0)
        return LinUCBModel(bandit=bandit, contexts=contexts, lift=lift)

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        model: LinUCBModel | None = view.model
        if model is None or model.bandit is None:
            return serve_scores(self._rng, None, requests, view)
        contexts = model.contexts[requests.users]
        expectations = model.bandit.predict_expectations(contexts)
        if isinstance(expectations, dict):  # one request
            expectations = [expectations]
        n_topics = view.catalog.n_topics
        upper = np.array([[row[arm] for arm in range(n_topics)] for row in expectations])
        lift = np.zeros(view.catalog.n_items, np.float32)
        known = min(lift.shape[0], model.lift.shape[0])
        lift[:known] = model.lift[:known]
        scores = upper[:, view.catalog.topic].astype(np.float32)
        scores += self.params.popularity_weight * lift
        return serve_scores(self._rng, scores, requests, view)
