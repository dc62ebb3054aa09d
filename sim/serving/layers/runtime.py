"""The shared runtime of every layer: when, and from which events, served state changes.

A :class:`LayerRuntime` owns what every layer has (trigger, latency, compute time, rollout, cost,
version history); a *kind* supplies the math (one file per built-in layer in this package, or a
plug-in: see :mod:`sim.serving.layers.base`).

An event at time ``t`` is visible to an update triggered at ``s`` when ``t + latency < s`` (with
label delays, when its arrival in the logs plus ``latency`` is before ``s``: see
:mod:`sim.serving.labels`; an incremental layer then also reads the late rows it passed over
before). A batch update publishes a new snapshot ``compute_time`` later (through a canary first, if
configured); an incremental one applies the new events to its state in place. A continuous layer
updates at the start of every serving window. Every update is recorded as a :class:`Version`:
what it covers (event-time horizon), when it was triggered, when it went live and for whom, and
whom it changed: what each user would be served, not merely the state, decides what a version
absorbs (see :class:`Effect` and :class:`Reads`).
"""

from __future__ import annotations

import time as wallclock
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from river import drift

from sim.domain import (
    EXPLICIT_NEGATIVE_KINDS,
    NEGATIVE_KINDS,
    EventTable,
    Kind,
    Scope,
    TrainingData,
    World,
    is_kind,
)
from sim.scenario.spec import Layer
from sim.serving.eventlog import EventLog

