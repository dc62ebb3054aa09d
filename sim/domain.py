"""Core types shared by the engine, the world and the policies.

Only observable things live here: what a production stack would log or know about its catalog.
Ground truth (true preferences, item quality) never appears in these types; it stays inside
``users``. Arrays handed to a policy are read-only views.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache, cached_property
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Kind",
    "Scope",
    "NEGATIVE_KINDS",
    "EXPLICIT_NEGATIVE_KINDS",
    "Requests",
    "CatalogView",
    "EventTable",
    "TrainingData",
    "RefreshData",
    "View",
    "Responses",
    "World",
    "UserModel",
    "readonly",
]


class Kind(IntEnum):
    """What a user did with one impression (or, for ``ABANDON``, with the session)."""

    IMPRESSION = 0  # shown, not acted on (not examined, or looked at and ignored silently)
    CLICK = 1
    SKIP = 2  # examined and passed over
    SHORT_DWELL = 3  # clicked, left again within `behavior.short_dwell`
    DISMISS = 4
    NOT_INTERESTED = 5
    THUMBS_DOWN = 6
    BLOCK_CREATOR = 7  # "don't recommend this creator"
    ABANDON = 8  # left the session early after this request's slate (item is -1)


class Scope(IntEnum):
    """What a negative event is about, as the user stated it."""

    NONE = 0
    ITEM = 1
    TOPIC = 2
    CREATOR = 3
    SESSION = 4


NEGATIVE_KINDS = (
    Kind.SKIP,
    Kind.SHORT_DWELL,
    Kind.DISMISS,
    Kind.NOT_INTERESTED,
    Kind.THUMBS_DOWN,
    Kind.BLOCK_CREATOR,
    Kind.ABANDON,
)
EXPLICIT_NEGATIVE_KINDS = (Kind.DISMISS, Kind.NOT_INTERESTED, Kind.THUMBS_DOWN, Kind.BLOCK_CREATOR)


def is_kind(kinds: np.ndarray, wanted: Iterable[Kind]) -> np.ndarray:
    """``np.isin(kinds, wanted)`` for event kind codes, by table lookup: the stores test the few
    thousand events of every serving window, where ``np.isin``'s sort costs 10x more.

    >>> is_kind(np.array([0, 3, 6], np.int8), (Kind.SHORT_DWELL, Kind.THUMBS_DOWN))
    array([False,  True,  True])
    """
    return _kind_table(tuple(wanted))[kinds]


@cache
def _kind_table(wanted: tuple[Kind, ...]) -> np.ndarray:
    table = np.zeros(len(Kind), bool)
    table[list(wanted)] = True
    return table


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the original stays writable)."""
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class Requests:
    """A batch of recommendation requests served together.

    Attributes
    ----------
    times : (n,) float64, simulated seconds, non-decreasing
    users : (n,) int32 user ids
    sessions : (n,) int64 session ids
    k : slate size every request must receive
    """

    times: np.ndarray
    users: np.ndarray
    sessions: np.ndarray
    k: int

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def subset(self, rows: np.ndarray | slice) -> Requests:
        """The requests at ``rows`` (an index array or a slice), as a batch of their own."""
        return Requests(
            times=self.times[rows], users=self.users[rows], sessions=self.sessions[rows], k=self.k
        )


@dataclass(frozen=True)
class CatalogView:
    """Catalogue metadata a production stack knows: ids ``0 .. n_items-1`` are live.

    Topic and creator are editorial metadata; item quality and latent vectors are ground truth
    and are not here.
    """

    n_items: int
    n_topics: int
    n_creators: int
    topic: np.ndarray  # (n_items,) int16
    creator: np.ndarray  # (n_items,) int32
    #: (n_items,) float64, simulated seconds of arrival; -inf for the catalogue the run starts
    #: with (a back catalogue of unknown, old age)
    created_at: np.ndarray

    @cached_property
    def topic_one_hot(self) -> np.ndarray:
        """``(n_topics, n_items)`` float32 indicator: per-topic values times it give per-item."""
        one_hot = np.zeros((self.n_topics, self.n_items), np.float32)
        one_hot[self.topic, np.arange(self.n_items)] = 1.0
        return one_hot

    @cached_property
    def items_by_topic(self) -> list[np.ndarray]:
        """Live item ids of each topic."""
        order = np.argsort(self.topic, kind="stable")
        bounds = np.searchsorted(self.topic[order], np.arange(self.n_topics + 1))
        return [order[bounds[t] : bounds[t + 1]] for t in range(self.n_topics)]

    @cached_property
    def topic_members(self) -> np.ndarray:
        """``(n_topics, largest topic)`` live item ids of each topic, ascending, padded with -1."""
        members = self.items_by_topic
        width = max(1, *(m.shape[0] for m in members))
        table = np.full((self.n_topics, width), -1, np.int64)
        for topic, ids in enumerate(members):
            table[topic, : ids.shape[0]] = ids
        return table

    @cached_property
    def items_by_creator(self) -> tuple[np.ndarray, np.ndarray]:
        """``(order, bounds)``: creator c's items are ``order[bounds[c]:bounds[c + 1]]``."""
        order = np.argsort(self.creator, kind="stable")
        return order, np.searchsorted(self.creator[order], np.arange(self.n_creators + 1))


#: The core columns of every event, in order.
EVENT_COLUMNS = ("time", "user", "item", "position", "kind", "scope", "dwell", "session")


