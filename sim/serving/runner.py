"""The composition root: the only module that wires ``users`` and ``policies`` together.

``run_scenario`` builds the world, the stack and its layers on a SimPy environment from one
validated scenario and one seed, runs it to the end, and returns a :class:`RunResult`.
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import torch
from threadpoolctl import threadpool_limits

from policies.registry import make_policy
from sim.domain import (
    EXPLICIT_NEGATIVE_KINDS,
    NEGATIVE_KINDS,
    CatalogView,
    EventTable,
    Kind,
    UserModel,
)
from sim.scenario.durations import format_duration
from sim.scenario.spec import RetrainLayer, Scenario
from sim.serving.engine import Engine
from sim.serving.eventlog import EventLog, row_chunks
from sim.serving.labels import LabelPipeline
from sim.serving.layers import Absorption, LayerContext, LayerRuntime, PolicyFit, Version
from sim.serving.layers.registry import layer_class, make_layer
from sim.serving.memory import event_log_on_disk, return_freed_arrays
from sim.serving.probes import ProbeRecord, deletion_delays, start_probes
from sim.serving.rng import Streams
from sim.serving.stack import Stack
from users.registry import check_world, make_user_model
from users.world import Affected

__all__ = ["RunResult", "Assembly", "assemble", "run_scenario", "check_scenario", "build_policy"]


@dataclass
class RunResult:
    """Everything one run produced, before it is written anywhere."""

    scenario: Scenario
    summary: dict[str, Any]
    events: EventTable
    item_topic: np.ndarray  # topic of every item that existed, to label events
    item_creator: np.ndarray
    churned_at: np.ndarray  # per user: simulated time they quit, inf if they stayed
    canary_users: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> cohort mask
    versions: list[Version] = field(default_factory=list)
    affected: dict[str, Affected] = field(default_factory=dict)  # intervention name -> whom
    item_created_at: np.ndarray = field(default_factory=lambda: np.empty(0))
    session_starts: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: With ``metrics.regret``: per request, time and expected clicks served and possible
    expected_clicks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    #: Per layer, what its versions reflected and whom they changed (propagation metrics)
    absorption: dict[str, Absorption] = field(default_factory=dict)
    #: Who took each probe's control, on what (or, in the twin, would have)
    probes: list[ProbeRecord] = field(default_factory=list)

    def catalog(self) -> CatalogView:
        """The observable catalogue of every item that existed during the run."""
        spec = self.scenario.world.catalog
        return CatalogView(
            n_items=int(self.item_topic.shape[0]),
            n_topics=spec.topics,
            n_creators=spec.creators,
            topic=self.item_topic,
            creator=self.item_creator,
            created_at=self.item_created_at,
        )


def build_policy(scenario: Scenario, streams: Streams | None = None) -> Any:
    """The scenario's policy with validated parameters, seeded from the ``policy`` stream."""
    streams = streams or Streams(scenario.seed)
    spec = scenario.stack.policy
    return make_policy(spec.name, spec.params, seed=streams.integer_seed("policy"))


def is_oracle(policy: Any) -> bool:
    """Whether ``policy`` is registered as an oracle: it sees the ground truth, an upper bound."""
    return bool(getattr(policy, "oracle", False))


def check_scenario(scenario: Scenario) -> list[str]:
    """Checks that need the policy and the user model (they resolve, their parameters validate,
    a table world's tables read); returns notes."""
    return _notes(scenario, build_policy(scenario)) + check_world(scenario)


def _notes(scenario: Scenario, policy: Any) -> list[str]:
    notes = []
    active = scenario.stack.layers.active()
    for layer in getattr(policy, "requires_layers", ()):
        if layer not in active:
            notes.append(
                f"policy {scenario.stack.policy.name!r} learns through the {layer!r} layer, which "
                "is off: it will not learn"
            )
    if is_oracle(policy):
        notes.append(
            f"policy {scenario.stack.policy.name!r} is an oracle: it ranks by the world's ground "
            "truth, an upper bound no real stack reaches"
        )
    for name, spec in scenario.stack.layers.active().items():
        hook = getattr(layer_class(name, spec)[0], "policy_hook", None)
        if hook is not None and not callable(getattr(policy, hook, None)):
            notes.append(
                f"policy {scenario.stack.policy.name!r} has no {hook} hook: layer {name!r} will "
                f"not update it"
            )
    return notes