__all__ = [
    "Version",
    "Effect",
    "EVERYONE",
    "nobody",
    "Reads",
    "Absorption",
    "LayerKind",
    "LayerRuntime",
    "canary_cohort",
    "changed_rows",
    "LABELLED_NEGATIVES",
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
    #: The update's input starts here: it reflects events with ``since <= time < horizon`` (a
    #: window or retention before the horizon; for an incremental layer, the events it read)
    since: float = 0.0
    #: Whom it changed what they would be served: ``all``, ``some`` or ``none`` users
    changed: str = "all"
    changed_users: int = 0  # how many (all users for ``all``)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


#: Feedback a retrain with ``label_sample`` below 1 receives only from its panel of users.
LABELLED_NEGATIVES = (Kind.SHORT_DWELL, *EXPLICIT_NEGATIVE_KINDS)


@dataclass(frozen=True)
class Effect:
    """Whom one update changed what they would be served (their scores or candidates):
    everyone, the ``users`` listed, or no one, and then why not."""

    everyone: bool = False
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # sorted, unique
    why_not: str = ""

    @property
    def label(self) -> str:
        """``all``, ``some`` or ``none``, as in :attr:`Version.changed`."""
        return "all" if self.everyone else "some" if self.users.shape[0] else "none"


#: An update that changed what every user is served (a new model, a bandit that learned).
EVERYONE = Effect(everyone=True)


def nobody(why: str) -> Effect:
    """An update that changed what no user is served, and why."""
    return Effect(why_not=why)


#: Users compared at a time by :func:`changed_rows` (bounds its temporaries).
ROW_BLOCK = 1 << 16


def changed_rows(pairs: list[tuple[np.ndarray, np.ndarray, bool]], why: str) -> Effect:
    """The users whose rows differ in any ``(new, old, as_multiset)`` pair of per-user arrays
    (with ``as_multiset``, rows that hold the same values in another order are the same);
    nobody, because ``why``, if none does."""
    n = pairs[0][0].shape[0]
    changed = np.zeros(n, bool)
    for start in range(0, n, ROW_BLOCK):
        block = slice(start, start + ROW_BLOCK)
        for new, old, as_multiset in pairs:
            now, was = new[block], old[block]
            if as_multiset:
                now, was = np.sort(now, axis=1), np.sort(was, axis=1)
            changed[block] |= (now != was).reshape(now.shape[0], -1).any(axis=1)
    users = np.flatnonzero(changed).astype(np.int32)
    return Effect(users=users) if users.shape[0] else nobody(why)


@dataclass(frozen=True)
class Reads:
    """Which logged events a layer's state reflects once an update has read them: of these
    ``kinds`` (all: ``None``), on an item only (``on_item``: not a session abandon), at one slate
    ``position`` only (the bandit's slot), of these ``scopes`` only. A labelled negative of a
    user outside the ``panel`` (a retrain with ``label_sample``) is read as a skip, so the
    layer never reflects it as a negative.
    """

    kinds: tuple[Kind, ...] | None = None
    on_item: bool = False
    position: int | None = None
    scopes: tuple[Scope, ...] | None = None
    panel: np.ndarray | None = None

    def admits(
        self,
        kind: np.ndarray,
        item: np.ndarray,
        position: np.ndarray,
        scope: np.ndarray,
        user: np.ndarray,
    ) -> np.ndarray:
        """Which of the events with these columns the layer can reflect (boolean mask)."""
        admitted = np.ones(kind.shape[0], bool) if self.kinds is None else is_kind(kind, self.kinds)
        if self.on_item:
            admitted &= item >= 0
        if self.position is not None:
            admitted &= position == self.position
        if self.scopes is not None:
            admitted &= np.isin(scope, self.scopes)
        if self.panel is not None:
            admitted &= ~(is_kind(kind, LABELLED_NEGATIVES) & ~self.panel[user])
        return admitted

    def admits_events(self, events: EventTable) -> np.ndarray:
        return self.admits(events.kind, events.item, events.position, events.scope, events.user)


@dataclass
class Absorption:
    """What one layer's versions reflected, for :func:`sim.measuring.metrics.layer_delays`.

    A version absorbs an event of user u when its input covers the event (``since <= time <
    horizon``), ``reads`` admits the event, and the version changed what u is served: it
    changed everyone, or (a batch layer) u is in ``changed_users[version]``, or (an
    incremental layer, whose changed users are exactly the users of the events it reflected)
    the event is not one of the ``missed`` log rows it read and did not reflect.
    """

    reads: Reads
    incremental: bool
    changed_users: dict[int, np.ndarray] = field(default_factory=dict)  # batch "some" versions
    missed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted log rows


class LayerKind(Protocol):
    """The math of one layer."""

    incremental: bool  # True: absorb new events in place; False: compute a new snapshot

    def initial_state(self) -> Any: ...

    def compute(self, data: TrainingData) -> Any:
        """A new snapshot from the visible events (batch kinds)."""

    def absorb(self, state: Any, events: EventTable) -> None:
        """Apply newly visible events to ``state`` in place (incremental kinds)."""

    # Optional, with the defaults LayerRuntime applies when a kind lacks them:
    #   reads: Reads                  events it can reflect (default: every event)
    #   effect(previous, new) -> Effect      batch kinds: whom a new state changed (default:
    #                                        nobody if it is None or the state already served,
    #                                        else everyone)
    #   reflected(state, events) -> mask     incremental kinds, before absorbing: which events
    #                                        the state will reflect (default: what reads admits)
    #   shared: bool                         incremental kinds: one state serves everyone alike,
    #                                        so reflecting any event changes everyone (default
    #                                        False: it changes the users of the events)
    #   why_unchanged(state) -> str          incremental kinds: why an update changed nothing
    #   retention: float                     batch kinds: events older than this before the
    #                                        horizon are dropped from the state
    #   forget(state, events)                incremental kinds: take deleted events, absorbed
    #                                        earlier, out of the state (default: it keeps them)
    #   serve(version, state, requests)      what serving reads instead of the published state,
    #                                        and the version each request saw (see
    #                                        sim.serving.stack)


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
        reads = getattr(kind, "reads", None) or Reads()
        #: Which events the layer's state reflects (with the label panel of a sparse retrain).
        self.reads = reads if self.label_panel is None else replace(reads, panel=self.label_panel)
        self.history: list[Version] = []
        #: Batch versions that changed some users: version -> their ids (int32, sorted).
        self.changed_users: dict[int, np.ndarray] = {}
        #: Log rows an incremental update read, that ``reads`` admits and its state does not
        #: reflect (a session another session replaced within the update, say).
        self._missed: list[np.ndarray] = []
        #: Why each version that changed nothing did not.
        self._why_not: dict[int, str] = {}
        self.cost_units = 0.0
        self.wall_seconds = 0.0
        #: Updates still computing: (trigger time, events read). Their compute is spent, so one
        #: the run ends before it goes live is still charged (see :meth:`unfinished_cost`).
        self._computing: list[tuple[float, int]] = []
        self._updates = 0
        self._absorbed_until = 0  # log index up to which an incremental state is computed
        #: Label-delayed logs: rows before ``_absorbed_until`` not arrived when last read
        self._late = np.zeros(0, np.int64)
        self._read_from = 0.0  # event time from which the next incremental update reads
        self._events_at_last_trigger = 0
        self._kept_rows: np.ndarray | None = (
            None  # log rows of the last events taken, if some were deleted
        )
        self._deletions_seen = 0  # the log's deletions an incremental state has dealt with
        #: Incremental layers: (deletion time, when its state stopped depending on the deleted
        #: events; inf: never, the kind cannot forget)
        self.deletions_honoured: list[tuple[float, float]] = []
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
        horizon = env.now - self.spec.latency
        measured = self.log.count_before(horizon)
        late = self.log.arrived(np.arange(measured), horizon)[1] if self.log.delayed else None
        while env.now < self.frozen_from:
            yield env.timeout(spec.check_every)
            horizon = env.now - self.spec.latency
            visible = self.log.count_before(horizon)
            if late is not None:  # label delays: what arrived since, wherever it is in the log
                candidates = np.concatenate([late, np.arange(measured, visible)])
                arrived, late = self.log.arrived(candidates, horizon)
                kinds = self.log.between(0, visible).kind[arrived]
            else:
                kept = self.log.kept(measured, visible, horizon)
                new = self.log.between(measured, visible)
                kinds = new.kind if kept is None else new.kind[kept - measured]
            measured = visible
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
            self._absorb(now, now - spec.latency, *self._take_new(now))
            return False
        if spec.after_events:
            visible = self.log.count_visible(now - spec.latency)
            if visible - self._events_at_last_trigger >= spec.after_events:
                self._events_at_last_trigger = visible
                self._env.process(self._update(self._env))
                return True
        return False

    # --- updates -------------------------------------------------------------------------------

    def _take_new(self, now: float) -> tuple[int, float, EventTable]:
        """The events newly visible at ``now``: their first log row, the event time they start
        from, and the events (without those deleted by then, which are also forgotten from the
        state: see :meth:`_forget`)."""
        horizon = now - self.spec.latency
        start, since = self._absorbed_until, self._read_from
        self._forget(now, horizon)
        self._absorbed_until = self.log.count_before(horizon)
        self._read_from = max(since, horizon)
        if self.log.delayed:
            # What arrived since the last read: rows passed over then, and new rows.
            candidates = np.concatenate([self._late, np.arange(start, self._absorbed_until)])
            rows, self._late = self.log.arrived(candidates, horizon)
            self._kept_rows = rows
            return start, since, self.log.between(0, self._absorbed_until).take(rows)
        events = self.log.between(start, self._absorbed_until)
        kept = self.log.kept(start, self._absorbed_until, horizon)
        self._kept_rows = kept
        return start, since, events if kept is None else events.take(kept - start)

    def _forget(self, now: float, horizon: float) -> None:
        """Deletions that have reached this incremental layer (made before ``horizon``): the
        rows it had absorbed are taken out of its state, through the kind's ``forget`` hook;
        a kind without one keeps them (recorded: the deletion never reaches its state)."""
        deletions = self.log.deletions
        while (
            self._deletions_seen < len(deletions) and deletions[self._deletions_seen][0] < horizon
        ):
            at, rows = deletions[self._deletions_seen]
            self._deletions_seen += 1
            absorbed = rows[rows < self._absorbed_until]
            if self._late.shape[0]:  # rows not arrived were never absorbed
                absorbed = absorbed[~np.isin(absorbed, self._late)]
            forget = getattr(self.kind, "forget", None)
            if not absorbed.shape[0]:
                self.deletions_honoured.append((at, now))  # it had nothing to forget
            elif callable(forget):
                forget(self._state, self.log.between(0, self._absorbed_until).take(absorbed))
                self.deletions_honoured.append((at, now + self.spec.compute_time))
            else:
                self.deletions_honoured.append((at, np.inf))

    def _update(self, env: Any):
        triggered = env.now
        horizon = triggered - self.spec.latency
        if self.kind.incremental:
            start, since, events = self._take_new(triggered)
            computing = (triggered, len(events))
            self._computing.append(computing)
            yield env.timeout(self.spec.compute_time)
            self._computing.remove(computing)
            self._absorb(triggered, horizon, start, since, events)
            return
        data = self._training_data(triggered, horizon, self._published_state)
        started = wallclock.perf_counter()
        state = self.kind.compute(data)
        spent = wallclock.perf_counter() - started
        self._updates += 1
        version = self._updates
        computing = (triggered, len(data.events))
        self._computing.append(computing)
        yield env.timeout(self.spec.compute_time)
        self._computing.remove(computing)
        # against what serves everyone when it goes live
        effect = self._batch_effect(version, state)
        since = self._since(horizon)
        read = len(data.events)
        canary = self.spec.canary
        if canary is None:
            self._publish(self.name, version, state, "all")
            self._published_state = state
            self._record(
                triggered, env.now, read, "all", spent, True, horizon, version, since, effect
            )
            return
        self._publish(self.name, version, state, "canary")
        self._record(
            triggered, env.now, read, "canary", spent, True, horizon, version, since, effect
        )
        yield env.timeout(canary.duration)
        self._publish(self.name, version, state, "all")
        self._published_state = state
        self._record(triggered, env.now, read, "all", 0.0, False, horizon, version, since, effect)

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
        goes live at once; an incremental one absorbs it. Recorded as a version with origin
        ``bootstrap``, free of charge (every variant pays it alike, before measuring)."""
        horizon = now - self.spec.latency  # what is visible to this layer by then
        self._events_at_last_trigger = self.log.count_visible(horizon)
        if not self.kind.incremental:
            data = self._training_data(now, horizon, self._published_state)
            self._publish_now(data, "bootstrap")
            return
        start, since, events = self._take_new(now)
        effect = self._incremental_effect(start, events)
        self.kind.absorb(self._state, events)
        self._updates += 1
        self._publish(self.name, self._updates, self._state, "all")
        self._record(
            now,
            now,
            len(events),
            "all",
            0.0,
            False,
            horizon,
            since=since,
            effect=effect,
            origin="bootstrap",
        )

    def _publish_now(self, data: TrainingData, origin: str) -> None:
        """Compute a batch state from ``data`` and serve it to everyone from ``data.now``."""
        started = wallclock.perf_counter()
        state = self.kind.compute(data)
        spent = wallclock.perf_counter() - started
        self._updates += 1
        effect = self._batch_effect(self._updates, state)
        self._publish(self.name, self._updates, state, "all")
        self._published_state = state
        since = self._since(data.horizon, whole_log=origin == "warmup")
        read = len(data.events)
        self._record(
            data.now,
            data.now,
            read,
            "all",
            spent,
            False,
            data.horizon,
            since=since,
            effect=effect,
            origin=origin,
        )

    def _absorb(
        self, triggered: float, horizon: float, start: int, since: float, events: EventTable
    ) -> None:
        """Apply new events to the in-place state; a version only when there were any."""
        if not len(events):
            return
        effect = self._incremental_effect(start, events)  # measurement: not the layer's time
        started = wallclock.perf_counter()
        self.kind.absorb(self._state, events)
        spent = wallclock.perf_counter() - started
        self._updates += 1
        self._publish(self.name, self._updates, self._state, "all")
        self._record(
            triggered,
            self._env.now,
            len(events),
            "all",
            spent,
            True,
            horizon,
            since=since,
            effect=effect,
        )

    # --- effects -------------------------------------------------------------------------------

    def _batch_effect(self, version: int, state: Any) -> Effect:
        """Whom a new batch state changed against the one serving everyone now; the ids of a
        change to some users are kept (for the propagation metrics)."""
        previous = self._published_state
        effect_of = getattr(self.kind, "effect", None)
        if callable(effect_of):
            effect = effect_of(previous, state)
        elif state is None:
            effect = nobody("the update produced no state")
        elif state is previous:
            effect = nobody("the update returned the state already served")
        else:
            effect = EVERYONE
        if effect.label == "some":
            self.changed_users[version] = effect.users
        return effect

    def _incremental_effect(self, start: int, events: EventTable) -> Effect:
        """Whom absorbing ``events`` (log rows from ``start``) will change, decided before the
        state absorbs them: the users of the events it reflects, or everyone for a state all
        users share; events it reads, admits and does not reflect are kept as missed."""
        reflected_by = getattr(self.kind, "reflected", None)
        admitted = self.reads.admits_events(events)
        reflected = reflected_by(self._state, events) if callable(reflected_by) else admitted
        if not reflected.any():
            why = getattr(self.kind, "why_unchanged", None)
            return nobody(
                why(self._state)
                if callable(why)
                else "none of the events it read is of a kind it reflects"
            )
        missed = np.flatnonzero(admitted & ~reflected)
        if missed.shape[0]:
            kept = self._kept_rows
            self._missed.append(start + missed if kept is None else kept[missed])
        if getattr(self.kind, "shared", False):
            return EVERYONE
        return Effect(users=np.unique(events.user[reflected]).astype(np.int32))

    def _since(self, horizon: float, whole_log: bool = False) -> float:
        """Where a batch update's reflected input starts: its window or the kind's retention
        before the horizon (never before time 0, where the log starts)."""
        window = None if whole_log else getattr(self.spec, "window", None)
        spans = [span for span in (window, getattr(self.kind, "retention", None)) if span]
        return max(horizon - min(spans), 0.0) if spans else 0.0

    def unfinished_cost(self, triggered_from: float = 0.0) -> tuple[int, float]:
        """The updates triggered from ``triggered_from`` still computing (the run ended before
        they went live) and the compute units they spent."""
        events = [n for at, n in self._computing if at >= triggered_from]
        cost = self.spec.cost
        return len(events), sum(cost.per_run + cost.per_event * n for n in events)

    def absorption(self) -> Absorption:
        """What this layer's versions reflected, for the propagation metrics."""
        missed = np.sort(np.concatenate(self._missed)) if self._missed else np.zeros(0, np.int64)
        return Absorption(self.reads, self.kind.incremental, self.changed_users, missed)

    def unchanged_note(self, measured_from: float) -> str | None:
        """A line for the run's notes when every update this layer published while measuring
        changed what no user is served (else None)."""
        measured = {
            v.version: v.changed
            for v in self.history
            if v.origin == "update" and v.triggered_at >= measured_from
        }
        if not measured or any(changed != "none" for changed in measured.values()):
            return None
        reasons = Counter(self._why_not.get(version, "") for version in measured)
        reason = reasons.most_common(1)[0][0]
        return (
            f"layer {self.name!r} published {len(measured):,} versions while measuring and none "
            f"changed what any user is served" + (f": {reason}" if reason else "")
        )

    def _training_data(
        self, now: float, horizon: float, previous: Any = None, whole_log: bool = False
    ) -> TrainingData:
        window = None if whole_log else getattr(self.spec, "window", None)
        since = None if window is None else horizon - window
        events = self.log.visible(horizon, since=since)
        unlabelled = self.log.unlabelled(horizon, since=since)
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
            unlabelled=unlabelled,
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
        since: float = 0.0,
        effect: Effect = EVERYONE,
        origin: str = "update",
    ) -> None:
        """Append a version: ``since`` where the input it reflects starts, ``effect`` whom it
        changed."""
        cost = self.spec.cost.per_run + self.spec.cost.per_event * events if charge else 0.0
        self.cost_units += cost
        self.wall_seconds += spent
        number = self._updates if version is None else version
        changed = effect.label
        self.history.append(
            Version(
                layer=self.name,
                version=number,
                triggered_at=triggered,
                horizon=triggered - self.spec.latency if horizon is None else horizon,
                live_at=live_at,
                cohort=cohort,
                events=events,
                cost=cost,
                wall_seconds=spent,
                origin=origin,
                since=since,
                changed=changed,
                changed_users=self.world.n_users
                if changed == "all"
                else int(effect.users.shape[0]),
            )
        )
        if changed == "none":
            self._why_not[number] = effect.why_not
