"""Score adjustments from the layers' served state, for any policy that scores items.

The real-time feature store, the session context and the profile memory publish per-user state,
and a layer of your own may publish a state with ``adjust(requests, view)`` returning a
:class:`sim.serving.layers.base.Adjustment`; :func:`signal_scores` turns what is served to a batch
of requests into an ``(n, items)`` matrix to add to a policy's own scores (``None`` when no such
layer is on). A custom policy calls it the
same way the built-ins do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.base import scratch_matrix
from sim.domain import CatalogView, Requests, View
from sim.scenario.spec import FeatureWeights

__all__ = ["signal_scores", "LowRankScores", "low_rank_passes"]


@dataclass(frozen=True)
class LowRankScores:
    """A policy's scores as the product ``users @ items`` (plus ``item_offset`` per item), not yet
    multiplied out.

    Handing scores to :func:`policies.builtin.serve_scores` in this form lets it fold the layers'
    per-topic and per-item adjustments into the same matrix product, one pass over the
    ``(requests, items)`` matrix instead of three.
    """

    users: np.ndarray  # (n, d) float32
    items: np.ndarray  # (d, live items) float32
    item_offset: np.ndarray | None = None  # (live items,)

    def subset(self, rows: slice) -> LowRankScores:
        """The scores of the requests at ``rows`` only."""
        return LowRankScores(self.users[rows], self.items, self.item_offset)


@dataclass
class _Signals:
    """What the layers' served state adds to a batch's scores, before it is laid out."""

    per_topic: np.ndarray  # (n, topics)
    item_rates: list[tuple[float, Any]]  # (weight, store with per-item negative rates)
    item_penalties: list[tuple[np.ndarray, float]]  # ((n, slots) item ids, penalty)
    creator_penalties: list[tuple[np.ndarray, float]]  # ((n, slots) creator ids, penalty)

    def subset(self, rows: slice) -> _Signals:
        """The adjustments of the requests at ``rows`` only."""
        return _Signals(
            self.per_topic[rows],
            self.item_rates,
            [(slots[rows], penalty) for slots, penalty in self.item_penalties],
            [(creators[rows], penalty) for creators, penalty in self.creator_penalties],
        )

    def item_offset(self, n_items: int, now: float) -> np.ndarray | None:
        """``(n_items,)`` float32 adjustment shared by every request, or ``None``."""
        offset = None
        for weight, store in self.item_rates:
            term = np.float32(weight) * store.item_negative_rate(n_items, now)
            offset = term if offset is None else offset + term
        return offset

    def subtract_penalties(self, scores: np.ndarray, catalog: CatalogView) -> None:
        """Demote the remembered items and creators' items in dense ``(n, items)`` scores."""
        m = catalog.n_items
        rows: list[np.ndarray] = []
        items: list[np.ndarray] = []
        penalties: list[np.ndarray] = []
        for slots, penalty in self.item_penalties:
            _collect(rows, items, penalties, slots, penalty, m)
        for creators, penalty in self.creator_penalties:
            creator_rows, creator_items = _items_of_creators(creators, catalog)
            rows.append(creator_rows)
            items.append(creator_items)
            penalties.append(np.full(creator_rows.shape[0], penalty, np.float32))
        if rows:
            np.subtract.at(
                scores, (np.concatenate(rows), np.concatenate(items)), np.concatenate(penalties)
            )


