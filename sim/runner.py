"""The composition root: the only module that wires ``users`` and ``policies`` together.

``run_scenario`` builds the world, the stack and its layers on a SimPy environment from one
validated scenario and one seed, runs it to the end, and returns a :class:`RunResult`.
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy
import torch
from threadpoolctl import threadpool_limits

from policies.registry import make_policy
from sim.domain import EXPLICIT_NEGATIVE_KINDS, NEGATIVE_KINDS, EventTable, Kind
from sim.durations import format_duration
from sim.engine import Engine
from sim.eventlog import EventLog
from sim.layers import PeriodicRetrain, Version
from sim.rng import Streams
from sim.spec import Scenario
from sim.stack import Stack
from users.world import SimulatedWorld

__all__ = ["RunResult", "run_scenario", "check_scenario", "build_policy"]


@dataclass
class RunResult:
    """Everything one run produced, before it is written anywhere."""

    scenario: Scenario
    summary: dict[str, Any]
    events: EventTable
    item_topic: np.ndarray  # topic of every item that existed, to label events
    item_creator: np.ndarray
    churned_at: np.ndarray  # per user: simulated time they quit, inf if they stayed
    versions: list[Version] = field(default_factory=list)


def build_policy(scenario: Scenario, streams: Streams | None = None) -> Any:
    """The scenario's policy with validated parameters, seeded from the ``policy`` stream."""
    streams = streams or Streams(scenario.seed)
    spec = scenario.stack.policy
    return make_policy(spec.name, spec.params, seed=streams.integer_seed("policy"))


def check_scenario(scenario: Scenario) -> list[str]:
    """Checks that need the policy (it resolves, its parameters validate); returns notes."""
    return _notes(scenario, build_policy(scenario))


def _notes(scenario: Scenario, policy: Any) -> list[str]:
    notes = []
    retrain = scenario.stack.layers.retrain
    if retrain is not None and retrain.enabled and not callable(getattr(policy, "fit", None)):
        notes.append(
            f"policy {scenario.stack.policy.name!r} has no fit hook: layer 'retrain' will not "
            f"update it"
        )
    return notes


def run_scenario(
    scenario: Scenario, on_progress: Callable[[float], None] | None = None
) -> RunResult:
    """Run ``scenario`` once with its own seed, on one core.

    ``on_progress`` is called with the simulated time after each served window.
    """
    # Serving is many small array operations: BLAS and torch thread pools spinning against each
    # other on them made runs 5x slower on 2 cores. One run uses one core; sweeps parallelize
    # across runs. A single thread also keeps floating-point results bitwise reproducible.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return _run(scenario, on_progress)
    finally:
        torch.set_num_threads(threads)


def _run(scenario: Scenario, on_progress: Callable[[float], None] | None) -> RunResult:
    started = wallclock.perf_counter()
    streams = Streams(scenario.seed)
    policy = build_policy(scenario, streams)
    notes = _notes(scenario, policy)
    world = SimulatedWorld(scenario, streams)

    retrain_spec = scenario.stack.layers.retrain
    retrain_on = (
        retrain_spec is not None and retrain_spec.enabled and callable(getattr(policy, "fit", None))
    )
    layer_names = ("retrain",) if retrain_on else ()
    log = EventLog(layers=layer_names)
    stack = Stack(policy, scenario.stack.slate_size, layer_names)

    env = simpy.Environment()
    world.start(env)
    layers = []
    if retrain_on:
        assert retrain_spec is not None
        layer = PeriodicRetrain(retrain_spec, stack, log, world, streams.generator("layer:retrain"))
        layer.start(env)
        layers.append(layer)
    tick = scenario.tick_seconds
    engine = Engine(env, world, stack, log, tick, scenario.end, on_progress)
    engine.start()
    env.run(until=scenario.end)
    wall = wallclock.perf_counter() - started

    events = log.table()
    versions = [version for layer in layers for version in layer.history]
    summary = _summary(scenario, world, engine, events, versions, wall, notes)
    summary["wall_seconds_by_component"].update(
        {f"layer:{layer.name}": round(layer.wall_seconds, 4) for layer in layers}
    )
    return RunResult(
        scenario=scenario,
        summary=summary,
        events=events,
        item_topic=world.catalog.topic,
        item_creator=world.catalog.creator,
        churned_at=world.churned_at,
        versions=versions,
    )


def _summary(
    scenario: Scenario,
    world: SimulatedWorld,
    engine: Engine,
    events: EventTable,
    versions: list[Version],
    wall: float,
    notes: list[str],
) -> dict[str, Any]:
    start = scenario.warmup
    measured = events.time >= start
    kind = events.kind[measured]
    counts = np.bincount(kind, minlength=len(Kind))
    impressions = int(measured.sum() - counts[Kind.ABANDON])
    clicks = int(counts[Kind.CLICK])
    sessions = int((world.session_start_times() >= start).sum())
    abandoned = int(counts[Kind.ABANDON])
    churned = int(((world.churned_at >= start) & np.isfinite(world.churned_at)).sum())
    requests = int((events.position[measured] == 0).sum())
    dwell = events.dwell[measured][kind == Kind.CLICK]
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
        "users": world.n_users,
        "items_at_start": scenario.world.catalog.items,
        "items_at_end": world.catalog.n_live,
        "measured_from_seconds": start,
        "measured_to_seconds": scenario.end,
        "simulated": format_duration(scenario.duration),
        "requests": requests,
        "impressions": impressions,
        "clicks": clicks,
        "ctr": ratio("ctr", clicks, impressions, no_impressions),
        "mean_dwell_seconds": ratio(
            "mean_dwell_seconds",
            float(dwell.sum()),
            dwell.shape[0],
            "no clicks in the measured period",
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
        "layers": {
            "retrain": {
                "versions": sum(1 for v in versions if v.layer == "retrain"),
                "last_live_at_seconds": max(
                    (v.live_at for v in versions if v.layer == "retrain"), default=None
                ),
            }
        }
        if versions
        else {},
        "tick_seconds": engine.tick,
        "tick_limited_by": f"{path} ({format_duration(limit)})",
        # Windows never exceed the fastest feedback path and every release ends a window, so
        # batching delays no state change: the bound is exact, not an estimate.
        "timing_error_bound_seconds": 0.0,
        "windows": engine.windows,
        "wall_seconds": round(wall, 3),
        "requests_per_second": round(engine.requests / wall, 1) if wall > 0 else None,
        "wall_seconds_by_component": {name: round(v, 4) for name, v in engine.wall.items()},
        "missing": missing,
        "notes": notes,
    }
