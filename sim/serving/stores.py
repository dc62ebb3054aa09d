"""Serving-side state that layers build from logged events: the real-time feature store, the
session context and the profile memory. Only logged events and catalogue metadata go in.

Each store is vectorized over users; reads for a batch of requests are array gathers. Each says
which events it reflects (``reads``): a user's event of another kind changes nothing they are
served through it, so the layer never absorbs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.domain import (
    EXPLICIT_NEGATIVE_KINDS,
    CatalogView,
    EventTable,
    Kind,
    Requests,
    Scope,
    TrainingData,
    is_kind,
)
from sim.scenario.spec import ProfileMemory, RealtimeFeatures, SessionContext
from sim.serving.kernels import absorb_decayed_counts
from sim.serving.layers import Effect, Reads, changed_rows

__all__ = [
    "StoreKind",
    "FeatureStore",
    "SessionContextStore",
    "ProfileSnapshot",
    "ActiveProfiles",
    "ProfileMemoryKind",
    "REJECTIONS",
]

#: What counts as a negative for the stores: a short dwell or any explicit negative.
REJECTIONS = (Kind.SHORT_DWELL, *EXPLICIT_NEGATIVE_KINDS)


def _decay(elapsed: np.ndarray, half_life: float) -> np.ndarray:
    return np.exp2(-np.maximum(elapsed, 0.0) / half_life)


class StoreKind:
    """An incremental layer whose state is a per-user store built from the layer's spec, the
    number of users and topics, and which absorbs newly visible events in place.

    The store class says which events it reflects (``reads_for(spec)``), may narrow that per
    update (``reflects(events)``), and is ``shared`` when one state serves every user alike.
    """

    incremental = True

    def __init__(
        self, store: Callable[..., Any], spec: Any, n_users: int, catalog: Callable[[], CatalogView]
    ):
        self.store = store
        self.spec = spec
        self.n_users = n_users
        self.catalog = catalog
        self.reads: Reads = store.reads_for(spec)  # type: ignore[attr-defined]
        self.shared: bool = getattr(store, "shared", False)

    def initial_state(self) -> Any:
        return self.store(self.spec, self.n_users, self.catalog().n_topics)

    def absorb(self, state: Any, events: EventTable) -> None:
        state.absorb(events, self.catalog().topic)

    @property
    def forget(self) -> Callable[[Any, EventTable], None] | None:
        """What takes deleted events, absorbed earlier, out of a state: the store's own
        ``forget``; None when the store has none (it keeps what it absorbed)."""
        if not callable(getattr(self.store, "forget", None)):
            return None
        return lambda state, events: state.forget(events, self.catalog().topic)

    def reflected(self, state: Any, events: EventTable) -> np.ndarray:
        """Which of ``events`` the store will reflect once it absorbs them."""
        reflects = getattr(state, "reflects", None)
        return reflects(events) if callable(reflects) else self.reads.admits_events(events)

    def why_unchanged(self, state: Any) -> str:
        return "none of the events it read is of a kind it keeps"

    def compute(self, data: TrainingData) -> Any:  # pragma: no cover - incremental kind
        raise NotImplementedError


# --- real-time features ----------------------------------------------------------------------


class FeatureStore:
    """Per-user, per-topic decayed counts of clicks and negatives; per-item decayed negative rate;
    per-user session counters. Values decay lazily: each row remembers when it was last updated.
    """

    @staticmethod
    def reads_for(spec: Any) -> Reads:
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


# --- session context -------------------------------------------------------------------------


class SessionContextStore:
    """What each user rejected in their current session: per-topic counts and the last items."""

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
        _push_recent(self._items, self._count, users, items)


def _latest_sessions(
    users: np.ndarray, sessions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct users, each one's latest session, and which rows are of it."""
    touched, row = np.unique(users, return_inverse=True)
    latest = np.full(touched.shape[0], -1, np.int64)
    np.maximum.at(latest, row, sessions)
    return touched, latest, sessions == latest[row]


def _push_recent(
    slots: np.ndarray, count: np.ndarray, users: np.ndarray, values: np.ndarray
) -> None:
    """Append ``values`` (in time order) to each user's ring of recent values."""
    if not users.shape[0]:
        return
    order = np.argsort(users, kind="stable")
    users, values = users[order], values[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, users.shape[0]])
    rank = np.arange(users.shape[0]) - np.repeat(starts, sizes)
    width = slots.shape[1]
    last = rank >= np.repeat(sizes, sizes) - width  # only the last `width` per user survive
    position = (count[users] + rank) % width
    slots[users[last], position[last]] = values[last]
    count[users[starts]] += sizes


