"""Exploration and stochastic ranking for the learned rankers (``embedding``, ``torch_ranker``).

A deterministic top-k of a learned score shows every user the same items whenever one item term
is shared by everyone. In the packaged worlds it is: an item's quality and popularity appeal are
part of every user's utility, with several times the variance across items of the personal
affinity, so a factorization's first component is that shared term (its singular value is six
times the next one's and nine users in ten load on it with the same sign), and the top ten items
of nearly every user are the same few dozen: without these knobs the most-shown 1% of items get
86-91% of impressions. Production rankers do not serve a pure argmax; the built-in ones get two
knobs, both on by default:

- ``score_noise``: stochastic ranking, noise added to the scores in units of how much items
  differ for the average user, so that users whose scores are nearly alike get different slates. A
  deterministic fix (a per-item exposure price, a debiased score) moves every user to the same
  next items, because their scores differ too little to tell them apart; randomization is what
  splits them.
- ``explore``: a share of slate slots filled with uniformly random live items (epsilon-greedy
  per slot), so that items the model knows nothing about are shown and logged.

Both draw their randomness per request, a fixed number of uniforms in request order from the
policy's generator, so how requests are grouped into serving windows never changes a slate. The
bandit layer's slot is left alone. "Exposure concentration" in docs/findings.md has the
measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field

from policies.signals import LowRankScores
from sim.domain import Requests, View

__all__ = [
    "ExplorationParams",
    "score_noise_field",
    "Exploration",
    "Draws",
    "shared_spread",
    "average_user",
    "ruled_out",
    "NOISE_RANK",
]

#: Rank of the score noise: each request gets ``NOISE_RANK`` draws, each item a fixed random unit
#: direction, and the noise is their product, folded into the ranker's own matrix product (8
#: more columns cost about 5% of serving; 4 spread exposure slightly less for the same clicks).
NOISE_RANK = 8
#: Item directions are drawn in chunks of this many item ids, each from its own stream, so an
#: item's direction does not depend on how large the catalogue was when it was first needed.
DIRECTION_CHUNK = 4096
#: Widened item matrices kept (per model and catalogue size).
KEPT = 2


def score_noise_field(default: float) -> Any:
    """The ``score_noise`` field with ``default``: each ranker's default is calibrated on the
    packaged sweep's world, since how much of a model's score is shared differs by model."""
    return Field(
        default,
        ge=0,
        le=10,
        description="stochastic ranking: sd of the noise added to every score of a request "
        "(mean 0, near-normal, drawn anew per request), in units of the sd over live items of "
        "the average user's scores, i.e. of how much items differ for everyone (0: a "
        "deterministic top-k). It spreads a consensus and leaves personal taste in place; "
        "without it every user who shares the model's first component gets the same slate. "
        "The default brings the packaged sweep's top-1% impression share below 0.5 "
        "(docs/findings.md, Exposure concentration)",
    )


class ExplorationParams(BaseModel):
    """The exploration knobs every built-in learned ranker takes (inherited by its ``Params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    explore: float = Field(
        0.05,
        ge=0,
        le=1,
        description="share of slate slots (other than the bandit's) filled with uniformly random "
        "live items that are not in the ranker's slate, at random positions; the ranker's own "
        "items keep their order and its last ones make room (0: off)",
    )
    score_noise: float = score_noise_field(4.0)


@dataclass(frozen=True)
class Draws:
    """One batch's exploration randomness: ``(n, width)`` uniforms, a row per request, in
    request order: with exploration on, ``k`` slot flags and ``k`` item picks; with score noise
    on, ``NOISE_RANK`` more."""

    uniforms: np.ndarray
    k: int
    explore_columns: int  # 2 k with exploration on, else 0

    def noise(self) -> np.ndarray:
        """``(n, NOISE_RANK)`` values of mean 0 and variance 1 (uniforms, centred and scaled:
        summed over ``NOISE_RANK`` item directions they are close to normal, and cheaper)."""
        centred = self.uniforms[:, self.explore_columns :] - 0.5
        return (centred * np.sqrt(12.0)).astype(np.float32)


class Exploration:
    """A ranker's exploration: draws per batch, noisy low-rank scores, exploration slots.

    Holds caches only (the item directions, and per model and catalogue size the widened item
    matrix and its covariance); rebuilt from the parameters and seed like the policy.
    """

    def __init__(self, params: ExplorationParams, seed: int):
        self.explore = params.explore
        self.score_noise = params.score_noise
        self.seed = seed
        self._directions = np.zeros((NOISE_RANK, 0), np.float32)
        self._widened: list[tuple[object, int, np.ndarray, float]] = []
        self._average: tuple[object, np.ndarray] | None = None

    @property
    def active(self) -> bool:
        return self.explore > 0 or self.score_noise > 0

    def draws(self, rng: np.random.Generator, n: int, k: int) -> Draws | None:
        """This batch's uniforms: a fixed number per request, in one call (``None``: off)."""
        if not self.active:
            return None
        explore_columns = 2 * k if self.explore > 0 else 0
        width = explore_columns + (NOISE_RANK if self.score_noise > 0 else 0)
        return Draws(rng.random((n, width)), k, explore_columns)

    def perturb(
        self, scores: LowRankScores, population: np.ndarray, key: object, draws: Draws | None
    ) -> LowRankScores:
        """``scores`` plus the noise, still low-rank: the user side gains ``NOISE_RANK`` columns
        (each request's draws times ``score_noise`` times :func:`shared_spread`), the item side
        each item's fixed random unit direction, so the noise costs no extra pass over the score
        matrix. Each item's noise has mean 0 and exactly the stated sd across requests; two
        items' noises are correlated by the cosine of their random directions (about 0.3 either
        way with eight), so each request lifts another random subset of items. ``population``
        is the model's user vectors; ``key`` (the model) identifies them and ``scores.items``
        for caching."""
        if draws is None or self.score_noise <= 0:
            return scores
        items, spread = self._widen(scores.items, population, key)
        users = scores.users
        d = users.shape[1]
        widened = np.empty((users.shape[0], items.shape[0]), np.float32)
        widened[:, :d] = users
        noise = widened[:, d:]
        np.subtract(draws.uniforms[:, draws.explore_columns :], 0.5, out=noise, casting="same_kind")
        noise *= np.float32(np.sqrt(12.0) * self.score_noise * spread)  # variance 1, then scaled
        return LowRankScores(widened, items, scores.item_offset)

    def perturb_candidates(
        self,
        scores: np.ndarray,
        candidates: np.ndarray,
        items: np.ndarray,
        population: np.ndarray,
        key: object,
        draws: Draws | None,
    ) -> np.ndarray:
        """The same noise on a retrieval stage's ``(n, c)`` candidate scores (``items``: the
        model's item matrix over every live item, for the shared spread)."""
        if draws is None or self.score_noise <= 0:
            return scores
        _, spread = self._widen(items, population, key)
        normals = draws.noise() * np.float32(self.score_noise * spread)
        directions = self._directions_for(items.shape[1])
        known = np.maximum(candidates, 0)
        noisy = scores.astype(np.float32, copy=True)
        for j in range(NOISE_RANK):  # (n, c) gathers: no (n, c, rank) temporary
            noisy += normals[:, j, None] * directions[j][known]
        return noisy

    def fill(
        self, slates: np.ndarray, draws: Draws | None, requests: Requests, view: View
    ) -> np.ndarray:
        """``slates`` with each slot but the bandit's explored with chance ``explore``: it gets a
        uniformly random live item not in the slate, unless the user has ruled that item out
        (:func:`ruled_out`), and the ranker's items keep their order in the other slots, its
        last ones making room."""
        if draws is None or self.explore <= 0:
            return slates
        bandit = view.states.get("bandit")
        fixed = -1 if bandit is None else int(bandit.position)
        slates = np.ascontiguousarray(slates, np.int64)
        picks = _picks(slates, draws.uniforms, self.explore, view.catalog.n_items, fixed)
        rows, slots = np.nonzero(picks >= 0)
        if not rows.shape[0]:
            return slates
        vetoed = ruled_out(picks[rows, slots], requests.subset(rows), view)
        picks[rows[vetoed], slots[vetoed]] = -1
        return _merge(slates, picks, fixed)

    def _directions_for(self, n_items: int) -> np.ndarray:
        """``(NOISE_RANK, n_items)`` unit columns, item ``i``'s the same in every call."""
        have = self._directions.shape[1]
        if have < n_items:
            chunks = [self._directions]
            for chunk in range(have // DIRECTION_CHUNK, -(-n_items // DIRECTION_CHUNK)):
                rng = np.random.default_rng([self.seed, chunk])
                block = rng.standard_normal((NOISE_RANK, DIRECTION_CHUNK))
                chunks.append((block / np.linalg.norm(block, axis=0)).astype(np.float32))
            self._directions = np.concatenate(chunks, axis=1)
        return self._directions[:, :n_items]

    def _widen(
        self, items: np.ndarray, population: np.ndarray, key: object
    ) -> tuple[np.ndarray, float]:
        """``[items; directions]`` and :func:`shared_spread`, kept per ``key`` and catalogue size
        (the average user per ``key``)."""
        n_items = items.shape[1]
        cached = next((c for c in self._widened if c[0] is key and c[1] == n_items), None)
        if cached is None:
            widened = np.concatenate([items, self._directions_for(n_items)], dtype=np.float32)
            if self._average is None or self._average[0] is not key:
                self._average = (key, average_user(population))
            spread = float(np.std(self._average[1] @ items))
            cached = (key, n_items, np.ascontiguousarray(widened), spread)
            self._widened = [cached, *self._widened][:KEPT]  # a canary serves two models
        return cached[2], cached[3]


def shared_spread(population: np.ndarray, items: np.ndarray) -> float:
    """The sd over items of the average user's scores, ``average_user(population) @ items``: how
    much the items differ for everyone, the unit of ``score_noise``.

    In a world of shared taste this is close to each user's own score sd; where users disagree
    (half of them like what the other half dislikes) it is small, so the noise spreads the
    consensus and leaves personal preferences in place.

    >>> population = np.array([[1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    >>> items = np.array([[2.0, -2.0], [5.0, 5.0], [1.0, 3.0]])  # last row: a popularity term
    >>> shared_spread(population, items)  # the popularity term alone: users 0 and 1 cancel
    1.0
    """
    return float(np.std(average_user(population) @ items))


def average_user(population: np.ndarray) -> np.ndarray:
    """The mean of the user vectors the model has learned: users whose vectors are zero but for
    constant columns (the model never saw them) are left out."""
    varying = population.std(axis=0) > 0
    seen = np.abs(population[:, varying]).sum(axis=1) > 0
    if not seen.any():
        return population[0].astype(np.float64)
    return population[seen].mean(axis=0, dtype=np.float64)


def ruled_out(items: np.ndarray, requests: Requests, view: View) -> np.ndarray:
    """Whether each of ``items`` (one per request) is one its user has ruled out through a user
    control the layers serve: rejected in this session (``session_context``), or remembered as a
    disliked item, a blocked creator or a topic not of interest (``profile_memory``), or snoozed
    (a topic or creator hidden for a while: ``snooze``), or removed by a layer of your own
    (:class:`sim.serving.layers.base.Adjustment`). The ranker's scores demote these; an explored
    slot, which skips the scores, must not show them."""
    out = np.zeros(items.shape[0], bool)
    context = view.states.get("session_context")
    if context is not None:
        _, rejected = context.context(requests.users, requests.sessions)
        out |= (rejected == items[:, None]).any(axis=1)
    profile = view.states.get("profile_memory")
    if profile is not None:
        users, catalog = requests.users, view.catalog
        out |= (profile.items[users] == items[:, None]).any(axis=1)
        out |= (profile.creators[users] == catalog.creator[items][:, None]).any(axis=1)
        out |= profile.topics[users, catalog.topic[items].astype(np.intp)] > 0
    snooze = view.states.get("snooze")
    if snooze is not None:  # a snoozed topic or creator, until it expires
        topics, creators = snooze.hidden(requests.users, view.now)
        out |= (topics == view.catalog.topic[items]) | (creators == view.catalog.creator[items])
    for state in view.states.values():  # a layer's own removals
        adjust = getattr(state, "adjust", None)
        removed = getattr(adjust(requests, view), "removed", None) if callable(adjust) else None
        if removed is not None:
            known = items < removed.shape[0]
            out[known] |= removed[items[known]]
    return out


@njit(cache=True, nogil=True)
def _picks(
    slates: np.ndarray, uniforms: np.ndarray, explore: float, n_items: int, fixed: int
) -> np.ndarray:
    """Per row, the explored item of each slot (-1: not explored). Slot ``j`` is explored if
    ``uniforms[row, j] < explore`` (never slot ``fixed``; -1: none) and gets a uniformly random
    id outside the row's slate and its earlier picks, from ``uniforms[row, k + j]``: an index
    into the ids not yet excluded, moved up past every excluded id at or below it, as in
    ``policies.builtin.sample_distinct``."""
    n, k = slates.shape
    out = np.full((n, k), -1, np.int64)
    excluded = np.empty(2 * k, np.int64)
    for row in range(n):
        count = k
        for i in range(k):  # insertion sort: k is a slate's size
            value = slates[row, i]
            j = i
            while j > 0 and excluded[j - 1] > value:
                excluded[j] = excluded[j - 1]
                j -= 1
            excluded[j] = value
        for slot in range(k):
            free = n_items - count
            if slot == fixed or not uniforms[row, slot] < explore or free <= 0:
                continue
            pick = min(int(uniforms[row, k + slot] * free), free - 1)
            position = 0
            while position < count and excluded[position] <= pick:
                pick += 1
                position += 1
            for i in range(count, position, -1):  # insert, keeping ``excluded`` sorted
                excluded[i] = excluded[i - 1]
            excluded[position] = pick
            count += 1
            out[row, slot] = pick
    return out


@njit(cache=True, nogil=True)
def _merge(slates: np.ndarray, picks: np.ndarray, fixed: int) -> np.ndarray:
    """Per row: explored slots get their pick, slot ``fixed`` (-1: none) keeps its item, and the
    other slots get the row's remaining items in order."""
    n, k = slates.shape
    out = np.empty_like(slates)
    for row in range(n):
        following = 0  # the ranker's next item
        for slot in range(k):
            if slot == fixed:
                out[row, slot] = slates[row, slot]
            elif picks[row, slot] >= 0:
                out[row, slot] = picks[row, slot]
            else:
                if following == fixed:
                    following += 1
                out[row, slot] = slates[row, following]
                following += 1
    return out
