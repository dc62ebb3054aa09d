"""A conformance suite for a layer class, to run on your own before a sweep.

>>> from sim.serving.layers.session_context import SessionContextStore
>>> report = check_layer(SessionContextStore)
>>> report.ok
True

``check_layer`` runs the layer in a small simulation, served by the embedding policy with a
retrain, and checks what a sweep relies on: it constructs from validated parameters through the
registry, as a scenario names it; it is causal (no event reaches its ``compute`` or ``absorb``
before ``time + latency``, and none after the trigger); its versions are recorded (each one's
horizon, live time and input window agree with its trigger, latency and compute time, and every
event was served by a recorded version already live); and it is deterministic under a seed (two
runs give the same versions and the same event log). It never raises for a failing layer: the
report lists each check with the reason it failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.scenario.plugins import CheckReport

__all__ = ["check_layer", "CheckReport"]

#: The small world the checks run in (users, items, hours); a few seconds per run.
CHECK_SCENARIO: dict[str, Any] = {
    "name": "check-layer",
    "seed": 11,
    "duration": "3h",
    "world": {
        "users": {"count": 300, "sessions_per_day": {"median": 6}},
        "catalog": {"items": 200, "topics": 5, "creators": 30, "dim": 8, "new_items_per_day": 40},
    },
    "stack": {"slate_size": 5, "policy": "embedding"},
}
#: The layer's timing in the checks: a latency to respect, and a trigger that fires often.
BATCH = {"every": "20m", "latency": "5m", "compute_time": "2m"}
INCREMENTAL = {"continuous": True, "latency": "5m"}
#: Slack for a time recomputed from simulated times (seconds).
TOLERANCE = 1e-6


def check_layer(
    cls: type,
    params: dict[str, Any] | None = None,
    *,
    target: str | None = None,
    layer: dict[str, Any] | None = None,
) -> CheckReport:
    """Run the conformance checks on layer class ``cls`` with ``params``.

    ``target`` is how a scenario names it (default ``module:QualifiedName`` of ``cls``; a
    built-in is named by its key in ``stack.layers``); ``layer`` overrides its timing in the
    checks (trigger, latency, compute time).
    """
    from sim.scenario.loader import parse_scenario
    from sim.serving.layers.registry import BUILTIN

    builtin = BUILTIN.get(getattr(cls, "name", "")) is cls
    key = cls.name if builtin else "checked"  # type: ignore[attr-defined]
    target = target or (key if builtin else f"{cls.__module__}:{cls.__qualname__}")
    report = CheckReport("check_layer", target)
    timing = {**(INCREMENTAL if getattr(cls, "incremental", True) else BATCH), **(layer or {})}
    section = (
        {**timing, **(params or {})}
        if builtin
        else {"name": target, "params": params or {}, **timing}
    )
    layers = {key: section}
    if key != "retrain":  # a model to serve and fold into
        layers = {"retrain": {"every": "30m", "latency": "1m"}, **layers}
    data = {**CHECK_SCENARIO, "stack": {**CHECK_SCENARIO["stack"], "layers": layers}}
    runs: list[tuple[Any, Any, list[str]]] = []

    def constructs() -> str | None:
        scenario = parse_scenario(data, "check_layer")
        runs.append(_watched_run(scenario, key))
        return None

    def causal() -> str | None:
        if not runs:
            return "not checked: it does not construct"
        late = runs[0][2]
        return f"{len(late):,} reads before time + latency; first: {late[0]}" if late else None

    def versions_recorded() -> str | None:
        if not runs:
            return "not checked: it does not construct"
        events, history, _ = runs[0]
        spec = parse_scenario(data, "check_layer").stack.layers.active()[key]
        return _versions_problem(events, history, key, spec)

    def deterministic() -> str | None:
        if not runs:
            return "not checked: it does not construct"
        runs.append(_watched_run(parse_scenario(data, "check_layer"), key))
        (first, before, _), (second, after, _) = runs[0], runs[-1]
        rows = [[_without_wall(v) for v in history] for history in (before, after)]
        if rows[0] != rows[1]:
            return "two runs with the same seed recorded different versions"
        for name, column in first.columns().items():
            if not np.array_equal(column, second.columns()[name]):
                return f"two runs with the same seed logged different events ({name})"
        return None

    report.run("constructs from validated parameters", constructs)
    report.run("causal: reads no event before time + latency", causal)
    report.run("records its versions", versions_recorded)
    report.run("deterministic under a seed", deterministic)
    return report


def _watched_run(scenario: Any, key: str) -> tuple[Any, list[Any], list[str]]:
    """Run ``scenario`` with layer ``key``'s reads watched: its event log, its version history,
    and every read of an event it could not see yet."""
    from sim.serving.engine import Engine
    from sim.serving.runner import assemble

    parts = assemble(scenario)
    runtime = next(layer for layer in parts.layers if layer.name == key)
    late: list[str] = []
    _watch(runtime, late)
    engine = Engine(
        parts.env,
        parts.world,
        parts.stack,
        parts.log,
        parts.layers,
        scenario.tick_seconds,
        scenario.end,
    )
    engine.start()
    parts.env.run(until=scenario.end)
    return parts.log.table(), runtime.history, late


def _watch(runtime: Any, late: list[str]) -> None:
    """Check every event ``runtime`` hands its kind against what an update triggered at ``now``
    may see: an event at time t is visible when ``t + latency < now``. A batch kind's input is
    its ``compute`` call's; an incremental kind absorbs what the runtime took at the trigger."""
    latency = runtime.spec.latency

    def check(times: np.ndarray, now: float) -> None:
        seen = np.flatnonzero(times >= now - latency)
        if seen.shape[0]:
            late.append(
                f"an event at {float(times[seen[0]]):.3f}s read by an update triggered at "
                f"{now:.3f}s, latency {latency:g}s"
            )

    kind, take_new = runtime.kind, runtime._take_new

    class Watched:
        def __getattr__(self, name: str) -> Any:
            return getattr(kind, name)

        def compute(self, data: Any) -> Any:
            check(data.events.time, data.now)
            return kind.compute(data)

    def taken(now: float) -> Any:
        start, since, events = take_new(now)
        check(events.time, now)
        return start, since, events

    runtime.kind = Watched()
    runtime._take_new = taken


def _versions_problem(events: Any, history: list[Any], key: str, spec: Any) -> str | None:
    """Why the version records of layer ``key`` disagree with its timing or with the versions
    that served the events, or None."""
    if not history:
        return "it published no version in the check's 3 hours"
    for version in history:
        if version.horizon > version.triggered_at - spec.latency + TOLERANCE:
            return f"version {version.version} covers events past its trigger minus latency"
        if version.live_at < version.triggered_at + spec.compute_time - TOLERANCE:
            return f"version {version.version} went live before its compute time had passed"
        if version.since > version.horizon:
            return f"version {version.version}'s input starts after its horizon"
    live: dict[int, float] = {}
    for version in history:
        live[version.version] = min(live.get(version.version, np.inf), version.live_at)
    served, times = events.versions[key], events.time
    for number in np.unique(served[served > 0]).tolist():
        first = float(times[served == number].min())
        if number not in live:
            return f"events were served by version {number}, which no version record has"
        if first < live[number] - TOLERANCE:
            return f"version {number} served an event at {first:.3f}s, before it went live"
    return None


def _without_wall(version: Any) -> dict[str, Any]:
    row = version.as_row()
    row.pop("wall_seconds")
    return row
