"""What the store-backed built-in layers share: an incremental kind whose state is a per-user
store (:class:`StoreKind`), and the rejections the stores count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.domain import EXPLICIT_NEGATIVE_KINDS, CatalogView, EventTable, Kind, TrainingData
from sim.serving.layers.base import LayerContext
from sim.serving.layers.runtime import Reads

__all__ = ["StoreKind", "StoreLayer", "REJECTIONS", "push_recent"]

#: What counts as a negative for the stores: a short dwell or any explicit negative.
REJECTIONS = (Kind.SHORT_DWELL, *EXPLICIT_NEGATIVE_KINDS)


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


class StoreLayer:
    """A built-in layer whose state is the store class itself: ``create`` wraps it in a
    :class:`StoreKind`."""

    @classmethod
    def create(cls, params: Any, context: LayerContext) -> StoreKind:
        return StoreKind(cls, params, context.n_users, context.catalog)


def push_recent(
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
