"""Layer 0: a bandit over topics on top of any scoring policy, with MABWiser or a vectorized
equivalent (MABWiser's per-arm Python loops cost ~10x per 10x arms).

The bandit fills one slate position: it picks a topic per request, and the policy's best item of
that topic goes there; the rest of the slate is the policy's ranking. It learns, on its layer's
cadence, whether the item it placed was clicked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mabwiser.mab import MAB, LearningPolicy

from policies.base import top_k
from sim.domain import CatalogView, EventTable, Kind, Requests, TrainingData, View
from sim.spec import Bandit

__all__ = ["BanditState", "BanditKind", "explore"]


class BanditState:
    """Posterior over topics (arms), learned in place with ``learn`` and sampled with ``choose``."""

    def __init__(self, spec: Bandit, n_arms: int, seed: int):
        self.spec = spec
        self.position = spec.position
        self.n_arms = n_arms
        self._rng = np.random.default_rng(seed)
        self.successes = np.zeros(n_arms)
        self.trials = np.zeros(n_arms)
        self._mab: MAB | None = None
        if spec.implementation == "mabwiser":
            policy = {
                "thompson": LearningPolicy.ThompsonSampling(),
                "ucb1": LearningPolicy.UCB1(alpha=spec.alpha),
                "epsilon_greedy": LearningPolicy.EpsilonGreedy(epsilon=spec.epsilon),
            }[spec.learning_policy]
            self._mab = MAB(arms=list(range(n_arms)), learning_policy=policy, seed=seed)

    def learn(self, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Update with the arm pulled and the 0/1 reward of each decision."""
        if not arms.shape[0]:
            return
        first = not self.trials.any()
        np.add.at(self.trials, arms, 1.0)
        np.add.at(self.successes, arms, rewards)
        if self._mab is not None:
            fit = self._mab.fit if first else self._mab.partial_fit
            fit(decisions=arms.tolist(), rewards=rewards.tolist())

    def expectations(self, n: int) -> np.ndarray:
        """``(n, arms)`` values whose argmax is each decision (vectorized implementation)."""
        spec = self.spec
        failures = self.trials - self.successes
        if spec.learning_policy == "thompson":
            return self._rng.beta(self.successes + 1, failures + 1, size=(n, self.n_arms))
        mean = np.divide(
            self.successes, self.trials, out=np.zeros(self.n_arms), where=self.trials > 0
        )
        if spec.learning_policy == "ucb1":
            total = max(self.trials.sum(), 1.0)
            with np.errstate(divide="ignore"):
                bonus = spec.alpha * np.sqrt(2 * np.log(total) / self.trials)
            return np.broadcast_to(
                np.where(self.trials > 0, mean + bonus, np.inf), (n, self.n_arms)
            )
        explore = self._rng.random(n) < spec.epsilon
        return np.where(explore[:, None], self._rng.random((n, self.n_arms)), mean)

    def choose(self, n: int) -> np.ndarray:
        """One arm per request; uniformly random before any feedback."""
        if not self.trials.any():
            return self._rng.integers(0, self.n_arms, n)
        if self._mab is not None:
            chosen = self._mab.predict(contexts=np.zeros((n, 1)))
            return np.asarray(chosen if n > 1 else [chosen], np.int64).reshape(n)
        return np.argmax(self.expectations(n), axis=1)


class BanditKind:
    """The ``bandit`` layer's math: learn from the item each slate had at the bandit's slot."""

    incremental = True

    def __init__(self, spec: Bandit, catalog: Callable[[], CatalogView], seed: int):
        self.spec = spec
        self.catalog = catalog
        self.seed = seed

    def initial_state(self) -> BanditState:
        return BanditState(self.spec, self.catalog().n_topics, self.seed)

    def absorb(self, state: BanditState, events: EventTable) -> None:
        placed = (events.position == self.spec.position) & (events.item >= 0)
        arms = self.catalog().topic[events.item[placed]].astype(np.int64)
        state.learn(arms, (events.kind[placed] == Kind.CLICK).astype(np.float64))

    def compute(self, data: TrainingData) -> Any:  # pragma: no cover - incremental kind
        raise NotImplementedError


def explore(scores: np.ndarray, requests: Requests, view: View) -> np.ndarray:
    """Top-k slates from ``scores``, with the bandit's topic pick at its position if it is on."""
    bandit: BanditState | None = view.states.get("bandit")
    k = requests.k
    if bandit is None:
        return top_k(scores, k)
    n = len(requests)
    arms = bandit.choose(n)
    # The policy's best item of each request's chosen topic, one topic at a time (few topics).
    picked = np.full(n, -1, np.int64)
    topic = view.catalog.topic
    for arm in np.unique(arms):
        rows = np.flatnonzero(arms == arm)
        members = np.flatnonzero(topic == arm)
        if members.shape[0]:  # a topic with no live item leaves the slot to the policy
            picked[rows] = members[np.argmax(scores[np.ix_(rows, members)], axis=1)]
    others = top_k(scores, k)
    # Drop the picked item from the policy's slate if it is there, else its last item.
    duplicate = others == picked[:, None]
    rest = np.take_along_axis(others, np.argsort(duplicate, axis=1, kind="stable"), axis=1)
    p = bandit.position
    slot = np.where(picked >= 0, picked, rest[:, k - 1])
    return np.concatenate([rest[:, :p], slot[:, None], rest[:, p : k - 1]], axis=1)