def _layer_kind(
    name: str, spec: Any, policy: Any, world: UserModel, stack: Stack, seed: int
) -> Any:
    """The math of layer ``name`` (a built-in or a plug-in, see
    :mod:`sim.serving.layers.registry`), or ``None`` when it needs a policy hook the policy
    lacks."""
    cls, params = layer_class(name, spec)
    hook = getattr(cls, "policy_hook", None)
    if hook is not None and not callable(getattr(policy, hook, None)):
        return None
    context = LayerContext(
        name=name,
        spec=spec,
        n_users=world.n_users,
        catalog=world.catalog_view,
        seed=seed,
        policy=policy,
        policy_name=stack.policy_name,
        hook_timeout=stack.hook_timeout,
        model=lambda: stack.model,
    )
    return make_layer(cls, params, context)


def run_scenario(
    scenario: Scenario,
    on_progress: Callable[[float], None] | None = None,
    scratch: str | Path | None = None,
) -> RunResult:
    """Run ``scenario`` once with its own seed, on one core.

    ``on_progress`` is called with the simulated time after each served window. An event log kept
    on disk (``output.event_log``) lives in unlinked temporary files under ``scratch`` (the
    system's temporary directory when None).
    """
    # Serving is many small array operations: BLAS and torch thread pools spinning against each
    # other on them made runs 5x slower on 2 cores. One run uses one core; sweeps parallelize
    # across runs. A single thread also keeps floating-point results bitwise reproducible.
    return_freed_arrays()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return _run(scenario, on_progress, scratch)
    finally:
        torch.set_num_threads(threads)


@dataclass
class Assembly:
    """One run's parts, wired on a SimPy environment, before serving starts."""

    env: simpy.Environment
    world: UserModel
    stack: Stack
    log: EventLog
    layers: list[LayerRuntime]
    notes: list[str]
    probes: list[ProbeRecord] = field(default_factory=list)
    items_at_start: int = 0


def assemble(scenario: Scenario, scratch: str | Path | None = None) -> Assembly:
    """Build the world, the policy, the stack and its layers from one scenario and its seed."""
    streams = Streams(scenario.seed)
    policy = build_policy(scenario, streams)
    notes = _notes(scenario, policy)
    world = make_user_model(scenario, streams)

    specs = scenario.stack.layers.active()
    stack = Stack(policy, scenario.stack.slate_size)
    stack.hook_timeout = scenario.stack.policy.timeout
    if is_oracle(policy):
        stack.truth = world
    kinds = {
        name: _layer_kind(name, spec, policy, world, stack, streams.integer_seed(f"kind:{name}"))
        for name, spec in specs.items()
    }
    kinds = {name: kind for name, kind in kinds.items() if kind is not None}
    common = scenario.stack.warm.mode == "common" and scenario.warmup > 0
    warmup_only = set()
    if common and "retrain" not in kinds and callable(getattr(policy, "fit", None)):
        # The common warm-up's logging policy is refit whatever the variant's layers: with the
        # retrain off, the model fitted on the warm-up log serves unchanged while measuring.
        specs = {"retrain": RetrainLayer(), **specs}
        kinds = {"retrain": PolicyFit(policy, stack.policy_name, stack.hook_timeout), **kinds}
        warmup_only.add("retrain")
        notes.append(
            "layer 'retrain' is off: the model fitted on the warm-up log serves unchanged while "
            "measuring"
        )
    for name in kinds:
        stack.add_layer(name)
    delayed = scenario.logging is not None and scenario.logging.active
    log = EventLog(
        layers=tuple(kinds),
        on_disk=event_log_on_disk(scenario),
        directory=scratch,
        # its own stream: a scenario without label delays draws exactly as before
        labels=LabelPipeline(scenario.logging) if delayed else None,  # type: ignore[arg-type]
        rng=streams.generator("label_delays") if delayed else None,
        control_rng=streams.generator("label_delays:controls") if delayed else None,
    )

    items_at_start = world.catalog_view().n_items
    env = simpy.Environment()
    world.start(env)
    probes: list[ProbeRecord] = []
    # scheduled in both twins alike, so that they serve the same windows
    start_probes(
        env,
        scenario,
        log,
        world.catalog_view,
        world.n_users,
        streams.generator,
        probes,
        stack.publish,
    )
    layers: list[LayerRuntime] = []
    if common:
        # scheduled before any layer's trigger at the same instant, and before serving (LATE)
        env.process(_bootstrap(env, layers, scenario.warmup))
    for name, kind in kinds.items():
        runtime = LayerRuntime(
            name, specs[name], kind, log, world, stack.publish, streams.generator(f"layer:{name}")
        )
        if runtime.canary_users is not None:
            stack.set_canary_users(name, runtime.canary_users)
        if callable(getattr(kind, "serve", None)):
            stack.set_serve_hook(name, kind.serve)
        if scenario.stack.frozen_after_warmup or name in warmup_only:
            runtime.frozen_from = scenario.warmup
        spec = specs[name]
        if common:
            runtime.active_from = scenario.warmup
            if name == "retrain":
                runtime.warmup_refit_every = scenario.stack.warm.refit_every
        elif spec.warm_start and not kind.incremental and scenario.warmup > spec.compute_time:
            runtime.warm_start_at = scenario.warmup - spec.compute_time
        runtime.start(env)
        layers.append(runtime)
    return Assembly(env, world, stack, log, layers, notes, probes, items_at_start)


