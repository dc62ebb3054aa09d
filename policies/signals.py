"""Score adjustments from the layers' served state, for any policy that scores items.

The real-time feature store, the session context and the profile memory publish per-user state;
:func:`signal_scores` turns what is served to a batch of requests into an ``(n, items)`` matrix
to add to a policy's own scores (``None`` when no such layer is on). A custom policy calls it the
same way the built-ins do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.domain import CatalogView, Requests, View
from sim.spec import FeatureWeights

__all__ = ["signal_scores"]


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
    catalog = view.catalog
    n, m = len(requests), catalog.n_items
    per_topic = np.zeros((n, catalog.n_topics), np.float32)
    item_rates: list[tuple[float, Any]] = []  # (weight, store with per-item negative rates)
    item_penalties: list[tuple[np.ndarray, float]] = []  # ((n, slots) item ids, penalty)
    creator_penalties: list[tuple[np.ndarray, float]] = []  # ((n, slots) creator ids, penalty)
    found = False

    features = view.states.get("realtime_features")
    if features is not None:
        found = True
        weights = feature_weights or features.weights
        negative, positive = features.user_topics(requests.users, view.now)
        per_topic += weights.user_topic_negative * negative
        per_topic += weights.user_topic_positive * positive
        item_rates.append((weights.item_negative_rate, features))

    online = view.states.get("online_learning")
    if online is not None:  # its own feature counts, with the weights it learned per event
        found = True
        weights = online.weights
        negative, positive = online.user_topics(requests.users, view.now)
        per_topic += weights.user_topic_negative * negative
        per_topic += weights.user_topic_positive * positive
        item_rates.append((weights.item_negative_rate, online))

    context = view.states.get("session_context")
    if context is not None:
        found = True
        topics, rejected = context.context(requests.users, requests.sessions)
        per_topic -= context.topic_demotion * topics
        item_penalties.append((rejected, context.item_demotion))

    profile = view.states.get("profile_memory")
    if profile is not None:
        found = True
        users = requests.users
        per_topic -= profile.topic_demotion * profile.topics[users]
        item_penalties.append((profile.items[users], profile.item_demotion))
        creator_penalties.append((profile.creators[users], profile.creator_demotion))

    if not found:
        return None
    if candidates is not None:
        return _on_candidates(
            candidates, view.now, per_topic, item_rates, item_penalties, creator_penalties, catalog
        )
    scores = np.matmul(per_topic, catalog.topic_one_hot, out=out)
    for weight, store in item_rates:
        scores += weight * store.item_negative_rate(m, view.now)
    rows: list[np.ndarray] = []
    items: list[np.ndarray] = []
    penalties: list[np.ndarray] = []
    for slots, penalty in item_penalties:
        _collect(rows, items, penalties, slots, penalty, m)
    for creators, penalty in creator_penalties:
        creator_rows, creator_items = _items_of_creators(creators, catalog)
        rows.append(creator_rows)
        items.append(creator_items)
        penalties.append(np.full(creator_rows.shape[0], penalty, np.float32))
    if rows:
        np.subtract.at(
            scores, (np.concatenate(rows), np.concatenate(items)), np.concatenate(penalties)
        )
    return scores


def _on_candidates(
    candidates: np.ndarray,
    now: float,
    per_topic: np.ndarray,
    item_rates: list[tuple[float, Any]],
    item_penalties: list[tuple[np.ndarray, float]],
    creator_penalties: list[tuple[np.ndarray, float]],
    catalog: CatalogView,
) -> np.ndarray:
    """The same adjustments as the dense path, for each request's candidates only."""
    known = np.maximum(candidates, 0)  # -1 (no candidate) reads item 0; its score is -inf anyway
    scores = np.take_along_axis(per_topic, catalog.topic[known].astype(np.intp), axis=1)
    for weight, store in item_rates:
        if known.size >= catalog.n_items:  # more candidate slots than items: decay each item once
            scores += weight * store.item_negative_rate(catalog.n_items, now)[known]
        else:
            scores += weight * store.negative_rate_of(known, now)
    creators = catalog.creator[known]
    for values, penalties in ((candidates, item_penalties), (creators, creator_penalties)):
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