@dataclass(frozen=True)
class EventTable:
    """Logged events as read-only columns, ordered by time.

    ``versions`` maps a layer name to the (n,) int32 version of that layer which served the event.
    ``arrival`` is when each event reached the logs, for a run with label delays (``inf``: never,
    ``nan``: waiting for its session to end); None when every event arrived at its time.
    """

    time: np.ndarray
    user: np.ndarray
    item: np.ndarray
    position: np.ndarray
    kind: np.ndarray
    scope: np.ndarray
    dwell: np.ndarray
    session: np.ndarray
    versions: dict[str, np.ndarray] = field(default_factory=dict)
    arrival: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def slice(self, start: int, stop: int | None = None) -> EventTable:
        """Rows ``start:stop`` (views, no copy)."""
        return EventTable(
            **{name: getattr(self, name)[start:stop] for name in EVENT_COLUMNS},
            versions={layer: column[start:stop] for layer, column in self.versions.items()},
            arrival=None if self.arrival is None else self.arrival[start:stop],
        )

    def take(self, rows: np.ndarray) -> EventTable:
        """The rows at positions ``rows`` (ascending: the table stays in time order)."""
        return EventTable(
            **{name: getattr(self, name)[rows] for name in EVENT_COLUMNS},
            versions={layer: column[rows] for layer, column in self.versions.items()},
            arrival=None if self.arrival is None else self.arrival[rows],
        )

    def columns(self) -> dict[str, np.ndarray]:
        """All columns by name, version columns as ``v_<layer>``."""
        core = {name: getattr(self, name) for name in EVENT_COLUMNS}
        core.update({f"v_{layer}": column for layer, column in self.versions.items()})
        if self.arrival is not None:
            core["arrival"] = self.arrival
        return core


@dataclass(frozen=True)
class TrainingData:
    """What an update layer hands a policy: the events visible to it and the catalogue.

    ``horizon`` is the event-time horizon: every event in ``events`` has ``time < horizon``;
    ``previous`` is the model this layer serves now (``None`` before its first version), for
    policies that train incrementally. With label delays, ``unlabelled`` holds the impressions
    served in the input's span whose label had not arrived by the horizon (kind ``IMPRESSION``:
    a learner cannot tell a late click from no click), and ``events.arrival`` when each visible
    label arrived; both are None without label delays.
    """

    events: EventTable
    catalog: CatalogView
    n_users: int
    now: float
    horizon: float
    previous: Any = None
    unlabelled: EventTable | None = None


@dataclass(frozen=True)
class RefreshData:
    """What the near-line layer hands a policy's ``refresh``: the visible events, the model
    deployed when it was triggered, and the windows to summarize (``(span, weight)`` pairs)."""

    events: EventTable
    catalog: CatalogView
    n_users: int
    now: float
    horizon: float
    model: Any
    windows: tuple[tuple[float, float], ...]
    negative_weight: float


@dataclass(frozen=True)
class View:
    """What serving sees when it ranks one batch of requests.

    ``model`` is the retrain layer's state deployed for these requests (``None`` before the first
    update); ``states`` holds every layer's served state by layer name (the feature store,
    session context, profile memory, near-line embeddings, ...); ``versions`` names the version
    of each layer that produced them.
    """

    now: float
    model: Any
    states: dict[str, Any]
    catalog: CatalogView
    n_users: int
    versions: dict[str, int]
    #: The world's ground truth, for policies that declare ``oracle = True`` only (else None):
    #: ``truth.utility(users, times)`` is each user's expected utility of every live item at
    #: each request's time.
    truth: Any = None


@dataclass(frozen=True)
class Responses:
    """The world's answer to served slates (shapes ``(n, k)`` except ``abandoned``)."""

    kind: np.ndarray  # int8 Kind codes
    scope: np.ndarray  # int8 Scope codes
    dwell: np.ndarray  # float32 seconds, 0 where not clicked
    abandoned: np.ndarray  # (n,) bool: the user left the session after this slate


class World(Protocol):
    """The ground truth as the engine drives it (implemented in ``users``)."""

    @property
    def n_users(self) -> int: ...

    def catalog_view(self) -> CatalogView: ...

    def start(self, env: Any) -> None:
        """Register the world's own processes (drift, new items) with the SimPy environment."""

    def next_request_time(self) -> float: ...

    def take_requests(self, until: float) -> Any:
        """Remove and return the requests due before ``until`` (an object with ``.requests``,
        and optionally ``.last``: which requests are the last planned of their session, without
        which a label delayed until the session's end never arrives)."""

    def respond(self, batch: Any, slates: np.ndarray) -> Responses: ...


class UserModel(World, Protocol):
    """A user model: the ground truth of one run, as the engine drives it (:class:`World`) and
    as the runner reads it when the run ends. Plug-ins are constructed as ``cls(scenario,
    streams, params)`` (``params``: ``world.model.params`` validated by the class's ``Params``,
    or None); ``users.SimulatedWorld`` implements all of it and is the base to subclass.
    """

    #: Per user: the simulated time they quit, ``inf`` if they stayed.
    churned_at: np.ndarray
    #: Per intervention name: whom and what it touched (for the metrics).
    affected: dict[str, Any]

    def respond(self, batch: Any, slates: np.ndarray) -> Responses:
        """Every user's answer to the slate served to them, vectorized over the batch:
        ``(n, k)`` kinds, scopes and dwell, and who abandoned their session."""

    def items(self) -> CatalogView:
        """Every item that exists by the end of the run, live or not yet (labels events)."""

    def session_start_times(self) -> np.ndarray:
        """Start times of every session that was served at least one slate."""

    def expected_clicks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """With ``metrics.regret``: per request, its time and the expected clicks on the slate
        served and on an oracle's; None when the model does not measure them."""