def _bootstrap(env: simpy.Environment, layers: list[LayerRuntime], at: float) -> Any:
    """At the end of a common warm-up, every layer's starting state from the warm-up log: the
    retrain first, so that near-line embeddings fold into the model that will serve."""
    yield env.timeout(at)
    for layer in sorted(layers, key=lambda runtime: runtime.name != "retrain"):
        layer.bootstrap(env.now)


def _run(
    scenario: Scenario,
    on_progress: Callable[[float], None] | None,
    scratch: str | Path | None,
) -> RunResult:
    started = wallclock.perf_counter()
    parts = assemble(scenario, scratch)
    env, world, stack, log, layers = parts.env, parts.world, parts.stack, parts.log, parts.layers
    notes = parts.notes
    specs = scenario.stack.layers.active()
    tick = scenario.tick_seconds
    engine = Engine(env, world, stack, log, layers, tick, scenario.end, on_progress)
    engine.start()
    env.run(until=scenario.end)
    wall = wallclock.perf_counter() - started

    events = log.table()
    versions = [version for layer in layers for version in layer.history]
    for layer in layers:
        unchanged = layer.unchanged_note(scenario.warmup)
        if unchanged is not None:
            notes.append(unchanged)
    if scenario.metrics.regret and world.expected_clicks() is None:
        notes.append(
            f"metrics.regret: user model {scenario.world.model.name!r} does not say its expected "
            "clicks (it overrides react, not expected_slate_clicks): regret is not measured"
        )
    summary = _summary(scenario, world, engine, events, wall, notes, parts.items_at_start)
    summary["layers"] = {layer.name: _layer_summary(layer, scenario) for layer in layers}
    deletions = deletion_delays(parts.probes, layers, scenario.end)
    if deletions:
        summary["deletions"] = deletions
    summary["wall_seconds_by_component"].update(
        {f"layer:{layer.name}": round(layer.wall_seconds, 4) for layer in layers}
    )
    if any(spec.continuous or spec.after_events or spec.on_drift for spec in specs.values()):
        # Continuous updates and event-count or drift triggers act at window starts: an event
        # can wait up to one tick beyond its latency. Periodic layers stay exact.
        summary["timing_error_bound_seconds"] = tick
    items = world.items()
    return RunResult(
        scenario=scenario,
        summary=summary,
        events=events,
        item_topic=items.topic,
        item_creator=items.creator,
        churned_at=world.churned_at,
        canary_users={
            layer.name: layer.canary_users for layer in layers if layer.canary_users is not None
        },
        versions=versions,
        affected=world.affected,
        item_created_at=items.created_at,
        session_starts=world.session_start_times(),
        expected_clicks=world.expected_clicks(),
        absorption={layer.name: layer.absorption() for layer in layers},
        probes=parts.probes,
    )


def _layer_summary(layer: LayerRuntime, scenario: Scenario) -> dict[str, Any]:
    spec = layer.spec
    trigger = (
        f"every {format_duration(spec.every)}"
        if spec.every
        else f"after {spec.after_events} events"
        if spec.after_events
        else "on drift"
        if spec.on_drift
        else "continuous"
    )
    if layer.name not in scenario.stack.layers.active():
        trigger = "none: the warm-up's model serves unchanged"
    updates = {v.version for v in layer.history if v.origin == "update"}
    # what measuring cost: updates triggered in the measured period, per measured day, with
    # those still computing at the end (their compute is spent)
    measured = sum(v.cost for v in layer.history if v.triggered_at >= scenario.warmup)
    unfinished, unfinished_cost = layer.unfinished_cost(scenario.warmup)
    _, unfinished_total = layer.unfinished_cost()
    describe = getattr(layer.state, "describe", None)
    return {
        **(describe() if callable(describe) else {}),
        "trigger": trigger,
        "latency_seconds": spec.latency,
        "compute_time_seconds": spec.compute_time,
        "updates": len(updates),
        "warmup_versions": sum(v.origin != "update" for v in layer.history),
        "unfinished_updates": unfinished,
        "cost_units": round(layer.cost_units + unfinished_total, 6),
        "cost_units_per_day": round(
            (measured + unfinished_cost) / (scenario.duration / 86400.0), 6
        ),
    }


