"""The ``session_context`` layer: in-session adaptation without weight updates; what the user
rejected in this session is demoted for the rest of it (an LLM recommender's prompt context)."""

from __future__ import annotations

import numpy as np

from sim.domain import EventTable, Kind, is_kind
from sim.scenario.spec import SessionContext
from sim.serving.layers.runtime import Reads
from sim.serving.layers.store import REJECTIONS, StoreLayer, push_recent

__all__ = ["SessionContextStore"]


class SessionContextStore(StoreLayer):
    """What each user rejected in their current session: per-topic counts and the last items."""

    name = "session_context"
    Params = SessionContext
    SLOTS = 16

    def __init__(self, spec: SessionContext, n_users: int, n_topics: int):
        self.item_demotion = spec.item_demotion
        self.topic_demotion = spec.topic_demotion
        self._kinds = (*REJECTIONS, Kind.SKIP) if spec.include_skips else REJECTIONS
        self._session = np.full(n_users, -1, np.int64)
        # Counts of this session's rejections per topic; uint16 (no session rejects 65,535
        # items of one topic): half the memory of float32, 38 MB a million users at 20 topics.
        self._topics = np.zeros((n_users, n_topics), np.uint16)
        self._items = np.full((n_users, self.SLOTS), -1, np.int32)
        self._count = np.zeros(n_users, np.int64)

    def context(self, users: np.ndarray, sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rejections in each request's own session: topic counts ``(n, topics)`` and item ids
        ``(n, SLOTS)`` (-1 empty); empty for a request whose session has none yet."""
        same = (self._session[users] == sessions)[:, None]
        return (
            np.where(same, self._topics[users], 0.0).astype(np.float32),
            np.where(same, self._items[users], -1),
        )

    @staticmethod
    def reads_for(spec: SessionContext) -> Reads:
        kinds = (*REJECTIONS, Kind.SKIP) if spec.include_skips else REJECTIONS
        return Reads(kinds=kinds, on_item=True)

    def reflects(self, events: EventTable) -> np.ndarray:
        """The rejections that absorbing ``events`` keeps: those of each user's latest session
        among them (an earlier session's are dropped, as that session is over)."""
        rows = np.flatnonzero(is_kind(events.kind, self._kinds) & (events.item >= 0))
        kept = np.zeros(len(events), bool)
        if rows.shape[0]:
            _, _, keep = _latest_sessions(events.user[rows], events.session[rows])
            kept[rows[keep]] = True
        return kept

    def forget(self, events: EventTable, topic_of: np.ndarray) -> None:
        """Take absorbed ``events`` back out of each user's current session's context."""
        rejected = is_kind(events.kind, self._kinds) & (events.item >= 0)
        current = rejected & (events.session == self._session[events.user])
        users, items = events.user[current], events.item[current]
        for user, item in zip(users.tolist(), items.tolist(), strict=True):
            topic = topic_of[item]
            self._topics[user, topic] = max(int(self._topics[user, topic]) - 1, 0)
            self._items[user][self._items[user] == item] = -1

    def absorb(self, events: EventTable, topic_of: np.ndarray) -> None:
        rejected = is_kind(events.kind, self._kinds) & (events.item >= 0)
        users, sessions = events.user[rejected], events.session[rejected]
        items = events.item[rejected]
        if not users.shape[0]:
            return
        # Only each user's latest session in this slice matters; a new one starts empty.
        touched, latest, keep = _latest_sessions(users, sessions)
        users, items = users[keep], items[keep]
        starts = self._session[touched] != latest
        fresh = touched[starts]
        self._session[fresh] = latest[starts]
        self._topics[fresh] = 0
        self._items[fresh] = -1
        self._count[fresh] = 0
        np.add.at(self._topics, (users, topic_of[items]), 1)
        push_recent(self._items, self._count, users, items)


def _latest_sessions(
    users: np.ndarray, sessions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct users, each one's latest session, and which rows are of it."""
    touched, row = np.unique(users, return_inverse=True)
    latest = np.full(touched.shape[0], -1, np.int64)
    np.maximum.at(latest, row, sessions)
    return touched, latest, sessions == latest[row]
