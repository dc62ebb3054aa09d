"""The simulated world: catalogue, population, arrivals and behaviour behind one object.

The engine drives it through the :class:`sim.domain.World` protocol: it takes the requests due
in a serving window, and answers the slates the stack served. Session state (abandonment) and
churn live here, as does everything true about users and items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.domain import CatalogView, Kind, Requests, Responses
from sim.errors import ScenarioError
from sim.scenario.spec import (
    CatalogBurst,
    ItemTurnsBad,
    PreferenceShift,
    Scenario,
    TopicAversion,
    TrafficSpike,
)
from sim.serving.rng import Streams
from users.arrivals import Arrivals, RequestBlock
from users.behavior import expected_clicks, freshness, respond_to_slates, utility
from users.catalog import Catalog
from users.population import Population

__all__ = ["SimulatedWorld", "WorldBatch", "Affected", "RECENTLY_SHOWN"]

#: How far back "most shown" looks (seconds).
RECENTLY_SHOWN = 3600.0


@dataclass(frozen=True)
class Affected:
    """Who or what an intervention touched: a user mask, an item mask, a topic."""

    kind: str
    at: float
    users: np.ndarray | None = None
    items: np.ndarray | None = None
    topic: int | None = None


@dataclass(frozen=True)
class WorldBatch:
    """Requests due in one window: the public part, and the world's private draws."""

    requests: Requests
    block: RequestBlock

    @property
    def last(self) -> np.ndarray:
        """Which requests are the last planned of their session (for labels that arrive when
        the session ends)."""
        return self.block.last


