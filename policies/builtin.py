"""Built-in policies: ``random``, ``popular`` and ``embedding``.

Each sees only logged events and catalogue metadata; none reads the world's ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.bandit import explore
from policies.base import BasePolicy, scratch_matrix, top_k
from policies.exploration import Exploration, ExplorationParams
from policies.kernels import uniform_fill
from policies.retrieval import CandidateIndex, RecallMeter, RetrievalParams
from policies.signals import LowRankScores, low_rank_passes, signal_scores
from sim.domain import (
    EXPLICIT_NEGATIVE_KINDS,
    EventTable,
    Kind,
    RefreshData,
    Requests,
    TrainingData,
    View,
)
from sim.scenario.spec import Duration, FeatureWeights

__all__ = [
    "RandomPolicy",
    "PopularPolicy",
    "EmbeddingPolicy",
    "PopularModel",
    "EmbeddingModel",
    "NearlineEmbeddings",
]


class RandomPolicy(BasePolicy):
    """Uniformly random distinct live items: the no-information baseline."""

    name = "random"

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        if any(state is not None for state in view.states.values()):
            # random scores, adjusted by the layers and with the bandit's slot, like any policy
            return serve_scores(self._rng, None, requests, view)
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
    params: PopularParams

    def fit(self, data: TrainingData) -> PopularModel:
        events = data.events
        return PopularModel(
            scores=_decayed_clicks(events, data.catalog.n_items, data.now, self.params.half_life)
        )

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        if view.model is None:
            return serve_scores(self._rng, None, requests, view)
        learned = _fit_to(view.model.scores, view.catalog.n_items).astype(np.float32)
        learned /= max(float(learned.max()), 1e-12)  # 1 for the most clicked item
        if not _personalized(view):  # everyone gets the same slate
            return np.repeat(top_k(learned[None, :], requests.k), len(requests), axis=0)
        scores = np.broadcast_to(learned, (len(requests), learned.shape[0]))
        return serve_scores(self._rng, scores, requests, view)


class EmbeddingParams(ExplorationParams):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dim: int = Field(16, ge=1, le=512, description="embedding dimension")
    half_life: Duration = Field(7 * 86400.0, gt=0, description="age at which an event counts half")
    click_weight: float = Field(1.0, description="interaction value of a click")
    skip_weight: float = Field(
        0.0, description="interaction value of a skip (0: skips are left out, 5x faster fits)"
    )
    negative_weight: float = Field(
        -1.0, description="value of a short dwell or an explicit negative"
    )
    popularity_weight: float = Field(
        0.2, ge=0, description="weight of the item's log click-rate lift in scores"
    )
    prior_impressions: float = Field(
        20.0, gt=0, description="pseudo-impressions at the average click rate per item"
    )
    iterations: int = Field(4, ge=0, le=50, description="power iterations of the randomized SVD")
    retrieval: RetrievalParams | None = Field(
        None,
        description="rank candidates from a retrieval stage instead of every item (for large "
        "catalogues); see policies.retrieval",
    )


@dataclass(frozen=True)
class EmbeddingModel:
    """User and item embeddings factorized from the interaction matrix, with popularity folded in.

    ``users[u] @ items_t`` is every fitted item's score for user ``u``: the last user column is 1
    and the last item row is ``popularity_weight`` times the item's log click-rate lift (see
    :func:`click_rate_lift`), so serving is a
    single matrix product.
    """

    users: np.ndarray  # (n_users, dim + 1) float32
    items_t: np.ndarray  # (dim + 1, n_items at fit) float32, C-contiguous


@dataclass(frozen=True)
class NearlineEmbeddings:
    """User vectors refreshed near-line, valid for the model they were folded into."""

    model: EmbeddingModel
    users: np.ndarray  # (n_users, dim + 1) float32, last column 1 like EmbeddingModel.users


class EmbeddingPolicy(BasePolicy):
    """Dot product of user and item embeddings estimated from logged events.

    ``fit`` builds a time-decayed user x item matrix (clicks positive, explicit negatives and
    short dwells negative, skips optionally) and factorizes it with a randomized SVD
    (``torch.svd_lowrank``); items unseen at fit time score 0 until the next fit.
    """

    name = "embedding"
    Params = EmbeddingParams
    params: EmbeddingParams

    def __init__(self, params=None, *, seed: int = 0):
        super().__init__(params, seed=seed)
        self._padded: tuple[EmbeddingModel, int, np.ndarray] | None = None
        self._fold_in: tuple[EmbeddingModel, float, np.ndarray] | None = None  # refresh cache
        self._index: tuple[EmbeddingModel, CandidateIndex] | None = None
        retrieval = self.params.retrieval
        self._recall = RecallMeter(retrieval.recall_every if retrieval else 0)
        self._index_seconds = 0.0  # building retrieval indexes, one per model version
        self._scored = [0, 0]  # requests scored by a model, (request, item) scores computed
        self._exploration = Exploration(self.params, self.seed)

    def fit(self, data: TrainingData) -> EmbeddingModel:
        p = self.params
        events = data.events
        n_users, n_items = data.n_users, data.catalog.n_items
        value_of_kind = np.zeros(len(Kind), np.float32)
        value_of_kind[Kind.CLICK] = p.click_weight
        value_of_kind[Kind.SKIP] = p.skip_weight
        value_of_kind[[Kind.SHORT_DWELL, *EXPLICIT_NEGATIVE_KINDS]] = p.negative_weight
        dim = min(p.dim, n_users, n_items)
        users = np.zeros((n_users, p.dim + 1), np.float32)
        users[:, -1] = 1.0
        items_t = np.zeros((p.dim + 1, n_items), np.float32)
        items_t[-1] = p.popularity_weight * click_rate_lift(
            events, n_items, data.now, p.half_life, p.prior_impressions
        )
        matrix = _interactions(events, value_of_kind, data.now, p.half_life, (n_users, n_items))
        if matrix is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                u, s, v = torch.svd_lowrank(matrix, q=dim, niter=p.iterations)
            root = s.clamp(min=0).sqrt()
            users[:, :dim] = (u * root).numpy()
            items_t[:dim] = (v * root).numpy().T
        return EmbeddingModel(users=users, items_t=np.ascontiguousarray(items_t))

    def refresh(self, data: RefreshData) -> NearlineEmbeddings | None:
        """Near-line user embeddings folded into the deployed model's space from recent events.

        For each window, a user's clicks (+1) and rejections (``-negative_weight``) are summed
        over the model's item vectors and divided by the singular values (the SVD fold-in), so
        the result is on the scale of the model's own user vectors; windows add with weights.

        Incremental: per-user sums are kept between refreshes of the same model; a refresh adds
        the events that became visible and removes those that aged out of a window, so its cost
        follows the events that changed, not the length of the windows.
        """
        model = data.model
        if model is None:
            return None
        item_vectors = model.items_t[:-1].T  # (items at fit, dim), item factors V * sqrt(S)
        fold = _FoldIn(data, item_vectors)
        cached = self._fold_in
        if cached is None or cached[0] is not model or data.horizon < cached[1]:
            sums = np.zeros((data.n_users, item_vectors.shape[1]), np.float32)
            fold.add(sums, -np.inf, data.horizon)
        else:
            sums, since = cached[2], cached[1]
            fold.add(sums, since, data.horizon)  # newly visible events
            for span, weight in data.windows:  # events that left this window since
                fold.add(sums, since - span, min(data.horizon - span, since), -weight)
        self._fold_in = (model, data.horizon, sums)
        strength = np.maximum((item_vectors**2).sum(axis=0), 1e-12)  # singular values
        users = np.ones((data.n_users, self.params.dim + 1), np.float32)
        # straight into float32: a float64 quotient would be 128 MB a million users per refresh
        np.divide(sums, strength, out=users[:, :-1], casting="same_kind")
        return NearlineEmbeddings(model=model, users=users)

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        model = view.model
        if model is None and self.params.retrieval is not None and _personalized(view):
            return self._random_candidates(requests, view)
        if model is None:
            return serve_scores(self._rng, None, requests, view)
        nearline = view.states.get("nearline_embeddings")
        # Near-line vectors live in the space of the model they were folded into.
        users = nearline.users if nearline is not None and nearline.model is model else model.users
        vectors = users[requests.users]
        n_items = view.catalog.n_items
        self._scored[0] += len(requests)
        exploration = self._exploration
        draws = exploration.draws(self._rng, len(requests), requests.k)
        if self.params.retrieval is None:
            self._scored[1] += len(requests) * n_items
            low_rank = LowRankScores(vectors, self._items_t(model, n_items))
            low_rank = exploration.perturb(low_rank, model.users, model, draws)
            slates = serve_scores(self._rng, low_rank, requests, view)
            return exploration.fill(slates, draws, requests, view)
        candidates, scores = self._candidates(model, view).search(vectors, n_items, requests.k)
        self._scored[1] += scores.size
        if self._recall.due():
            started = time.perf_counter()
            sample = slice(0, self.params.retrieval.recall_requests)
            exact = vectors[sample] @ self._items_t(model, n_items)
            self._recall.add(exact, scores[sample], requests.k)
            self._recall.seconds += time.perf_counter() - started
        items = self._items_t(model, n_items)
        scores = exploration.perturb_candidates(
            scores, candidates, items, model.users, model, draws
        )
        slates = serve_scores(self._rng, scores, requests, view, candidates=candidates)
        return exploration.fill(slates, draws, requests, view)

    def _random_candidates(self, requests: Requests, view: View) -> np.ndarray:
        """Before the first model, with layers that adjust scores: random scores over a random
        run of consecutive item ids per request (ids carry no order), not over every item."""
        retrieval = self.params.retrieval
        assert retrieval is not None
        n, n_items = len(requests), view.catalog.n_items
        count = min(n_items, retrieval.neighbours + retrieval.popular + retrieval.recent)
        start = self._rng.integers(0, n_items, size=(n, 1))
        candidates = (start + np.arange(count)) % n_items
        scores = self._rng.random((n, count), dtype=np.float32)
        return serve_scores(self._rng, scores, requests, view, candidates=candidates)

    def _candidates(self, model: EmbeddingModel, view: View) -> CandidateIndex:
        """The retrieval index of ``model``, built the first time the model serves."""
        retrieval = self.params.retrieval
        assert retrieval is not None
        if self._index is None or self._index[0] is not model:
            started = time.perf_counter()
            fitted = model.items_t.shape[1]
            index = CandidateIndex(
                model.items_t, view.catalog.topic[:fitted], model.items_t[-1], retrieval, self.seed
            )
            self._index = (model, index)
            self._index_seconds += time.perf_counter() - started
        return self._index[1]

    def diagnostics(self) -> dict[str, Any]:
        """What the run's summary reports about this policy: the shape of its scoring (for
        ``recloop run --profile``) and, with a retrieval stage, its recall."""
        requests, scores = self._scored
        report: dict[str, Any] = {
            "vector_width": self.params.dim + 1,
            "scores_per_pass": PASS_FLOATS,
            "model_scored_requests": requests,
        }
        if requests:
            report["items_scored_per_request"] = round(scores / requests, 1)
        if self.params.retrieval is not None:
            report["retrieval"] = self._recall.summary() | {
                "index_build_wall_seconds": round(self._index_seconds, 3)
            }
        return report

    def _items_t(self, model: EmbeddingModel, n_items: int) -> np.ndarray:
        """The model's item matrix, zero-padded for items that arrived after the fit (cached)."""
        fitted = model.items_t.shape[1]
        if n_items <= fitted:
            return model.items_t[:, :n_items]
        cached = self._padded
        if cached is None or cached[0] is not model or cached[1] != n_items:
            padded = np.zeros((model.items_t.shape[0], n_items), np.float32)
            padded[:, :fitted] = model.items_t
            self._padded = cached = (model, n_items, padded)
        return cached[2]