# --- profile memory --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileSnapshot:
    """Stated dislikes within the retention period at one refresh."""

    topics: np.ndarray  # (n_users, topics) uint16: "not interested" counts per topic
    items: np.ndarray  # (n_users, slots) int32: recent dismissed / thumbed-down items, -1 empty
    creators: np.ndarray  # (n_users, slots) int32: recently blocked creators, -1 empty


class ActiveProfiles:
    """The profile each user is being served: the snapshot live when their session started."""

    def __init__(self, spec: ProfileMemory, n_users: int, n_topics: int):
        self.item_demotion = spec.item_demotion
        self.creator_demotion = spec.creator_demotion
        self.topic_demotion = spec.topic_demotion
        self.topics = np.zeros((n_users, n_topics), np.uint16)  # as ProfileSnapshot.topics
        self.items = np.full((n_users, spec.slots), -1, np.int32)
        self.creators = np.full((n_users, spec.slots), -1, np.int32)
        self._session = np.full(n_users, -1, np.int64)
        self._version = np.zeros(n_users, np.int64)

    def activate(
        self, version: int, snapshot: ProfileSnapshot | None, requests: Requests
    ) -> tuple[ActiveProfiles, np.ndarray]:
        """Give users starting a session the latest snapshot; returns per-request versions.

        Called for every batch, before the first snapshot too, so that a profile published in
        the middle of a session waits for the user's next session.
        """
        users = requests.users
        starting = self._session[users] != requests.sessions
        new_users = users[starting]
        self._session[new_users] = requests.sessions[starting]
        self._version[new_users] = version
        if snapshot is None:
            self.topics[new_users] = 0
            self.items[new_users] = -1
            self.creators[new_users] = -1
        else:
            self.topics[new_users] = snapshot.topics[new_users]
            self.items[new_users] = snapshot.items[new_users]
            self.creators[new_users] = snapshot.creators[new_users]
        return self, self._version[users]


class ProfileMemoryKind:
    """The ``profile_memory`` layer: a snapshot of stated dislikes per refresh.

    It keeps explicit negatives about an item, a topic or a creator within its retention; a
    refresh changes the users whose stored dislikes changed (as multisets: where a ring keeps
    them does not change scores).
    """

    incremental = False
    reads = Reads(
        kinds=EXPLICIT_NEGATIVE_KINDS, on_item=True, scopes=(Scope.ITEM, Scope.TOPIC, Scope.CREATOR)
    )

    def __init__(self, spec: ProfileMemory, n_users: int, catalog: Callable[[], CatalogView]):
        self.spec = spec
        self.n_users = n_users
        self.catalog = catalog
        self.retention = spec.retention
        self.active = ActiveProfiles(spec, n_users, catalog().n_topics)

    def initial_state(self) -> None:
        return None

    def compute(self, data: TrainingData) -> ProfileSnapshot:
        events = data.events
        kept = (events.time >= data.horizon - self.spec.retention) & np.isin(
            events.kind, EXPLICIT_NEGATIVE_KINDS
        )
        users, items, scope = events.user[kept], events.item[kept], events.scope[kept]
        n_topics = data.catalog.n_topics
        topics = np.zeros((self.n_users, n_topics), np.uint16)  # far fewer than 65,535 each
        on_topic = scope == Scope.TOPIC
        np.add.at(topics, (users[on_topic], data.catalog.topic[items[on_topic]]), 1)
        slots = self.spec.slots
        recent_items = np.full((self.n_users, slots), -1, np.int32)
        on_item = scope == Scope.ITEM
        _push_recent(recent_items, np.zeros(self.n_users, np.int64), users[on_item], items[on_item])
        recent_creators = np.full((self.n_users, slots), -1, np.int32)
        on_creator = scope == Scope.CREATOR
        _push_recent(
            recent_creators,
            np.zeros(self.n_users, np.int64),
            users[on_creator],
            data.catalog.creator[items[on_creator]],
        )
        return ProfileSnapshot(topics=topics, items=recent_items, creators=recent_creators)

    def effect(self, previous: ProfileSnapshot | None, new: ProfileSnapshot) -> Effect:
        """The users whose stored dislikes differ from the snapshot serving now."""
        if previous is None:
            previous = ProfileSnapshot(
                topics=np.zeros_like(new.topics),
                items=np.full_like(new.items, -1),
                creators=np.full_like(new.creators, -1),
            )
        return changed_rows(
            [
                (new.topics, previous.topics, False),
                (new.items, previous.items, True),
                (new.creators, previous.creators, True),
            ],
            "no user's stored dislikes changed",
        )

    def absorb(self, state: Any, events: EventTable) -> None:  # pragma: no cover - batch kind
        raise NotImplementedError

    def serve(
        self, version: int, snapshot: ProfileSnapshot | None, requests: Requests
    ) -> tuple[ActiveProfiles, np.ndarray]:
        return self.active.activate(version, snapshot, requests)
