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
from policies.kernels import best_member
from sim.domain import CatalogView, EventTable, Kind, Requests, TrainingData, View
from sim.scenario.spec import Bandit
from sim.serving.layers import LayerContext, Reads

__all__ = ["BanditState", "BanditKind", "explore"]


class BanditState:
    """A posterior over arms, learned in place with ``learn`` and sampled with ``choose``.

    Arms are topics, or ranks among the policy's top candidates. LinUCB decides from a context
    per request (the policy's best score per topic, or its top candidates' scores). Decisions are
    remembered until their feedback is absorbed, so learning uses the arm and context actually
    served.
    """

    def __init__(self, spec: Bandit, n_arms: int, seed: int):
        self.spec = spec
        self.position = spec.position
        self.n_arms = n_arms
        self._rng = np.random.default_rng(seed)
        self.successes = np.zeros(n_arms)
        self.trials = np.zeros(n_arms)
        self._mab: MAB | None = None
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._decisions = 0  # decisions served so far
        if spec.implementation == "mabwiser":
            policy = {
                "thompson": LearningPolicy.ThompsonSampling(),
                "ucb1": LearningPolicy.UCB1(alpha=spec.alpha),
                "epsilon_greedy": LearningPolicy.EpsilonGreedy(epsilon=spec.epsilon),
                "linucb": LearningPolicy.LinUCB(alpha=spec.alpha),
            }[spec.learning_policy]
            self._mab = MAB(arms=list(range(n_arms)), learning_policy=policy, seed=seed)

    @property
    def contextual(self) -> bool:
        return self.spec.learning_policy == "linucb"

    def learn(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None = None):
        """Update with the arm pulled, the 0/1 reward and (LinUCB) the context of decisions."""
        if not arms.shape[0]:
            return
        first = not self.trials.any()
        np.add.at(self.trials, arms, 1.0)
        np.add.at(self.successes, arms, rewards)
        if self._mab is not None:
            fit = self._mab.fit if first else self._mab.partial_fit
            fit(
                decisions=arms.tolist(),
                rewards=rewards.tolist(),
                contexts=contexts if self.contextual else None,
            )

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

    def choose(self, n: int, contexts: np.ndarray | None = None) -> np.ndarray:
        """One arm per request; uniformly random before any feedback."""
        if not self.trials.any():
            return self._rng.integers(0, self.n_arms, n)
        if self._mab is not None:
            rows = contexts if self.contextual else np.zeros((n, 1))
            chosen = self._mab.predict(contexts=rows)
            return np.asarray(chosen if n > 1 else [chosen], np.int64).reshape(n)
        return np.argmax(self.expectations(n), axis=1)

    def describe(self) -> dict[str, Any]:
        """Per-arm trials and observed click rates, for the run summary; decisions served whose
        feedback the bandit had not learned from when the run ended are ``arm_pending``, not
        trials."""
        rate = np.divide(
            self.successes, self.trials, out=np.zeros(self.n_arms), where=self.trials > 0
        )
        pending = np.zeros(self.n_arms, np.int64)
        for _, _, arms, _ in self._pending:
            pending += np.bincount(arms, minlength=self.n_arms)
        return {
            "arms": self.spec.arms,
            "decisions": self._decisions,
            "arm_trials": self.trials.astype(int).tolist(),
            "arm_click_rate": np.round(rate, 6).tolist(),
            "arm_pending": pending.tolist(),
            "pending_decisions": int(pending.sum()),
        }

    @property
    def placed_any(self) -> bool:
        """Whether any decision was ever served (a policy that never calls :func:`explore`
        never lets the bandit place an item)."""
        return self._decisions > 0

    def remember(
        self, times: np.ndarray, users: np.ndarray, arms: np.ndarray, contexts: np.ndarray
    ) -> None:
        """Keep the decisions served until their feedback arrives."""
        self._pending.append((times, users.astype(np.int64), arms, contexts))
        self._decisions += int(times.shape[0])

    def awaits(self, times: np.ndarray, users: np.ndarray) -> np.ndarray:
        """Which feedback at (``times``, ``users``) a remembered decision is waiting for."""
        if not self._pending or not times.shape[0]:
            return np.zeros(times.shape[0], bool)
        keys = np.sort(
            np.concatenate([_keys(t, u) for t, u, _, _ in self._pending]), order=("time", "user")
        )
        wanted = _keys(times, users.astype(np.int64))
        at = np.minimum(np.searchsorted(keys, wanted), keys.shape[0] - 1)
        return keys[at] == wanted

    def recall(
        self, times: np.ndarray, users: np.ndarray, horizon: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The decisions behind feedback at (``times``, ``users``): found mask, arms, contexts.

        Decisions older than ``horizon`` are forgotten afterwards (their feedback is in).
        """
        if not self._pending:
            return np.zeros(times.shape[0], bool), np.zeros(0, np.int64), np.zeros((0, 0))
        t, u, arms, contexts = (np.concatenate(part) for part in zip(*self._pending, strict=True))
        keys = _keys(t, u)
        order = np.argsort(keys, order=("time", "user"))
        keys, arms, contexts = keys[order], arms[order], contexts[order]
        wanted = _keys(times, users.astype(np.int64))
        at = np.minimum(np.searchsorted(keys, wanted), keys.shape[0] - 1)
        found = keys[at] == wanted
        learned, chosen = arms[at[found]], contexts[at[found]]
        # what stays: later decisions whose feedback has not been matched
        keep = t[order] >= horizon
        keep[at[found]] = False
        self._pending = [(t[order][keep], u[order][keep], arms[keep], contexts[keep])]
        return found, learned, chosen


def _keys(times: np.ndarray, users: np.ndarray) -> np.ndarray:
    keys = np.empty(times.shape[0], [("time", "f8"), ("user", "i8")])
    keys["time"], keys["user"] = times, users
    return keys


class BanditKind:
    """The ``bandit`` layer's math: learn from the item each served decision placed.

    It reads the feedback at its slot position; an update that learned from one decision changes
    every user's next picks (the state is shared), one that learned from none changes nothing.
    """

    name = "bandit"
    Params = Bandit
    incremental = True
    shared = True

    def __init__(self, spec: Bandit, catalog: Callable[[], CatalogView], seed: int):
        self.spec = spec
        self.catalog = catalog
        self.seed = seed
        self.reads = Reads(on_item=True, position=spec.position)

    @classmethod
    def create(cls, params: Bandit, context: LayerContext) -> BanditKind:
        """The layer's kind for one run, learning with the run's ``kind:bandit`` stream."""
        return cls(params, context.catalog, context.seed)

    def reflected(self, state: BanditState, events: EventTable) -> np.ndarray:
        """The feedback on items the bandit placed, whose decision it will learn from."""
        placed = self.reads.admits_events(events)
        rows = np.flatnonzero(placed)
        placed[rows] = state.awaits(events.time[rows], events.user[rows])
        return placed

    def why_unchanged(self, state: BanditState) -> str:
        if not state.placed_any:
            return "it never placed an item (the policy does not serve through the bandit)"
        return "no feedback on an item it placed arrived"

    def initial_state(self) -> BanditState:
        arms = self.catalog().n_topics if self.spec.arms == "topics" else self.spec.candidates
        return BanditState(self.spec, arms, self.seed)

    def absorb(self, state: BanditState, events: EventTable) -> None:
        placed = (events.position == self.spec.position) & (events.item >= 0)
        if not placed.any():
            return
        times = events.time[placed]
        found, arms, contexts = state.recall(times, events.user[placed], float(times.max()))
        rewards = (events.kind[placed][found] == Kind.CLICK).astype(np.float64)
        state.learn(arms, rewards, contexts)

    def compute(self, data: TrainingData) -> Any:  # pragma: no cover - incremental kind
        raise NotImplementedError


def explore(
    scores: np.ndarray, requests: Requests, view: View, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Top-k slates from ``scores``, with the bandit's pick at its position if it is on.

    ``scores`` covers every item, or with ``candidates`` (``(n, c)`` item ids per request from a
    retrieval stage) those items, column for column; slates are item ids either way.
    """
    bandit: BanditState | None = view.states.get("bandit")
    k = requests.k

    def items(columns: np.ndarray) -> np.ndarray:
        return columns if candidates is None else np.take_along_axis(candidates, columns, axis=1)

    if bandit is None:
        return items(top_k(scores, k))
    n = len(requests)
    if bandit.spec.arms == "candidates":
        columns = top_k(scores, bandit.n_arms)
        contexts = np.take_along_axis(scores, columns, axis=1)
        arms = bandit.choose(n, contexts)
        picked = items(columns)[np.arange(n), arms]
    else:
        picked, arms, contexts = _topic_picks(bandit, scores, view.catalog, candidates)
    bandit.remember(requests.times, requests.users, arms, contexts)
    others = items(top_k(scores, k))
    # Drop the picked item from the policy's slate if it is there, else its last item.
    duplicate = others == picked[:, None]
    rest = np.take_along_axis(others, np.argsort(duplicate, axis=1, kind="stable"), axis=1)
    p = bandit.position
    slot = np.where(picked >= 0, picked, rest[:, k - 1])
    return np.concatenate([rest[:, :p], slot[:, None], rest[:, p : k - 1]], axis=1)


def _topic_picks(
    bandit: BanditState,
    scores: np.ndarray,
    catalog: CatalogView,
    candidates: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chosen topic per request and the policy's best item of it (-1: topic has none)."""
    n = scores.shape[0]
    if candidates is None:
        members = catalog.items_by_topic
        if bandit.contextual:  # the policy's best score per topic
            contexts = np.stack(
                [scores[:, m].max(axis=1) if m.shape[0] else np.zeros(n) for m in members], axis=1
            )
        else:
            contexts = np.zeros((n, 0))
        arms = bandit.choose(n, contexts)
        # The first best member of each request's topic; -1 for a topic with no live item, which
        # leaves the slot to the policy.
        picked = best_member(scores, catalog.topic_members, arms)
        return picked, arms, contexts
    topics = np.where(candidates >= 0, catalog.topic[np.maximum(candidates, 0)], -1)
    if bandit.contextual:  # the best candidate's score per topic (0 where none is a candidate)
        contexts = np.zeros((n, catalog.n_topics))
        for topic in range(catalog.n_topics):
            best = np.where(topics == topic, scores, -np.inf).max(axis=1)
            contexts[:, topic] = np.where(np.isfinite(best), best, 0.0)
    else:
        contexts = np.zeros((n, 0))
    arms = bandit.choose(n, contexts)
    masked = np.where(topics == arms[:, None], scores, -np.inf)
    best = np.argmax(masked, axis=1)
    found = np.isfinite(masked[np.arange(n), best])
    picked = np.where(found, candidates[np.arange(n), best], -1)
    return picked, arms, contexts
