"""The ``realtime_features`` layer (layer 1): a feature store of decayed counts the frozen ranker
reads (:func:`policies.signals.signal_scores` adds them to a policy's scores)."""

from __future__ import annotations

import numpy as np

from sim.domain import EventTable, Kind, is_kind
from sim.scenario.spec import RealtimeFeatures
from sim.serving.kernels import absorb_decayed_counts
from sim.serving.layers.runtime import Reads
from sim.serving.layers.store import REJECTIONS, StoreLayer

__all__ = ["FeatureStore"]


def _decay(elapsed: np.ndarray, half_life: float) -> np.ndarray:
    return np.exp2(-np.maximum(elapsed, 0.0) / half_life)


class FeatureStore(StoreLayer):
    """Per-user, per-topic decayed counts of clicks and negatives; per-item decayed negative rate;
    per-user session counters. Values decay lazily: each row remembers when it was last updated.
    """

    name = "realtime_features"
    Params = RealtimeFeatures

    @staticmethod
    def reads_for(spec: RealtimeFeatures) -> Reads:
        """A user's clicks and rejections enter their per-topic counts. (Every impression also
        moves its item's shared negative rate, which reflects no user's own event.)"""
        return Reads(kinds=(*REJECTIONS, Kind.CLICK), on_item=True)

    def __init__(self, spec: RealtimeFeatures, n_users: int, n_topics: int):
        self.weights = spec.weights
        self.half_life = spec.half_life
        self.item_half_life = spec.item_half_life
        self._negative = np.zeros((n_users, n_topics), np.float32)
        self._positive = np.zeros((n_users, n_topics), np.float32)
        self._user_time = np.zeros(n_users)
        self._item_negative = np.zeros(0)
        self._item_shown = np.zeros(0)
        self._item_time = np.zeros(0)
        self._session = np.full(n_users, -1, np.int64)
        self._session_requests = np.zeros(n_users, np.int32)
        self._session_negatives = np.zeros(n_users, np.int32)

    def user_topics(self, users: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Decayed (negative, click) counts per topic at ``now``, each ``(n, topics)``."""
        factor = _decay(now - self._user_time[users], self.half_life).astype(np.float32)[:, None]
        return self._negative[users] * factor, self._positive[users] * factor

    def features_at(
        self, users: np.ndarray, items: np.ndarray, topics: np.ndarray, times: np.ndarray
    ) -> np.ndarray:
        """``(n, 3)``: each row's user-topic negatives, clicks and item negative rate at its time
        (before the row itself is absorbed)."""
        user_factor = _decay(times - self._user_time[users], self.half_life)
        known = items < self._item_shown.shape[0]
        rate = np.zeros(items.shape[0])
        item_rows = items[known]
        factor = _decay(times[known] - self._item_time[item_rows], self.item_half_life)
        rate[known] = (
            self._item_negative[item_rows] * factor / (self._item_shown[item_rows] * factor + 1)
        )
        return np.stack(
            [
                self._negative[users, topics] * user_factor,
                self._positive[users, topics] * user_factor,
                rate,
            ],
            axis=1,
        )

    def negative_rate_of(self, items: np.ndarray, now: float) -> np.ndarray:
        """:meth:`item_negative_rate` of the given item ids only (any shape), for a retrieval
        stage's candidates: costs their count, not the catalogue's."""
        rate = np.zeros(items.shape, np.float32)
        known = items < self._item_shown.shape[0]
        rows = items[known]
        factor = _decay(now - self._item_time[rows], self.item_half_life)
        rate[known] = self._item_negative[rows] * factor / (self._item_shown[rows] * factor + 1)
        return rate

    def item_negative_rate(self, n_items: int, now: float) -> np.ndarray:
        """Decayed negatives over decayed impressions (+1), per live item, at ``now``."""
        rate = np.zeros(n_items, np.float32)
        known = min(n_items, self._item_shown.shape[0])
        factor = _decay(now - self._item_time[:known], self.item_half_life)
        rate[:known] = (
            self._item_negative[:known] * factor / (self._item_shown[:known] * factor + 1)
        )
        return rate

    def session_counters(
        self, users: np.ndarray, sessions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Requests served and negatives so far in each request's own session."""
        same = self._session[users] == sessions
        return (
            np.where(same, self._session_requests[users], 0),
            np.where(same, self._session_negatives[users], 0),
        )

    def absorb(self, events: EventTable, topic_of: np.ndarray) -> None:
        on_item = events.item >= 0
        users, items, times = events.user[on_item], events.item[on_item], events.time[on_item]
        kinds = events.kind[on_item]
        if items.shape[0] and items.max() >= self._item_shown.shape[0]:
            size = max(int(items.max()) + 1, 2 * self._item_shown.shape[0])
            for name in ("_item_negative", "_item_shown", "_item_time"):
                grown = np.zeros(size)
                old = getattr(self, name)
                grown[: old.shape[0]] = old
                setattr(self, name, grown)
        absorb_decayed_counts(
            users,
            items,
            times,
            is_kind(kinds, REJECTIONS),
            kinds == Kind.CLICK,
            topic_of,
            float(times.max()) if times.shape[0] else 0.0,
            self._negative,
            self._positive,
            self._user_time,
            self.half_life,
            self._item_negative,
            self._item_shown,
            self._item_time,
            self.item_half_life,
        )
        self._absorb_sessions(events)

    def forget(self, events: EventTable, topic_of: np.ndarray) -> None:
        """Take absorbed ``events`` back out: each one's decayed weight as of the row's last
        update is subtracted from the user's topic count and the item's rates (exactly, up to
        rounding; never below zero). Session counters restart with the next request."""
        on_item = events.item >= 0
        users, items = events.user[on_item], events.item[on_item]
        times, kinds = events.time[on_item], events.kind[on_item]
        counted = is_kind(kinds, (*REJECTIONS, Kind.CLICK))
        weight = _decay(self._user_time[users] - times, self.half_life).astype(np.float32)
        topics = topic_of[items]
        negative = counted & (kinds != Kind.CLICK)
        np.subtract.at(self._negative, (users[negative], topics[negative]), weight[negative])
        clicks = kinds == Kind.CLICK
        np.subtract.at(self._positive, (users[clicks], topics[clicks]), weight[clicks])
        np.maximum(self._negative, 0, out=self._negative)
        np.maximum(self._positive, 0, out=self._positive)
        known = items < self._item_shown.shape[0]
        items, times, rejected = items[known], times[known], is_kind(kinds[known], REJECTIONS)
        item_weight = _decay(self._item_time[items] - times, self.item_half_life)
        np.subtract.at(self._item_shown, items, item_weight)
        np.subtract.at(self._item_negative, items[rejected], item_weight[rejected])
        np.maximum(self._item_shown, 0, out=self._item_shown)
        np.maximum(self._item_negative, 0, out=self._item_negative)

    def _absorb_sessions(self, events: EventTable) -> None:
        first_of_request = events.position == 0
        users, sessions = events.user[first_of_request], events.session[first_of_request]
        new = self._session[users] != sessions
        self._session[users[new]] = sessions[new]
        self._session_requests[users[new]] = 0
        self._session_negatives[users[new]] = 0
        np.add.at(self._session_requests, users, 1)
        rejected = is_kind(events.kind, REJECTIONS) & (events.session == self._session[events.user])
        np.add.at(self._session_negatives, events.user[rejected], 1)
