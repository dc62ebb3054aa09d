"""A conformance suite for a user model class, to run on your own before a sweep.

>>> from users.world import SimulatedWorld
>>> report = check_user_model(SimulatedWorld)
>>> report.ok
True

``check_user_model`` runs the model in small simulations, served by a policy whose slates depend
only on each request (so that any difference between runs is the model's), and checks what a
sweep relies on: it constructs from validated parameters, answers every slate in the shapes and
codes the event log holds (the engine checks each response at the boundary), is deterministic
under a seed, gives the same answers whatever the serving window (batching changes speed, not
answers), and never reads the future (what users did before an intervention does not change when
the world changes after it). It never raises for a failing model: the report lists each check
with the reason it failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.domain import CatalogView, Kind, Requests, View
from sim.scenario.plugins import CheckReport

__all__ = ["check_user_model", "RequestPolicy"]

#: The small world the checks run in (users, items, hours); a second or two per run.
CHECK_WORLD: dict[str, Any] = {
    "users": {"count": 300, "sessions_per_day": {"median": 8}},
    "catalog": {"items": 200, "topics": 5, "creators": 30, "dim": 8, "new_items_per_day": 40},
}
#: The intervention of the "never reads the future" check, and when.
FUTURE_AT = 5400.0
#: A serving window shorter than the default (``gap_min``, 10 s): batching must not matter.
SHORT_TICK = "3s"


class RequestPolicy:
    """Serves each request a slate fixed by its user and the hour: no state, no randomness, so
    that two runs differ only by what the user model did."""

    def __init__(self, params: Any = None, seed: int = 0):
        self.params = params

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        catalog: CatalogView = view.catalog
        hour = (requests.times // 3600).astype(np.int64)
        first = (requests.users.astype(np.int64) * 7919 + hour * 104_729) % catalog.n_items
        return (first[:, None] + np.arange(requests.k)) % catalog.n_items


def check_user_model(
    cls: type,
    params: dict[str, Any] | None = None,
    *,
    target: str | None = None,
    world: dict[str, Any] | None = None,
) -> CheckReport:
    """Run the conformance checks on user model class ``cls`` with ``params``.

    ``target`` is how a scenario names it (default ``module:QualifiedName`` of ``cls``);
    ``world`` replaces sections (``users``, ``catalog``, ``behavior``) of the small world the
    checks run in, e.g. ``{"catalog": {"table": "items.csv"}}`` for a model that reads a table.
    """
    from sim.scenario.loader import apply_override, parse_scenario
    from sim.serving.runner import run_scenario
    from users.registry import check_world, make_user_model

    target = target or f"{cls.__module__}:{cls.__qualname__}"
    report = CheckReport("check_user_model", target)
    base = {
        "name": "check-user-model",
        "seed": 11,
        "duration": "2h",
        "warmup": "30m",
        "world": {
            **CHECK_WORLD,
            **(world or {}),
            "model": {"name": target, "params": params or {}},
        },
        "stack": {"slate_size": 5, "policy": f"{__name__}:RequestPolicy"},
    }

    def scenario(*overrides: str) -> Any:
        data = base
        for override in overrides:
            data = apply_override(data, override)
        return parse_scenario(data, "check_user_model")

    runs: dict[str, Any] = {}

    def constructs() -> str | None:
        from sim.serving.rng import Streams

        check_world(scenario())
        model = make_user_model(scenario(), Streams(11))
        if model.n_users < 1 or model.catalog_view().n_items < 5:
            return "no users, or fewer live items than a slate"
        return None

    def answers() -> str | None:
        runs["a"] = run_scenario(scenario())
        events = runs["a"].events
        if not (events.position == 0).any():
            return "no request was served"
        if not (events.kind == Kind.CLICK).any():
            return "no impression was ever clicked"
        return None

    def deterministic() -> str | None:
        if "a" not in runs:
            return "skipped: the model does not answer"
        if not _same_events(runs["a"], run_scenario(scenario())):
            return "two runs with the same seed logged different events"
        return None

    def batching() -> str | None:
        if "a" not in runs:
            return "skipped: the model does not answer"
        if not _same_events(runs["a"], run_scenario(scenario(f"tick={SHORT_TICK}"))):
            return (
                f"a serving window of {SHORT_TICK} logged other events than the default's: "
                "answers must depend on each request's own draws (block.slot_uniform, "
                "block.slot_normal), not on how requests are batched"
            )
        return None

    def causal() -> str | None:
        if "a" not in runs:
            return "skipped: the model does not answer"
        changed = scenario(
            f"interventions=[{{kind: topic_aversion, at: {FUTURE_AT:g}s, topic: 0, users: 1, "
            "among: all, strength: 50}]"
        )
        try:
            check_world(changed)
        except Exception as error:  # a model that refuses utility changes (a table world)
            return None if "topic_aversion" in str(error) else str(error)
        after = run_scenario(changed).events
        before = runs["a"].events
        a, b = before.time < FUTURE_AT, after.time < FUTURE_AT
        if a.sum() != b.sum() or not all(
            np.array_equal(getattr(before, name)[a], getattr(after, name)[b])
            for name in ("user", "item", "kind", "dwell")
        ):
            return (
                "users answered differently before a change in the world than when the world "
                "does not change: the model acts on an intervention before its time"
            )
        return None

    report.run("constructs from validated params", constructs)
    report.run("answers every slate in the event log's shapes and codes", answers)
    report.run("is deterministic under a seed", deterministic)
    report.run("batching changes speed, not answers", batching)
    report.run("never reads the future", causal)
    return report


def _same_events(first: Any, second: Any) -> bool:
    a, b = first.events.columns(), second.events.columns()
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)
