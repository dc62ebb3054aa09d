"""A retrieval stage: a few hundred candidates per request instead of the whole catalogue.

Scoring every item for every request costs ``O(items)`` per request. A production stack first
generates candidates and ranks only those. :class:`CandidateIndex` does so for a factorization
model (``users @ items_t``) from three disjoint sources:

- **embedding neighbours**: the items with the largest inner product with the user's vector, from
  a FAISS inverted-file index (``IndexIVFFlat``, k-means lists; exact ``IndexFlatIP`` for small
  catalogues), searching ``nprobe`` lists per request;
- **shared pools**, added to every request: the model's ``popular`` most popular items, and each
  topic's ``per_topic`` most popular (so exploration by topic always has an item to place);
- **recent items** the model has not seen (it scores them 0, as it does in exhaustive scoring).

Candidates come with the model's exact scores; the layers' adjustments and the top-k then run on
``(n, candidates)`` instead of ``(n, items)``. What retrieval loses is measured, not assumed:
:class:`RecallMeter` compares, on a sample of requests, the model's top-k over the candidates with
its top-k over every item.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.base import top_k

__all__ = ["RetrievalParams", "CandidateIndex", "RecallMeter"]

#: Below this many indexed items an exact flat index is as fast as an inverted file.
EXACT_BELOW = 2_000


class RetrievalParams(BaseModel):
    """The retrieval stage of a factorization policy (``params.retrieval``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    neighbours: int = Field(
        200, ge=1, le=10_000, description="embedding neighbours per request from the ANN index"
    )
    popular: int = Field(
        50, ge=0, le=10_000, description="the model's most popular items, candidates for everyone"
    )
    per_topic: int = Field(
        3, ge=0, le=1_000, description="each topic's most popular items, candidates for everyone"
    )
    recent: int = Field(
        50, ge=0, le=10_000, description="newest items the model has not seen yet, for everyone"
    )
    index: Literal["ivf", "exact"] = Field(
        "ivf",
        description="ivf: FAISS inverted file (sublinear in the catalogue; for 100k+ items); "
        "exact: the true top neighbours by one matrix product (faster below ~50k items)",
    )
    nprobe: int = Field(4, ge=1, le=100_000, description="inverted lists searched per request")
    recall_every: int = Field(
        20, ge=0, description="measure recall on one batch in this many (0: never)"
    )
    recall_requests: int = Field(
        8, ge=1, description="requests of such a batch scored against every item for recall"
    )


class CandidateIndex:
    """Candidates for one model version: built once when the version is first served.

    ``items_t`` is the model's ``(dim, fitted items)`` item matrix (scores are ``user @ items_t``),
    ``topic`` the fitted items' topics, ``popularity`` what ranks the shared pools.
    """

    def __init__(
        self,
        items_t: np.ndarray,
        topic: np.ndarray,
        popularity: np.ndarray,
        params: RetrievalParams,
        seed: int = 0,
    ):
        self.params = params
        self.items_t = items_t
        self.fitted = items_t.shape[1]
        order = np.argsort(-popularity, kind="stable")
        shared = [order[: params.popular]]
        if params.per_topic:  # items grouped by topic, by popularity within each
            ranked = order[np.argsort(topic[order], kind="stable")]
            starts = np.searchsorted(topic[ranked], np.unique(topic))
            sizes = np.diff(np.append(starts, self.fitted))
            rank_in_topic = np.arange(self.fitted) - np.repeat(starts, sizes)
            shared.append(ranked[rank_in_topic < params.per_topic])
        self.shared = np.unique(np.concatenate(shared)).astype(np.int64)
        self.shared_t = np.ascontiguousarray(items_t[:, self.shared])
        rest = np.ones(self.fitted, bool)
        rest[self.shared] = False
        self.indexed = np.flatnonzero(rest)
        self.index: Any = None  # FAISS index, or None for exact search over ``indexed_t``
        if params.index == "exact":
            self.indexed_t = np.ascontiguousarray(items_t[:, self.indexed])
        else:
            self.index = self._build(np.ascontiguousarray(items_t[:, self.indexed].T), seed)

    def _build(self, vectors: np.ndarray, seed: int) -> Any:
        count, dim = vectors.shape
        index: Any
        if count < EXACT_BELOW:
            index = faiss.IndexFlatIP(dim)
        else:
            # 2 sqrt(n) lists: at 100k items a 0.35 s build per model version (4 sqrt(n): 1.2 s)
            lists = max(1, int(2 * math.sqrt(count)))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed % 2**31
            index.cp.min_points_per_centroid = 1  # small lists are fine; silences FAISS warnings
            # k-means on a sample of 64 items per list, 10 iterations: ~25 s -> ~3 s at 1M items
            index.cp.max_points_per_centroid = 64
            index.cp.niter = 10
            index.train(vectors)
            index.nprobe = min(self.params.nprobe, lists)
            self._quantizer = quantizer  # the IVF index keeps a pointer, not a reference
        if count:
            index.add(vectors)
        return index

    def search(
        self, users: np.ndarray, n_items: int, at_least: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(candidates, scores)``, both ``(n, c)``: item ids (``-1``: none found, scored
        ``-inf``) and the model's score of each, for user vectors ``(n, dim)``; every row has at
        least ``at_least`` items when the catalogue does (a slate's worth)."""
        n = users.shape[0]
        parts, scores = [], []
        wanted = min(self.params.neighbours, self.indexed.shape[0])
        if wanted and self.index is None:
            every = users @ self.indexed_t
            found = top_k(every, wanted)
            parts.append(self.indexed[found])
            scores.append(np.take_along_axis(every, found, axis=1))
        elif wanted:
            found_scores, found = self.index.search(np.ascontiguousarray(users), wanted)
            shared = self.shared.shape[0] + max(
                0, n_items - max(self.fitted, n_items - self.params.recent)
            )
            short = np.flatnonzero((found >= 0).sum(axis=1) + shared < at_least)
            if short.shape[0]:  # too few neighbours in the probed lists: search them all
                every = faiss.SearchParametersIVF()
                every.nprobe = self.index.nlist
                again = self.index.search(np.ascontiguousarray(users[short]), wanted, params=every)
                found_scores[short], found[short] = again
            parts.append(np.where(found >= 0, self.indexed[np.maximum(found, 0)], -1))
            scores.append(np.where(found >= 0, found_scores, -np.inf).astype(np.float32))
        if self.shared.shape[0]:
            parts.append(np.broadcast_to(self.shared, (n, self.shared.shape[0])))
            scores.append(users @ self.shared_t)
        recent = np.arange(max(self.fitted, n_items - self.params.recent), n_items)
        if recent.shape[0]:  # unseen by the model: zero vectors, score 0 as when scoring all
            parts.append(np.broadcast_to(recent, (n, recent.shape[0])))
            scores.append(np.zeros((n, recent.shape[0]), np.float32))
        return np.concatenate(parts, axis=1), np.concatenate(scores, axis=1)


class RecallMeter:
    """Recall@k of retrieval against exhaustive scoring, on a sample of batches.

    Recall of a request is the share of the model's exact top-k (over every live item) that is
    among the candidates' top-k; ties at the k-th score count as found.
    """

    def __init__(self, every: int):
        self.every = every
        self.batches = 0
        self.requests = 0
        self.found = 0.0
        self.seconds = 0.0  # wall time spent measuring (not serving)

    def due(self) -> bool:
        self.batches += 1
        return self.every > 0 and self.batches % self.every == 1 % self.every

    def add(self, exact_scores: np.ndarray, candidate_scores: np.ndarray, k: int) -> None:
        """Count one batch: ``exact_scores`` over every item, ``candidate_scores`` over the
        candidates (model scores only, before any layer's adjustment)."""
        k = min(k, exact_scores.shape[1], candidate_scores.shape[1])
        best = np.take_along_axis(exact_scores, top_k(exact_scores, k), axis=1)
        kth = best[:, -1:]
        retrieved = np.take_along_axis(candidate_scores, top_k(candidate_scores, k), axis=1)
        # A retrieved item at or above the exact k-th score is one of the exact top-k (or tied);
        # the tolerance absorbs FAISS's and numpy's different float32 summation orders.
        at_least = retrieved >= kth - 1e-5 * (1.0 + np.abs(kth))
        self.found += float(np.minimum(at_least.sum(axis=1), k).sum() / k)
        self.requests += exact_scores.shape[0]

    def summary(self) -> dict[str, Any]:
        if not self.requests:
            return {
                "recall_at_k": None,
                "recall_requests": 0,
                "why_missing": "no batch measured (recall_every: 0, or no model served)",
            }
        return {
            "recall_at_k": round(self.found / self.requests, 4),
            "recall_requests": self.requests,
            "recall_wall_seconds": round(self.seconds, 3),
        }