#: Events per step of a retrain's or refresh's per-event passes: bounds their temporaries (a day
#: of a million users logs about 125M impressions; a float64 copy of them all is 1 GB).
CHUNK_EVENTS = 4_000_000


class _FoldIn:
    """Adds events' contributions ``value * item_vector`` to per-user sums, by time range."""

    def __init__(self, data: RefreshData, item_vectors: np.ndarray):
        self.data = data
        self.item_vectors = torch.from_numpy(np.ascontiguousarray(item_vectors))
        self.value_of_kind = np.zeros(len(Kind), np.float32)
        self.value_of_kind[Kind.CLICK] = 1.0
        self.value_of_kind[[Kind.SHORT_DWELL, *EXPLICIT_NEGATIVE_KINDS]] = -data.negative_weight

    def add(self, sums: np.ndarray, since: float, until: float, weight: float | None = None):
        """Add events with ``since <= time < until``, each with ``weight``, or (``None``) with
        the summed weight of every window it is in at the horizon.

        ``CHUNK_EVENTS`` at a time, in order (so the sums are the same as in one pass): the
        per-event item vectors of a week of 100,000 users are GBs in one pass. The sums are
        float32, half the memory of float64 (64 MB a million users at 16 dimensions); an
        incremental refresh stays within 1e-5 of a full one (test), and every new model starts
        them afresh."""
        if until <= since:
            return
        lo, hi = np.searchsorted(self.data.events.time, [since, until], side="left")
        for start in range(lo, hi, CHUNK_EVENTS):
            self._add_events(sums, start, min(start + CHUNK_EVENTS, hi), weight)

    def _add_events(self, sums: np.ndarray, lo: int, hi: int, weight: float | None) -> None:
        events, data = self.data.events, self.data
        value = self.value_of_kind[events.kind[lo:hi]]
        rows = lo + np.flatnonzero((value != 0) & (events.item[lo:hi] < self.item_vectors.shape[0]))
        if weight is None:
            age = data.horizon - events.time[rows]
            coefficient = np.zeros(rows.shape[0], np.float32)
            for span, window_weight in data.windows:
                coefficient += np.float32(window_weight) * (age <= span)
        else:
            coefficient = np.full(rows.shape[0], weight, np.float32)
        contribution = torch.from_numpy(value[rows - lo] * coefficient)[:, None]
        vectors = self.item_vectors[torch.from_numpy(events.item[rows])]
        total = torch.from_numpy(sums)
        total.index_add_(
            0, torch.from_numpy(events.user[rows].astype(np.int64)), contribution * vectors
        )


