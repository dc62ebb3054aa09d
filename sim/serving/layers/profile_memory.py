"""The ``profile_memory`` layer: a stored cross-session profile of explicit dislikes, refreshed
on its trigger and applied from each user's next session on (as Rufus or ChatGPT memory)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.domain import (
    EXPLICIT_NEGATIVE_KINDS,
    CatalogView,
    EventTable,
    Requests,
    Scope,
    TrainingData,
)
from sim.scenario.spec import ProfileMemory
from sim.serving.layers.base import LayerContext
from sim.serving.layers.runtime import Effect, Reads, changed_rows
from sim.serving.layers.store import push_recent

__all__ = ["ProfileSnapshot", "ActiveProfiles", "ProfileMemoryKind"]


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

    name = "profile_memory"
    Params = ProfileMemory
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

    @classmethod
    def create(cls, params: ProfileMemory, context: LayerContext) -> ProfileMemoryKind:
        return cls(params, context.n_users, context.catalog)

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
        push_recent(recent_items, np.zeros(self.n_users, np.int64), users[on_item], items[on_item])
        recent_creators = np.full((self.n_users, slots), -1, np.int32)
        on_creator = scope == Scope.CREATOR
        push_recent(
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
