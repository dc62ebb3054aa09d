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
from sim.rng import Streams
from sim.spec import Scenario
from users.arrivals import Arrivals, RequestBlock
from users.behavior import respond_to_slates, utility
from users.catalog import Catalog
from users.population import Population

__all__ = ["SimulatedWorld", "WorldBatch"]


@dataclass(frozen=True)
class WorldBatch:
    """Requests due in one window: the public part, and the world's private draws."""

    requests: Requests
    block: RequestBlock


class SimulatedWorld:
    """Ground truth of one run, built from the scenario's ``world`` and the run's streams."""

    def __init__(self, scenario: Scenario, streams: Streams):
        world = scenario.world
        self.behavior = world.behavior
        self.catalog = Catalog(world.catalog, scenario.end, streams.generator("catalog"))
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
        )
        self._drift_rng = streams.generator("drift")
        n = self.population.count
        self.churned_at = np.full(n, np.inf)
        self._bad_streak = np.zeros(n, np.int32)
        self._session_clicks = np.zeros(n, np.int32)
        self._abandoned_session = np.full(n, -1, np.int64)
        self._session_starts: list[np.ndarray] = []

    @property
    def n_users(self) -> int:
        return self.population.count

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

    def _drift(self, env: Any):
        every = self.population.spec.drift.every
        while True:
            yield env.timeout(every)
            self.population.drift(every, self._drift_rng)

    def _new_items(self, env: Any):
        for arrival in self.catalog.arrival_times:
            yield env.timeout(max(arrival - env.now, 0.0))
            self.catalog.add_arrived()

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
        users = block.user
        catalog = self.catalog
        value = utility(
            self.behavior,
            self.population.preferences[users],
            catalog.vectors[slates],
            catalog.quality[slates],
            catalog.appeal[slates],
            block.slot_normal[..., 0],
        )
        kind, scope, dwell = respond_to_slates(
            self.behavior, value, block.slot_uniform, block.slot_normal[..., 1]
        )
        abandoned = self._update_sessions(block, kind)
        return Responses(kind=kind, scope=scope, dwell=dwell, abandoned=abandoned)

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