def signal_scores(
    requests: Requests,
    view: View,
    feature_weights: FeatureWeights | None = None,
    candidates: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """Additive score adjustments for every live item, or ``None`` if no layer provides any.

    The real-time features enter with ``feature_weights`` when given (weights a retrain learned),
    else with the weights configured for the layer. With ``candidates`` (``(n, c)`` item ids per
    request, ``-1`` for none, from a retrieval stage) the adjustments are ``(n, c)``, for those
    items only; otherwise ``(n, items)``, written into ``out`` if given (float32, that shape).
    """
    signals = _gather(requests, view, feature_weights)
    if signals is None:
        return None
    catalog = view.catalog
    if candidates is not None:
        return _on_candidates(candidates, view.now, signals, catalog)
    scores = np.matmul(signals.per_topic, catalog.topic_one_hot, out=out)
    offset = signals.item_offset(catalog.n_items, view.now)
    if offset is not None:
        scores += offset
    signals.subtract_penalties(scores, catalog)
    return scores


def low_rank_passes(
    low_rank: LowRankScores,
    requests: Requests,
    view: View,
    feature_weights: FeatureWeights | None,
    rows_per_pass: int,
) -> Iterator[tuple[slice, np.ndarray]]:
    """``low_rank`` multiplied out with the layers' adjustments added, as ``(rows, scores)`` for
    consecutive runs of at most ``rows_per_pass`` requests (equal runs). One matrix product per
    run: the user side widened by the per-topic adjustments and a 1, the item side by the topic
    indicator and the per-item offset. The layers' state is gathered once for the batch; each
    run's float32 ``(rows, items)`` scores are scratch storage that the next run overwrites.

    Everything that reads a score matrix (block maxima, selection, the bandit's pick) is
    memory-bound once the matrix outgrows the cache: at a million users x 10,000 items a window's
    is 60 MB. Runs of a few MB are read back from cache instead.
    """
    n = len(requests)
    signals = _gather(requests, view, feature_weights)
    offset = _combined_offset(low_rank, signals, view)
    passes = max(1, -(-n // max(rows_per_pass, 1)))
    bounds = [n * part // passes for part in range(passes + 1)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        rows = slice(start, stop)
        out = scratch_matrix("scores", stop - start, view.catalog.n_items)
        part = None if signals is None else signals.subset(rows)
        yield rows, _multiply_out(low_rank.subset(rows), part, offset, view.catalog, out)


def _combined_offset(
    low_rank: LowRankScores, signals: _Signals | None, view: View
) -> np.ndarray | None:
    """The policy's per-item offset plus the layers' (item negative rates), or ``None``."""
    offset = low_rank.item_offset
    if signals is not None:
        signal_offset = signals.item_offset(view.catalog.n_items, view.now)
        if signal_offset is not None:
            offset = signal_offset if offset is None else offset + signal_offset
    return offset


def _multiply_out(
    low_rank: LowRankScores,
    signals: _Signals | None,
    offset: np.ndarray | None,
    catalog: CatalogView,
    out: np.ndarray,
) -> np.ndarray:
    users = [low_rank.users]
    if signals is not None:
        users.append(signals.per_topic)
    if offset is not None:
        users.append(np.ones((low_rank.users.shape[0], 1), np.float32))
    items = _STACKED.items(low_rank.items, catalog, signals is not None, offset)
    np.matmul(np.concatenate(users, axis=1, dtype=np.float32), items, out=out)
    if signals is not None:
        signals.subtract_penalties(out, catalog)
    return out


class _StackedItems:
    """The item side of :func:`low_rank_passes`: ``[items; topic indicator; offset]``,
    kept per item matrix (a model's serves many batches; a canary serves two models at once) with
    the offset row rewritten per batch."""

    KEPT = 4

    def __init__(self) -> None:
        self._kept: list[tuple[np.ndarray, tuple[int, bool], np.ndarray]] = []

    def items(
        self, items: np.ndarray, catalog: CatalogView, topics: bool, offset: np.ndarray | None
    ) -> np.ndarray:
        if not topics and offset is None:
            return items
        shape = (catalog.n_items, topics)
        stacked = next((s for i, key, s in self._kept if _same(i, items) and key == shape), None)
        if stacked is None:
            parts = [items] + ([catalog.topic_one_hot] if topics else [])
            stacked = np.concatenate([*parts, np.zeros((1, catalog.n_items), np.float32)])
            self._kept = [(items, shape, stacked), *self._kept][: self.KEPT]
        if offset is None:
            return stacked[:-1]
        stacked[-1] = offset
        return stacked


_STACKED = _StackedItems()


def _same(kept: np.ndarray, items: np.ndarray) -> bool:
    """Whether ``items`` views the same memory as ``kept`` (a policy may slice its model's matrix
    anew per batch; ``kept`` holds that memory, so no other array can take its address)."""
    return (
        kept.ctypes.data == items.ctypes.data
        and kept.shape == items.shape
        and kept.strides == items.strides
    )


#: Score penalty of a snoozed topic or creator: below anything a model scores.
SNOOZED = 1e6


def _gather(
    requests: Requests, view: View, feature_weights: FeatureWeights | None
) -> _Signals | None:
    """The served layer state that adjusts this batch's scores, or ``None`` if no layer does."""
    catalog = view.catalog
    n = len(requests)
    signals = _Signals(np.zeros((n, catalog.n_topics), np.float32), [], [], [])
    per_topic = signals.per_topic
    found = False

    features = view.states.get("realtime_features")
    if features is not None:
        found = True
        weights = feature_weights or features.weights
        negative, positive = features.user_topics(requests.users, view.now)
        per_topic += weights.user_topic_negative * negative
        per_topic += weights.user_topic_positive * positive
        signals.item_rates.append((weights.item_negative_rate, features))

    online = view.states.get("online_learning")
    if online is not None:  # its own feature counts, with the weights it learned per event
        found = True
        weights = online.weights
        negative, positive = online.user_topics(requests.users, view.now)
        per_topic += weights.user_topic_negative * negative
        per_topic += weights.user_topic_positive * positive
        signals.item_rates.append((weights.item_negative_rate, online))

    context = view.states.get("session_context")
    if context is not None:
        found = True
        topics, rejected = context.context(requests.users, requests.sessions)
        per_topic -= context.topic_demotion * topics
        signals.item_penalties.append((rejected, context.item_demotion))

    profile = view.states.get("profile_memory")
    if profile is not None:
        found = True
        users = requests.users
        per_topic -= profile.topic_demotion * profile.topics[users].astype(np.float32)
        signals.item_penalties.append((profile.items[users], profile.item_demotion))
        signals.creator_penalties.append((profile.creators[users], profile.creator_demotion))

    snooze = view.states.get("snooze")
    if snooze is not None:  # a user's snoozed topic or creator: hidden until it expires
        found = True
        topics, creators = snooze.hidden(requests.users, view.now)
        rows = np.flatnonzero(topics >= 0)
        per_topic[rows, topics[rows]] -= SNOOZED
        signals.creator_penalties.append((creators[:, None], SNOOZED))

    for state in view.states.values():  # layers of your own (sim.serving.layers.base.Adjustment)
        adjust = getattr(state, "adjust", None)
        if not callable(adjust):
            continue
        adjustment = adjust(requests, view)
        if adjustment is None:
            continue
        found = True
        if adjustment.per_topic is not None:
            per_topic += adjustment.per_topic
        if adjustment.per_item is not None:
            signals.item_rates.append((1.0, _PerItem(adjustment.per_item)))
        if adjustment.removed is not None:
            removed = np.where(adjustment.removed, np.float32(-SNOOZED), np.float32(0))
            signals.item_rates.append((1.0, _PerItem(removed)))

    return signals if found else None


class _PerItem:
    """A layer's per-item adjustment, read like a store's per-item negative rate (an item
    beyond the array, newer than the adjustment, gets 0)."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, np.float32)

    def item_negative_rate(self, n_items: int, now: float) -> np.ndarray:
        out = np.zeros(n_items, np.float32)
        known = min(n_items, self.values.shape[0])
        out[:known] = self.values[:known]
        return out

    def negative_rate_of(self, items: np.ndarray, now: float) -> np.ndarray:
        if not self.values.shape[0]:
            return np.zeros(items.shape, np.float32)
        known = items < self.values.shape[0]
        return np.where(known, self.values[np.where(known, items, 0)], np.float32(0))


def _on_candidates(
    candidates: np.ndarray, now: float, signals: _Signals, catalog: CatalogView
) -> np.ndarray:
    """The same adjustments as the dense path, for each request's candidates only."""
    known = np.maximum(candidates, 0)  # -1 (no candidate) reads item 0; its score is -inf anyway
    scores = np.take_along_axis(signals.per_topic, catalog.topic[known].astype(np.intp), axis=1)
    for weight, store in signals.item_rates:
        if known.size >= catalog.n_items:  # more candidate slots than items: decay each item once
            scores += weight * store.item_negative_rate(catalog.n_items, now)[known]
        else:
            scores += weight * store.negative_rate_of(known, now)
    creators = catalog.creator[known]
    for values, penalties in (
        (candidates, signals.item_penalties),
        (creators, signals.creator_penalties),
    ):
        for wanted, penalty in penalties:
            row, slot = np.nonzero(wanted >= 0)  # remembered ids are few: compare only those
            pair, column = np.nonzero(values[row] == wanted[row, slot][:, None])
            np.subtract.at(scores, (row[pair], column), np.float32(penalty))
    return scores


def _collect(rows, items, penalties, slots: np.ndarray, penalty: float, n_items: int) -> None:
    """Queue a penalty for every (request, item) in ``slots`` (``-1`` and unknown ids skipped)."""
    row, column = np.nonzero((slots >= 0) & (slots < n_items))
    rows.append(row)
    items.append(slots[row, column].astype(np.int64))
    penalties.append(np.full(row.shape[0], penalty, np.float32))


def _items_of_creators(creators: np.ndarray, catalog: CatalogView) -> tuple[np.ndarray, np.ndarray]:
    """Every (request, live item) pair whose item is by one of the request's ``creators``."""
    order, bounds = catalog.items_by_creator
    row, column = np.nonzero(creators >= 0)
    chosen = creators[row, column]
    starts, stops = bounds[chosen], bounds[chosen + 1]
    sizes = stops - starts
    rows = np.repeat(row, sizes)
    offsets = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return rows, order[np.repeat(starts, sizes) + offsets]
