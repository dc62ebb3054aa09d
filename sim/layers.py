"""Update layers: when, and from which events, served state changes.

A :class:`LayerRuntime` owns what every layer has (trigger, latency, compute time, rollout, cost,
version history); a *kind* supplies the math (:mod:`sim.stores` for the feature store, session
context and profile memory; the policy's own hooks for retrain and near-line embeddings).

An event at time ``t`` is visible to an update triggered at ``s`` when ``t + latency < s``. A
batch update publishes a new snapshot ``compute_time`` later (through a canary first, if
configured); an incremental one applies the new events to its state in place. A continuous layer
updates at the start of every serving window. Every update is recorded as a :class:`Version`:
what it covers (event-time horizon), when it was triggered, when it went live and for whom.
"""

from __future__ import annotations

import time as wallclock
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np
from river import drift

from sim.deadline import deadline
from sim.domain import (
    EXPLICIT_NEGATIVE_KINDS,
    NEGATIVE_KINDS,
    EventTable,
    Kind,
    RefreshData,
    TrainingData,
    World,
    is_kind,
)
from sim.durations import format_duration
from sim.errors import PolicyError
from sim.eventlog import EventLog
from sim.spec import Layer

__all__ = [
    "Version",
    "LayerKind",
    "LayerRuntime",
    "PolicyFit",
    "PolicyRefresh",
    "canary_cohort",
]


@dataclass(frozen=True)
class Version:
    """One published state of a layer, for one cohort."""

    layer: str
    version: int
    triggered_at: float  # simulated seconds
    horizon: float  # covers events with time < horizon
    live_at: float  # serves its cohort from this time
    cohort: str  # "all" or "canary"
    events: int  # events the update processed
    cost: float  # compute units charged for the update (on its first row)
    wall_seconds: float  # wall time the update took in this process
    #: ``update`` (the layer's own trigger), ``warmup`` (a refit of the logging policy's model
    #: during a common warm-up) or ``bootstrap`` (the common state every variant starts
    #: measuring from, fitted on or absorbed from the whole warm-up log)
    origin: str = "update"

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


#: Feedback a retrain with ``label_sample`` below 1 receives only from its panel of users.
LABELLED_NEGATIVES = (Kind.SHORT_DWELL, *EXPLICIT_NEGATIVE_KINDS)


class LayerKind(Protocol):
    """The math of one layer."""

    incremental: bool  # True: absorb new events in place; False: compute a new snapshot

    def initial_state(self) -> Any: ...

    def compute(self, data: TrainingData) -> Any:
        """A new snapshot from the visible events (batch kinds)."""

    def absorb(self, state: Any, events: EventTable) -> None:
        """Apply newly visible events to ``state`` in place (incremental kinds)."""


