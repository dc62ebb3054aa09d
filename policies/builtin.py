"""Built-in policies: ``random``, ``popular`` and ``embedding``.

Each sees only logged events and catalogue metadata; none reads the world's ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.base import BasePolicy, top_k
from sim.domain import Kind, Requests, TrainingData, View
from sim.spec import Duration

__all__ = ["RandomPolicy", "PopularPolicy", "EmbeddingPolicy", "PopularModel", "EmbeddingModel"]


class RandomPolicy(BasePolicy):
    """Uniformly random distinct live items: the no-information baseline."""

    name = "random"

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        return _cold_start(self._rng, requests, view)


class PopularParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    half_life: Duration = Field(86400.0, gt=0, description="age at which a click counts half")


@dataclass(frozen=True)
class PopularModel:
    """Time-decayed click counts per item at fit time."""

    scores: np.ndarray


class PopularPolicy(BasePolicy):
    """Everyone gets the items with the most recent clicks (time-decayed); ties broken randomly."""

    name = "popular"
    Params = PopularParams

    def fit(self, data: TrainingData) -> PopularModel:
        events = data.events
        return PopularModel(
            scores=_decayed_clicks(events, data.catalog.n_items, data.now, self.params.half_life)
        )

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        if view.model is None:
            return _cold_start(self._rng, requests, view)
        learned = _fit_to(view.model.scores, view.catalog.n_items).astype(np.float32)
        best = top_k(learned[None, :], requests.k)
        return np.repeat(best, len(requests), axis=0)


class EmbeddingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dim: int = Field(16, ge=1, le=512, description="embedding dimension")
    half_life: Duration = Field(7 * 86400.0, gt=0, description="age at which an event counts half")
    click_weight: float = Field(1.0, description="interaction value of a click")
    skip_weight: float = Field(-0.05, description="interaction value of a skip")
    negative_weight: float = Field(
        -1.0, description="value of a short dwell or an explicit negative"
    )
    popularity_weight: float = Field(0.2, ge=0, description="weight of log popularity in scores")
    iterations: int = Field(4, ge=0, le=50, description="power iterations of the randomized SVD")


@dataclass(frozen=True)
class EmbeddingModel:
    """User and item embeddings factorized from the interaction matrix, plus popularity."""

    users: np.ndarray  # (n_users, dim) float32
    items: np.ndarray  # (n_items at fit, dim) float32
    popularity: np.ndarray  # (n_items at fit,) float32, log1p of decayed clicks


class EmbeddingPolicy(BasePolicy):
    """Dot product of user and item embeddings estimated from logged events.

    ``fit`` builds a time-decayed user x item matrix (clicks positive, skips slightly negative,
    explicit negatives and short dwells negative) and factorizes it with a randomized SVD
    (``torch.svd_lowrank``); items unseen at fit time score by popularity only.
    """

    name = "embedding"
    Params = EmbeddingParams

    def fit(self, data: TrainingData) -> EmbeddingModel:
        p = self.params
        events = data.events
        n_users, n_items = data.n_users, data.catalog.n_items
        on_item = events.item >= 0
        kind = events.kind[on_item]
        value = np.zeros(kind.shape[0], np.float32)
        value[kind == Kind.CLICK] = p.click_weight
        value[kind == Kind.SKIP] = p.skip_weight
        value[(kind == Kind.SHORT_DWELL) | (kind >= Kind.DISMISS)] = p.negative_weight
        decay = np.exp2(-(data.now - events.time[on_item]) / p.half_life).astype(np.float32)
        popularity = np.log1p(_decayed_clicks(events, n_items, data.now, p.half_life))
        dim = min(p.dim, n_users, n_items)
        signal = value != 0
        if not signal.any():
            zeros_u = np.zeros((n_users, p.dim), np.float32)
            return EmbeddingModel(zeros_u, np.zeros((n_items, p.dim), np.float32), popularity)
        index = torch.from_numpy(
            np.stack([events.user[on_item][signal], events.item[on_item][signal]]).astype(np.int64)
        )
        matrix = torch.sparse_coo_tensor(
            index,
            torch.from_numpy(value[signal] * decay[signal]),
            (n_users, n_items),
            check_invariants=False,  # indices are in range by construction
        ).coalesce()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            u, s, v = torch.svd_lowrank(matrix, q=dim, niter=p.iterations)
        root = s.clamp(min=0).sqrt()
        users = np.zeros((n_users, p.dim), np.float32)
        items = np.zeros((n_items, p.dim), np.float32)
        users[:, :dim] = (u * root).numpy()
        items[:, :dim] = (v * root).numpy()
        return EmbeddingModel(users=users, items=items, popularity=popularity.astype(np.float32))

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        model = view.model
        if model is None:
            return _cold_start(self._rng, requests, view)
        n_items = view.catalog.n_items
        fitted = min(model.items.shape[0], n_items)
        prior = self.params.popularity_weight * _fit_to(model.popularity, n_items)
        scores = np.broadcast_to(prior, (len(requests), n_items)).copy()
        scores[:, :fitted] += model.users[requests.users] @ model.items[:fitted].T
        return top_k(scores, requests.k)


def _cold_start(rng: np.random.Generator, requests: Requests, view: View) -> np.ndarray:
    """Distinct uniformly random live items per request (what a policy with no model shows).

    One row of keys per request, drawn in request order, so that how requests are grouped into
    serving windows never changes which items are drawn.
    """
    keys = rng.random((len(requests), view.catalog.n_items), dtype=np.float32)
    return top_k(keys, requests.k)


def _decayed_clicks(events, n_items: int, now: float, half_life: float) -> np.ndarray:
    clicks = events.kind == Kind.CLICK
    weights = np.exp2(-(now - events.time[clicks]) / half_life)
    return np.bincount(events.item[clicks], weights=weights, minlength=n_items)[:n_items]


def _fit_to(values: np.ndarray, n_items: int) -> np.ndarray:
    """``values`` cut or zero-padded to the live catalogue (new items have no history)."""
    if values.shape[0] >= n_items:
        return values[:n_items]
    return np.concatenate([values, np.zeros(n_items - values.shape[0], values.dtype)])