def serve_scores(
    rng: np.random.Generator,
    scores: np.ndarray | LowRankScores | None,
    requests: Requests,
    view: View,
    feature_weights: FeatureWeights | None = None,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Slates from a policy's ``(n, items)`` scores (``None``: no model yet), after the layers'
    score adjustments (real-time features with ``feature_weights`` if a retrain learned them)
    and the bandit's exploration slot. A writeable ``scores`` is adjusted in place; scores given
    as :class:`LowRankScores` are multiplied out together with the adjustments.

    With ``candidates`` (``(n, c)`` item ids per request from a retrieval stage, ``-1`` for none
    and scored ``-inf``), ``scores`` are ``(n, c)``, column for column.
    """
    n, n_items = len(requests), view.catalog.n_items
    if isinstance(scores, LowRankScores):
        if candidates is not None:
            raise ValueError("scores of retrieved candidates are dense (n, c), not low-rank")
        passes = low_rank_passes(
            scores, requests, view, feature_weights, max(1, PASS_FLOATS // n_items)
        )
        slates = [explore(product, requests.subset(rows), view) for rows, product in passes]
        return slates[0] if len(slates) == 1 else np.concatenate(slates)
    out = None if candidates is not None else scratch_matrix("adjustments", n, n_items)
    adjustments = signal_scores(requests, view, feature_weights, candidates, out=out)
    if scores is not None:
        served = scores
    elif adjustments is None and view.states.get("bandit") is None:
        return _cold_start(rng, requests, view)
    else:
        served = scratch_matrix("scores", n, n_items)
        uniform_fill(served, int(rng.integers(0, 2**63)))  # random scores, one seed per batch
    if adjustments is not None:
        if served.flags.writeable:
            served += adjustments
        else:
            served = served + adjustments
    return explore(served, requests, view, candidates)


#: Scores multiplied out from :class:`LowRankScores` per pass at most (4 MiB of float32): a
#: larger window is served in equal passes of consecutive requests, each read back from cache by
#: the selection steps (see :func:`policies.signals.low_rank_passes`); the scratch matrix does not
#: grow with the population either.
PASS_FLOATS = 2**20


#: Layers whose served state changes a policy's scores per request.
PERSONAL_LAYERS = (
    "realtime_features",
    "session_context",
    "profile_memory",
    "bandit",
    "online_learning",
)


def _personalized(view: View) -> bool:
    """Whether any layer state makes scores differ between requests."""
    states = view.states
    return any(states.get(name) is not None for name in PERSONAL_LAYERS)


def _cold_start(rng: np.random.Generator, requests: Requests, view: View) -> np.ndarray:
    """Distinct uniformly random live items per request (what a policy with no model shows).

    Draws exactly ``k`` uniforms per request, in request order, so that how requests are grouped
    into serving windows never changes which items are drawn.
    """
    uniforms = rng.random((len(requests), requests.k))
    return sample_distinct(uniforms, view.catalog.n_items)


def sample_distinct(uniforms: np.ndarray, n_items: int) -> np.ndarray:
    """Map ``(n, k)`` uniforms to ``k`` distinct ids per row, uniformly without replacement.

    The j-th pick is uniform over the ``n_items - j`` ids not yet picked: an index into that
    range, moved up past every earlier pick at or below it (in ascending order). Costs
    ``O(n k^2)`` instead of scoring every item.

    >>> sample_distinct(np.array([[0.0, 0.0, 0.0]]), 5)
    array([[0, 1, 2]])
    """
    n, k = uniforms.shape
    picks = np.empty((n, k), np.int64)
    for j in range(k):
        pick = np.floor(uniforms[:, j] * (n_items - j)).astype(np.int64)
        for earlier in np.sort(picks[:, :j], axis=1).T:
            pick += earlier <= pick
        picks[:, j] = pick
    return picks


def click_rate_lift(
    events: EventTable, n_items: int, now: float, half_life: float, prior: float
) -> np.ndarray:
    """Per item, log of its smoothed click rate over the average one (0 for unseen items).

    Clicks per impression, not clicks: raw click counts measure what the ranker chose to show as
    much as what users like, and with frequent retrains that exposure feeds back on itself
    until a few early winners are locked in. Rates are shrunk towards the average with
    ``prior`` pseudo-impressions, and both counts are time-decayed.
    """
    impressions = _decayed_counts(events, n_items, now, half_life, None)
    clicks = _decayed_clicks(events, n_items, now, half_life)
    total = impressions.sum()
    if total <= 0:
        return np.zeros(n_items, np.float32)
    average = max(clicks.sum() / total, 1e-6)
    rate = (clicks + prior * average) / (impressions + prior)
    return np.log(rate / average).astype(np.float32)


def _decayed_clicks(events, n_items: int, now: float, half_life: float) -> np.ndarray:
    return _decayed_counts(events, n_items, now, half_life, Kind.CLICK)


def _interactions(
    events: EventTable,
    value_of_kind: np.ndarray,
    now: float,
    half_life: float,
    shape: tuple[int, int],
) -> torch.Tensor | None:
    """The sparse ``(users, items)`` sum of each event's kind value, time-decayed (``None`` if
    no event has a value), built ``CHUNK_EVENTS`` at a time: each chunk's repeated pairs are
    summed before the next chunk is read."""
    parts = []
    for start in range(0, len(events), CHUNK_EVENTS):
        part = slice(start, start + CHUNK_EVENTS)
        value = value_of_kind[events.kind[part]]
        rows = np.flatnonzero(value)  # abandon rows (item -1) have value 0
        if not rows.shape[0]:
            continue
        decay = np.exp2(-(now - events.time[part][rows]) / half_life).astype(np.float32)
        pairs = np.stack([events.user[part][rows], events.item[part][rows]]).astype(np.int64)
        parts.append(_sparse(torch.from_numpy(pairs), torch.from_numpy(value[rows] * decay), shape))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    indices = torch.cat([matrix.indices() for matrix in parts], dim=1)
    return _sparse(indices, torch.cat([matrix.values() for matrix in parts]), shape)


def _sparse(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A coalesced COO matrix (indices are in range by construction: not checked)."""
    return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()


def _decayed_counts(
    events: EventTable, n_items: int, now: float, half_life: float, kind: Kind | None
) -> np.ndarray:
    """Per item, time-decayed count of its events of ``kind`` (``None``: its impressions)."""
    counts = np.zeros(n_items)
    for start in range(0, len(events), CHUNK_EVENTS):
        part = slice(start, start + CHUNK_EVENTS)
        items = events.item[part]
        wanted = items >= 0 if kind is None else events.kind[part] == kind
        weights = np.exp2(-(now - events.time[part][wanted]) / half_life)
        counts += np.bincount(items[wanted], weights=weights, minlength=n_items)[:n_items]
    return counts


def _fit_to(values: np.ndarray, n_items: int) -> np.ndarray:
    """``values`` cut or zero-padded to the live catalogue (new items have no history)."""
    if values.shape[0] >= n_items:
        return values[:n_items]
    return np.concatenate([values, np.zeros(n_items - values.shape[0], values.dtype)])