class SimulatedWorld:
    """Users and items drawn from distributions; clicks and negatives follow utilities.

    Users have latent preferences around topics, items latent vectors, quality and a Zipf
    popularity (``world.users``, ``world.catalog``, ``world.behavior``). The built-in user
    model, and the base of the others: it draws the catalogue, the users and their arrivals,
    and keeps sessions, abandonment and churn; :meth:`react` is what users do with the slates
    served, the one method a user model that keeps the rest overrides.
    """

    name = "parametric"
    #: The parameters ``world.model.params`` takes (a pydantic model), or None: none.
    Params: Any = None

    def __init__(self, scenario: Scenario, streams: Streams, params: Any = None):
        world = scenario.world
        self.params = params
        self.behavior = world.behavior
        self.interventions = tuple(scenario.interventions)
        self.catalog = self.build_catalog(scenario, streams.generator("catalog"))
        self.population = Population(
            world.users, self.catalog.centroids, streams.generator("users")
        )
        self.arrivals = Arrivals(
            world.users,
            self.population.sessions_per_day,
            scenario.stack.slate_size,
            scenario.end,
            streams.generator("arrivals"),
            streams.generator("responses"),
            spikes=[event for event in self.interventions if isinstance(event, TrafficSpike)],
        )
        self._intervention_rng = streams.generator("interventions")
        self._aversions: list[tuple[int, np.ndarray, float]] = []  # topic, users, strength
        #: What each intervention did, for the metrics: name -> affected users / items.
        self.affected: dict[str, Affected] = {}
        # What users were shown lately, kept only when an intervention targets "most shown"
        # (the users know what they see; the stack is not asked).
        self._remember_shown = any(
            getattr(event, "topic", None) == "most_shown"
            or getattr(event, "most_shown", None) is not None
            for event in self.interventions
        )
        self._shown: list[tuple[float, np.ndarray]] = []
        self._drift_rng = streams.generator("drift")
        n = self.population.count
        self.churned_at = np.full(n, np.inf)
        self._bad_streak = np.zeros(n, np.int32)
        self._session_clicks = np.zeros(n, np.int32)
        self._abandoned_session = np.full(n, -1, np.int64)
        self._session_starts: list[np.ndarray] = []
        #: With ``metrics.regret``: per served request, its time, the expected clicks on the
        #: slate served and on the oracle's slate (see :meth:`expected_clicks`).
        self.measure_regret = scenario.metrics.regret and _defined_together(
            type(self), "react", "expected_slate_clicks"
        )
        self._expected: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def build_catalog(self, scenario: Scenario, rng: np.random.Generator) -> Catalog:
        """Every item of the run, drawn from ``world.catalog`` with the ``catalog`` stream."""
        self.check(scenario)
        return Catalog(
            scenario.world.catalog,
            scenario.end,
            rng,
            bursts=[event for event in self.interventions if isinstance(event, CatalogBurst)],
        )

    @classmethod
    def check(cls, scenario: Scenario) -> list[str]:
        """Checks of ``scenario`` that need this model (before anything runs); returns notes,
        raises :class:`sim.errors.ScenarioError` for a problem: here, a table the model would
        not read (a subclass of :class:`users.TableWorld` reads them)."""
        for path, table in (
            ("world.catalog.table", scenario.world.catalog.table),
            ("world.users.segments", scenario.world.users.segments),
        ):
            if table is not None:
                raise ScenarioError(
                    f"{path}: user model {scenario.world.model.name!r} draws its world and reads "
                    "no table; a model that reads one subclasses users.TableWorld"
                )
        return []

    @property
    def n_users(self) -> int:
        return self.population.count

    def items(self) -> CatalogView:
        """Every item that exists by the end of the run, live or not yet (labels events)."""
        catalog = self.catalog
        return CatalogView(
            n_items=catalog.capacity,
            n_topics=catalog.spec.topics,
            n_creators=catalog.spec.creators,
            topic=catalog.topic,
            creator=catalog.creator,
            created_at=catalog.created_at,
        )

    def catalog_view(self) -> CatalogView:
        return self.catalog.view()

    def session_start_times(self) -> np.ndarray:
        """Start times of every session that was served at least one slate."""
        return np.concatenate(self._session_starts) if self._session_starts else np.empty(0)

    # --- processes ---------------------------------------------------------------------------

    def start(self, env: Any) -> None:
        env.process(self._drift(env))
        if self.catalog.arrival_times.shape[0]:
            env.process(self._new_items(env))
        for event in self.interventions:
            if not isinstance(event, (CatalogBurst, TrafficSpike)):  # those are drawn up front
                env.process(self._intervene(env, event))

    def _intervene(self, env: Any, event: Any):
        yield env.timeout(event.at)
        rng = self._intervention_rng
        if isinstance(event, TopicAversion):
            topic = event.topic
            if topic == "most_shown":
                topic = int(
                    np.argmax(
                        np.bincount(
                            self.catalog.topic[self._recently_shown()],
                            minlength=self.catalog.spec.topics,
                        )
                    )
                )
            users = self._choose_users(event.users, event.among, topic, rng)
            self._aversions.append((topic, users, event.strength))
            self.affected[event.name] = Affected(event.kind, event.at, users=users, topic=topic)
        elif isinstance(event, ItemTurnsBad):
            live = self.catalog.n_live
            if event.items is not None:
                chosen = rng.permutation(live)[: max(1, round(event.items * live))]
            elif event.most_shown is not None:
                counts = np.bincount(self._recently_shown(), minlength=live)
                chosen = np.argsort(-counts, kind="stable")[: event.most_shown]
            elif event.topic is not None:
                chosen = np.flatnonzero(self.catalog.topic[:live] == event.topic)
            else:
                chosen = np.flatnonzero(self.catalog.creator[:live] == event.creator)
            items = np.zeros(self.catalog.capacity, bool)
            items[chosen] = True
            self.catalog.quality[items] -= event.quality_drop
            self.affected[event.name] = Affected(event.kind, event.at, items=items)
        elif isinstance(event, PreferenceShift):
            users = self._choose_users(event.users, "all", None, rng)
            population = self.population
            target = self.catalog.centroids[event.to_topic].astype(np.float32)
            population.preferences[users] += event.amount * (target - population.preferences[users])
            self.affected[event.name] = Affected(
                event.kind, event.at, users=users, topic=event.to_topic
            )

    def _recently_shown(self) -> np.ndarray:
        """Items of every impression in the last hour."""
        if not self._shown:
            return np.empty(0, np.int64)
        return np.concatenate([items for _, items in self._shown])

    def _choose_users(
        self, share: float, among: str, topic: int | None, rng: np.random.Generator
    ) -> np.ndarray:
        """A boolean mask of ``round(share * n_users)`` users: random, or a topic's fans."""
        n = self.n_users
        count = max(1, round(share * n))
        if among == "fans" and topic is not None:
            affinity = self.population.preferences @ self.catalog.centroids[topic]
            chosen = np.argsort(-affinity, kind="stable")[:count]
        else:
            chosen = rng.permutation(n)[:count]
        mask = np.zeros(n, bool)
        mask[chosen] = True
        return mask

    def _drift(self, env: Any):
        every = self.population.spec.drift.every
        while True:
            yield env.timeout(every)
            self.population.drift(every, self._drift_rng)

    def _new_items(self, env: Any):
        times, counts = np.unique(self.catalog.arrival_times, return_counts=True)
        for arrival, count in zip(times, counts, strict=True):
            yield env.timeout(max(arrival - env.now, 0.0))
            self.catalog.add_arrived(int(count))

    # --- ground truth for oracle policies ----------------------------------------------------

    def utility(self, users: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """Each user's expected (noise-free) utility of every live item, ``(n, n_live)``, at
        each request's time in ``times`` (default: the catalogue's newest arrival).

        Served only to policies registered as oracles: an upper bound, never a fair comparison.
        """
        catalog, spec = self.catalog, self.behavior
        live = catalog.n_live
        value = spec.affinity_weight * (
            self.population.preferences[users] @ catalog.vectors[:live].T
        )
        value += (
            spec.quality_weight * catalog.quality[:live]
            + spec.popularity_weight * catalog.appeal[:live]
        )
        if spec.freshness_weight:
            # 2^-(t - created) = 2^-(t - t0) * 2^-(t0 - created): one outer product
            created = catalog.created_at[:live]
            if times is None:
                times = np.full(len(users), max(float(created.max()), 0.0))
            t0 = float(times.min())
            value += np.outer(
                np.exp2(-(times - t0) / spec.freshness_half_life),
                freshness(spec, t0 - created),
            ).astype(value.dtype)
        for topic, averse, strength in self._aversions:
            value -= strength * (averse[users][:, None] & (catalog.topic[:live] == topic)[None, :])
        return value

    def expected_clicks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """With ``metrics.regret``: per served request, its time, the expected clicks on the
        slate served, and on the best slate an oracle could have served (the ``k`` live items
        of highest noise-free utility, best first). Their difference is the request's regret."""
        if not self.measure_regret:
            return None
        if not self._expected:
            return np.empty(0), np.empty(0), np.empty(0)
        times, served, best = (np.concatenate(part) for part in zip(*self._expected, strict=True))
        return times, served, best

    # --- serving -----------------------------------------------------------------------------

    def next_request_time(self) -> float:
        return self.arrivals.next_time()

    def take_requests(self, until: float) -> WorldBatch:
        """Requests due before ``until`` from users still here, in sessions not abandoned."""
        block = self.arrivals.take(until)
        active = np.isinf(self.churned_at[block.user]) & (
            self._abandoned_session[block.user] != block.session
        )
        if not active.all():
            block = block.take(active)
        requests = Requests(
            times=block.time,
            users=block.user,
            sessions=block.session,
            k=self.arrivals.slate_size,
        )
        return WorldBatch(requests=requests, block=block)

    def respond(self, batch: WorldBatch, slates: np.ndarray) -> Responses:
        """Each user's response to the slate served, and the session consequences."""
        block = batch.block
        kind, scope, dwell = self.react(block, slates)
        abandoned = self._update_sessions(block, kind)
        if self.measure_regret:
            self._expected.append((block.time, *self.expected_slate_clicks(block, slates)))
        if self._remember_shown:
            now = float(block.time[0])
            self._shown.append((now, slates.ravel().astype(np.int64)))
            while self._shown and self._shown[0][0] < now - RECENTLY_SHOWN:
                self._shown.pop(0)
        return Responses(kind=kind, scope=scope, dwell=dwell, abandoned=abandoned)

    def react(
        self, block: RequestBlock, slates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What each user does with each item of the slate served: ``(kind, scope, dwell)``,
        each ``(n, k)`` (int8 :class:`sim.domain.Kind` and :class:`sim.domain.Scope` codes,
        float32 seconds, 0 unless clicked).

        Driven by the request's pre-drawn randomness only (``block.slot_uniform``,
        ``block.slot_normal``), so that every variant of a replication sees the same draws.
        """
        value = self.slate_utility(block, slates, block.slot_normal[..., 0])
        spec = self.behavior
        hype = spec.popularity_weight * self.catalog.appeal[slates] if spec.letdown_prob else 0.0
        return respond_to_slates(spec, value, block.slot_uniform, block.slot_normal[..., 1], hype)

    def slate_utility(
        self, block: RequestBlock, slates: np.ndarray, noise: np.ndarray | float
    ) -> np.ndarray:
        """Each served item's utility for its user at the request's time, ``(n, k)``, with
        ``noise`` standard normal ``(n, k)`` (``block.slot_normal[..., 0]``), or 0 for the
        expected utility."""
        users, catalog, spec = block.user, self.catalog, self.behavior
        value = utility(
            spec,
            self.population.preferences[users],
            catalog.vectors[slates],
            catalog.quality[slates],
            catalog.appeal[slates],
            freshness(spec, block.time[:, None] - catalog.created_at[slates]),
            noise,
        )
        for topic, averse, strength in self._aversions:
            value = value - strength * (averse[users][:, None] & (catalog.topic[slates] == topic))
        return value

    def expected_slate_clicks(
        self, block: RequestBlock, slates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For ``metrics.regret``: the expected clicks ``(n,)`` on each slate served, and on
        the best slate an oracle could serve (the ``k`` live items of highest noise-free
        utility, best first). A model that overrides :meth:`react` overrides this too, or its
        regret is not measured."""
        k = slates.shape[1]
        served = expected_clicks(self.behavior, self.slate_utility(block, slates, 0.0))
        every = self.utility(block.user, block.time)
        best = -np.partition(-every, k - 1, axis=1)[:, :k]
        best = expected_clicks(self.behavior, -np.sort(-best, axis=1))
        return served, best

    def _update_sessions(self, block: RequestBlock, kind: np.ndarray) -> np.ndarray:
        # A user has at most one request per window (tick <= gap_min), so per-user fancy
        # assignment below never sees the same user twice.
        spec = self.behavior
        users = block.user
        self._session_starts.append(block.time[block.first])
        self._session_clicks[users[block.first]] = 0
        clicks = (kind == Kind.CLICK).sum(axis=1)
        explicit = ((kind >= Kind.DISMISS) & (kind <= Kind.BLOCK_CREATOR)).sum(axis=1)
        self._session_clicks[users] += clicks
        leave = np.minimum(
            spec.abandon_base
            + spec.abandon_no_click * (clicks == 0)
            + spec.abandon_per_explicit * explicit,
            1.0,
        )
        abandoned = ~block.last & (block.request_uniform[:, 0] < leave)
        self._abandoned_session[users[abandoned]] = block.session[abandoned]

        ended = block.last | abandoned
        ended_users = users[ended]
        bad = abandoned[ended] | (self._session_clicks[ended_users] == 0)
        streak = np.where(bad, self._bad_streak[ended_users] + 1, 0)
        self._bad_streak[ended_users] = streak
        quits = (
            bad
            & (streak >= spec.churn_after_bad_sessions)
            & (block.request_uniform[ended, 1] < spec.churn_prob)
        )
        self.churned_at[ended_users[quits]] = block.time[ended][quits]
        return abandoned


def _defined_together(cls: type, first: str, second: str) -> bool:
    """Whether the class that defines ``cls.first`` (in its MRO) also defines ``cls.second``, or
    a subclass of it does: a model that changed how users react has said what that does to the
    expected clicks."""
    owner = next(base for base in cls.__mro__ if first in base.__dict__)
    other = next(base for base in cls.__mro__ if second in base.__dict__)
    return issubclass(other, owner)