def _diagnostics(policy: Any) -> dict[str, Any]:
    """What the policy reports about itself (its optional ``diagnostics()``), else nothing."""
    diagnostics = getattr(policy, "diagnostics", None)
    return diagnostics() if callable(diagnostics) else {}


def _summary(
    scenario: Scenario,
    world: UserModel,
    engine: Engine,
    events: EventTable,
    wall: float,
    notes: list[str],
    items_at_start: int,
) -> dict[str, Any]:
    start = scenario.warmup
    first = int(np.searchsorted(events.time, start, side="left"))  # the log is in time order
    counts = np.zeros(len(Kind), np.int64)
    requests, dwell = 0, 0.0
    for rows in row_chunks(events.time[first:]):  # bounded memory, however long the log
        measured = slice(first + rows.start, first + rows.stop)
        kind = events.kind[measured]
        counts += np.bincount(kind, minlength=len(Kind))
        requests += int(np.count_nonzero(events.position[measured] == 0))
        dwell += float(events.dwell[measured][kind == Kind.CLICK].sum(dtype=np.float64))
    impressions = int(counts.sum() - counts[Kind.ABANDON])
    clicks = int(counts[Kind.CLICK])
    sessions = int((world.session_start_times() >= start).sum())
    abandoned = int(counts[Kind.ABANDON])
    churned = int(((world.churned_at >= start) & np.isfinite(world.churned_at)).sum())
    missing: dict[str, str] = {}

    def ratio(name: str, numerator: float, denominator: float, reason: str) -> float | None:
        if denominator <= 0:
            missing[name] = reason
            return None
        return round(numerator / denominator, 6)

    no_impressions = "no impressions in the measured period"
    path, limit = scenario.fastest_feedback_path()
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "policy": scenario.stack.policy.name,
        "policy_is_oracle": is_oracle(engine.stack.policy),
        "policy_diagnostics": _diagnostics(engine.stack.policy),
        "users": world.n_users,
        "items_at_start": items_at_start,
        "items_at_end": world.catalog_view().n_items,
        "warm_mode": scenario.stack.warm.mode if scenario.warmup > 0 else "none (no warm-up)",
        "measured_from_seconds": start,
        "measured_to_seconds": scenario.end,
        "simulated": format_duration(scenario.duration),
        "requests": requests,
        "impressions": impressions,
        "clicks": clicks,
        "ctr": ratio("ctr", clicks, impressions, no_impressions),
        "mean_dwell_seconds": ratio(
            "mean_dwell_seconds", dwell, clicks, "no clicks in the measured period"
        ),
        "negatives": {Kind(code).name.lower(): int(counts[code]) for code in NEGATIVE_KINDS},
        "explicit_negative_rate": ratio(
            "explicit_negative_rate",
            int(sum(counts[code] for code in EXPLICIT_NEGATIVE_KINDS)),
            impressions,
            no_impressions,
        ),
        "sessions": sessions,
        "abandoned_sessions": abandoned,
        "abandon_rate": ratio("abandon_rate", abandoned, sessions, "no sessions measured"),
        "churned_users": churned,
        "churn_rate": ratio("churn_rate", churned, world.n_users, "no users"),
        "tick_seconds": engine.tick,
        "tick_limited_by": f"{path} ({format_duration(limit)})",
        # Windows never exceed the fastest feedback path and every release ends a window, so
        # batching delays no state change: the bound is exact, not an estimate.
        "timing_error_bound_seconds": 0.0,
        "windows": engine.windows,
        "wall_seconds": round(wall, 3),
        "event_log": "disk" if event_log_on_disk(scenario) else "memory",
        "requests_per_second": round(engine.requests / wall, 1) if wall > 0 else None,
        "wall_seconds_by_component": {name: round(v, 4) for name, v in engine.wall.items()},
        "interventions": [event.name for event in scenario.interventions],
        "exposure_horizon_seconds": scenario.metrics.exposure_horizon,
        "missing": missing,
        "notes": notes,
    }
