"""Score adjustments from the layers' served state, for any policy that scores items.

The real-time feature store, the session context and the profile memory publish per-user state;
:func:`signal_scores` turns what is served to a batch of requests into an ``(n, items)`` matrix
to add to a policy's own scores (``None`` when no such layer is on). A custom policy calls it the
same way the built-ins do.
"""

from __future__ import annotations

import numpy as np

from sim.domain import CatalogView, Requests, View
from sim.spec import FeatureWeights

__all__ = ["signal_scores"]


def signal_scores(
    requests: Requests, view: View, feature_weights: FeatureWeights | None = None
) -> np.ndarray | None:
    """Additive score adjustments for every live item, or ``None`` if no layer provides any.

    The real-time features enter with ``feature_weights`` when given (weights a retrain learned),
    else with the weights configured for the layer.
    """
    catalog = view.catalog
    n, m = len(requests), catalog.n_items
    per_topic = np.zeros((n, catalog.n_topics), np.float32)
    per_item = np.zeros(m, np.float32)
    rows: list[np.ndarray] = []
    items: list[np.ndarray] = []
    penalties: list[np.ndarray] = []
    found = False

    features = view.states.get("realtime_features")
    if features is not None:
        found = True
        weights = feature_weights or features.weights
        negative, positive = features.user_topics(requests.users, view.now)
        per_topic += weights.user_topic_negative * negative
        per_topic += weights.user_topic_positive * positive
        per_item += weights.item_negative_rate * features.item_negative_rate(m, view.now)

    online = view.states.get("online_learning")
    if online is not None:  # its own feature counts, with the weights it learned per event
        found = True
        weights = online.weights
        negative, positive = online.user_topics(requests.users, view.now)
        per_topic += weights.user_topic_negative * negative
        per_topic += weights.user_topic_positive * positive
        per_item += weights.item_negative_rate * online.item_negative_rate(m, view.now)

    context = view.states.get("session_context")
    if context is not None:
        found = True
        topics, rejected = context.context(requests.users, requests.sessions)
        per_topic -= context.topic_demotion * topics
        _collect(rows, items, penalties, rejected, context.item_demotion, m)

    profile = view.states.get("profile_memory")
    if profile is not None:
        found = True
        users = requests.users
        per_topic -= profile.topic_demotion * profile.topics[users]
        _collect(rows, items, penalties, profile.items[users], profile.item_demotion, m)
        creator_rows, creator_items = _items_of_creators(profile.creators[users], catalog)
        rows.append(creator_rows)
        items.append(creator_items)
        penalties.append(np.full(creator_rows.shape[0], profile.creator_demotion, np.float32))

    if not found:
        return None
    scores = per_topic @ catalog.topic_one_hot
    scores += per_item
    if rows:
        np.subtract.at(
            scores, (np.concatenate(rows), np.concatenate(items)), np.concatenate(penalties)
        )
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