def canary_cohort(n_users: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A stable canary cohort of exactly ``round(fraction * n_users)`` users (boolean mask)."""
    mask = np.zeros(n_users, bool)
    mask[rng.permutation(n_users)[: round(fraction * n_users)]] = True
    return mask


class LayerRuntime:
    """Trigger, latency, compute, rollout, cost and versions of one layer."""

    def __init__(
        self,
        name: str,
        spec: Layer,
        kind: LayerKind,
        log: EventLog,
        world: World,
        publish: Any,
        rng: np.random.Generator,
    ):
        self.name = name
        self.spec = spec
        self.kind = kind
        self.log = log
        self.world = world
        self._publish = publish  # callable(layer, version, state, cohort)
        self.phase = 0.0  # first periodic trigger
        if spec.every:
            self.phase = (
                float(rng.uniform(0.0, spec.every)) if spec.phase == "random" else spec.phase
            )
        canary = spec.canary
        self.canary_users = (
            canary_cohort(world.n_users, canary.fraction, rng) if canary is not None else None
        )
        sample = getattr(spec, "label_sample", 1.0)
        #: Users whose negatives reach training (a retrain with sparse labels), else None.
        self.label_panel = canary_cohort(world.n_users, sample, rng) if sample < 1 else None
        self.history: list[Version] = []
        self.cost_units = 0.0
        self.wall_seconds = 0.0
        self._updates = 0
        self._absorbed_until = 0  # log index up to which an incremental state is computed
        self._events_at_last_trigger = 0
        self._state = kind.initial_state() if kind.incremental else None
        self._published_state: Any = None  # the snapshot serving all traffic (for fit)
        self._env: Any = None
        #: No update is triggered from this time on (the ``frozen`` bound freezes at warm-up).
        self.frozen_from = np.inf
        #: A batch layer's extra update, timed to be live when the warm-up ends (``own`` mode).
        self.warm_start_at: float | None = None
        #: No trigger fires and nothing is absorbed before this time (a common warm-up's end,
        #: where :meth:`bootstrap` sets the state every variant starts from).
        self.active_from = 0.0
        #: Common warm-up, retrain only: the logging policy's model is refit this often before
        #: ``active_from``, on every event logged so far, the same in every variant.
        self.warmup_refit_every: float | None = None

    @property
    def state(self) -> Any:
        """The incremental state (continuous and incremental layers only)."""
        return self._state

    # --- triggers ------------------------------------------------------------------------------

    def start(self, env: Any) -> None:
        self._env = env
        if self._state is not None and not self.active_from:
            self._publish(self.name, 0, self._state, "all")
        if self.warm_start_at is not None:
            env.process(self._warm_start(env, self.warm_start_at))
        if self.warmup_refit_every is not None:
            env.process(self._warmup_refits(env, self.warmup_refit_every))
        if self.spec.every:
            env.process(self._periodic(env))
        elif self.spec.on_drift is not None:
            env.process(self._drift_watch(env))

    def _warm_start(self, env: Any, at: float):
        yield env.timeout(at)
        yield env.process(self._update(env))

    def _periodic(self, env: Any):
        yield env.timeout(self.active_from + self.phase)
        while env.now < self.frozen_from:
            env.process(self._update(env))
            yield env.timeout(self.spec.every)

    def _drift_watch(self, env: Any):
        spec = self.spec.on_drift
        assert spec is not None
        detector = drift.ADWIN() if spec.detector == "adwin" else drift.PageHinkley()
        last_trigger = -np.inf
        yield env.timeout(self.active_from)
        measured = self.log.count_before(env.now - self.spec.latency)
        while env.now < self.frozen_from:
            yield env.timeout(spec.check_every)
            visible = self.log.visible(env.now - self.spec.latency)
            new = slice(measured, len(visible))
            measured = len(visible)
            kinds = visible.kind[new]
            impressions = int((kinds != Kind.ABANDON).sum())
            if impressions:
                negative = is_kind(kinds, NEGATIVE_KINDS) & (kinds != Kind.ABANDON)
                detector.update(float(negative.sum()) / impressions)
            if detector.drift_detected and env.now - last_trigger >= spec.min_gap:
                last_trigger = env.now
                env.process(self._update(env))

    def before_window(self, now: float) -> bool:
        """Called by the engine before each serving window; True if an update was started."""
        spec = self.spec
        if now < self.active_from or now >= self.frozen_from:
            return False
        if spec.continuous:
            self._absorb(now, now - spec.latency, self._take_new(now))
            return False
        if spec.after_events:
            visible = self.log.count_before(now - spec.latency)
            if visible - self._events_at_last_trigger >= spec.after_events:
                self._events_at_last_trigger = visible
                self._env.process(self._update(self._env))
                return True
        return False

    # --- updates -------------------------------------------------------------------------------

    def _take_new(self, now: float) -> EventTable:
        horizon_index = self.log.count_before(now - self.spec.latency)
        new = self.log.between(self._absorbed_until, horizon_index)
        self._absorbed_until = horizon_index
        return new

    def _update(self, env: Any):
        triggered = env.now
        horizon = triggered - self.spec.latency
        if self.kind.incremental:
            events = self._take_new(triggered)
            yield env.timeout(self.spec.compute_time)
            self._absorb(triggered, horizon, events)
            return
        data = self._training_data(triggered, horizon, self._published_state)
        started = wallclock.perf_counter()
        state = self.kind.compute(data)
        spent = wallclock.perf_counter() - started
        self._updates += 1
        version = self._updates
        yield env.timeout(self.spec.compute_time)
        canary = self.spec.canary
        if canary is None:
            self._publish(self.name, version, state, "all")
            self._published_state = state
            self._record(triggered, env.now, len(data.events), "all", spent, True, horizon, version)
            return
        self._publish(self.name, version, state, "canary")
        self._record(triggered, env.now, len(data.events), "canary", spent, True, horizon, version)
        yield env.timeout(canary.duration)
        self._publish(self.name, version, state, "all")
        self._published_state = state
        self._record(triggered, env.now, len(data.events), "all", 0.0, False, horizon, version)

    def _warmup_refits(self, env: Any, every: float):
        """The logging policy's model during a common warm-up: refit on every event logged so
        far (no window, every label), live at once, free of charge: the same in every variant."""
        while env.now + every < self.active_from:
            yield env.timeout(every)
            data = self._training_data(env.now, env.now, self._published_state, whole_log=True)
            self._publish_now(data, "warmup")

    def bootstrap(self, now: float) -> None:
        """The state every variant starts measuring from, at the end of a common warm-up: a batch
        layer fits on the warm-up log visible under its latency (its own window and labels) and
        goes live at once; an incremental one absorbs it. Recorded as a version with origin ``bootstrap``, free of
        charge (every variant pays it alike, before measuring)."""
        horizon = now - self.spec.latency  # what is visible to this layer by then
        visible = self.log.count_before(horizon)
        self._events_at_last_trigger = visible
        if not self.kind.incremental:
            data = self._training_data(now, horizon, self._published_state)
            self._publish_now(data, "bootstrap")
            return
        events = self.log.between(self._absorbed_until, visible)
        self._absorbed_until = visible
        self.kind.absorb(self._state, events)
        self._updates += 1
        self._publish(self.name, self._updates, self._state, "all")
        self._record(now, now, len(events), "all", 0.0, False, horizon, origin="bootstrap")

    def _publish_now(self, data: TrainingData, origin: str) -> None:
        """Compute a batch state from ``data`` and serve it to everyone from ``data.now``."""
        started = wallclock.perf_counter()
        state = self.kind.compute(data)
        spent = wallclock.perf_counter() - started
        self._updates += 1
        self._publish(self.name, self._updates, state, "all")
        self._published_state = state
        self._record(
            data.now, data.now, len(data.events), "all", spent, False, data.horizon, origin=origin
        )

    def _absorb(self, triggered: float, horizon: float, events: EventTable) -> None:
        """Apply new events to the in-place state; a version only when there were any."""
        if not len(events):
            return
        started = wallclock.perf_counter()
        self.kind.absorb(self._state, events)
        spent = wallclock.perf_counter() - started
        self._updates += 1
        self._publish(self.name, self._updates, self._state, "all")
        self._record(triggered, self._env.now, len(events), "all", spent, True, horizon)

    def _training_data(
        self, now: float, horizon: float, previous: Any = None, whole_log: bool = False
    ) -> TrainingData:
        window = None if whole_log else getattr(self.spec, "window", None)
        events = self.log.visible(horizon, since=None if window is None else horizon - window)
        if self.label_panel is not None and not whole_log:
            # Outside the panel the impression is logged but its negative label never arrives:
            # training sees a skip.
            labels = is_kind(events.kind, LABELLED_NEGATIVES) & ~self.label_panel[events.user]
            events = replace(events, kind=np.where(labels, np.int8(Kind.SKIP), events.kind))
        return TrainingData(
            events=events,
            catalog=self.world.catalog_view(),
            n_users=self.world.n_users,
            now=now,
            horizon=horizon,
            previous=previous,
        )

    def _record(
        self,
        triggered: float,
        live_at: float,
        events: int,
        cohort: str,
        spent: float,
        charge: bool,
        horizon: float | None = None,
        version: int | None = None,
        origin: str = "update",
    ) -> None:
        cost = self.spec.cost.per_run + self.spec.cost.per_event * events if charge else 0.0
        self.cost_units += cost
        self.wall_seconds += spent
        self.history.append(
            Version(
                layer=self.name,
                version=self._updates if version is None else version,
                triggered_at=triggered,
                horizon=triggered - self.spec.latency if horizon is None else horizon,
                live_at=live_at,
                cohort=cohort,
                events=events,
                cost=cost,
                wall_seconds=spent,
                origin=origin,
            )
        )


class PolicyFit:
    """The ``retrain`` layer's math: the policy's ``fit`` hook."""

    incremental = False

    def __init__(self, policy: Any, policy_name: str, timeout: float = 0.0):
        self.policy = policy
        self.policy_name = policy_name
        self.timeout = timeout

    def initial_state(self) -> None:
        return None

    def compute(self, data: TrainingData) -> Any:
        return _call_hook(self.policy_name, "fit", data.now, self.policy.fit, data, self.timeout)

    def absorb(self, state: Any, events: EventTable) -> None:  # pragma: no cover - batch kind
        raise NotImplementedError


class PolicyRefresh:
    """The ``nearline_embeddings`` layer's math: the policy's ``refresh`` hook, given the visible
    events (the policy picks its windows from them) and the model deployed at trigger time."""

    incremental = False

    def __init__(
        self, policy: Any, policy_name: str, spec: Any, deployed: Any, timeout: float = 0.0
    ):
        self.policy = policy
        self.policy_name = policy_name
        self.timeout = timeout
        self.windows = tuple((window.span, window.weight) for window in spec.windows)
        self.negative_weight = spec.negative_weight
        self.deployed = deployed  # callable: the model serving outside canaries now

    def initial_state(self) -> None:
        return None

    def compute(self, data: TrainingData) -> Any:
        refresh = RefreshData(
            events=data.events,
            catalog=data.catalog,
            n_users=data.n_users,
            now=data.now,
            horizon=data.horizon,
            model=self.deployed(),
            windows=self.windows,
            negative_weight=self.negative_weight,
        )
        return _call_hook(
            self.policy_name, "refresh", data.now, self.policy.refresh, refresh, self.timeout
        )

    def absorb(self, state: Any, events: EventTable) -> None:  # pragma: no cover - batch kind
        raise NotImplementedError


def _call_hook(
    policy: str, hook: str, now: float, function: Any, argument: Any, timeout: float
) -> Any:
    try:
        with deadline(timeout):
            return function(argument)
    except Exception as error:
        raise PolicyError(
            f"policy {policy!r} failed in {hook} at simulated time {format_duration(now)}: "
            f"{type(error).__name__}: {error}"
        ) from error
