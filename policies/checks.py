"""A conformance suite for a policy class, to run on your own before a sweep.

>>> from policies.builtin import RandomPolicy
>>> report = check_policy(RandomPolicy)
>>> report.ok
True

``check_policy`` runs the policy in small simulations and checks what a sweep relies on: it
constructs from validated parameters and clones, returns ``k`` distinct live items per request
(the serving boundary checks every slate), is deterministic under a seed, never reads the future
(what it served before an intervention does not change when the world changes after it), and
its hooks (``fit``, ``refresh``) run on the layers' data and return models ``rank`` accepts. It
never raises for a failing policy: the report lists each check with the reason it failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.scenario.plugins import CheckReport

__all__ = ["check_policy", "CheckReport"]

#: The small world the checks run in (users, items, hours); a few seconds per run.
CHECK_SCENARIO: dict[str, Any] = {
    "name": "check-policy",
    "seed": 11,
    "duration": "2h",
    "warmup": "1h",
    "world": {
        "users": {"count": 300, "sessions_per_day": {"median": 6}},
        "catalog": {"items": 200, "topics": 5, "creators": 30, "dim": 8, "new_items_per_day": 40},
    },
    "stack": {"slate_size": 5},
}
#: The intervention of the "never reads the future" check.
FUTURE_AT = 7200.0


def check_policy(
    cls: type, params: dict[str, Any] | None = None, *, target: str | None = None
) -> CheckReport:
    """Run the conformance checks on policy class ``cls`` with ``params``.

    ``target`` is how a scenario names it (default ``module:QualifiedName`` of ``cls``).
    """
    from sim.scenario.loader import apply_override, parse_scenario
    from sim.serving.runner import build_policy, run_scenario

    target = target or f"{cls.__module__}:{cls.__qualname__}"
    report = CheckReport("check_policy", target)
    layers: dict[str, Any] = {}
    if callable(getattr(cls, "fit", None)):
        layers["retrain"] = {"every": "20m", "latency": "1m", "compute_time": "2m"}
    if callable(getattr(cls, "refresh", None)):
        layers["nearline_embeddings"] = {"every": "10m"}
    base = {
        **CHECK_SCENARIO,
        "stack": {
            **CHECK_SCENARIO["stack"],
            "policy": {"name": target, "params": params or {}},
            "layers": layers,
        },
    }

    def scenario(*overrides: str) -> Any:
        data = base
        for override in overrides:
            data = apply_override(data, override)
        return parse_scenario(data, "check_policy")

    runs: dict[str, Any] = {}

    def constructs() -> str | None:
        policy = build_policy(scenario())
        clone = getattr(policy, "clone", None)
        if callable(clone):
            copy = clone()
            if type(copy) is not type(policy) or getattr(copy, "params", None) != getattr(
                policy, "params", None
            ):
                return "clone() does not give the same class with the same params"
        return None

    def serves() -> str | None:
        runs["a"] = run_scenario(scenario())
        events = runs["a"].events
        if not (events.position == 0).any():
            return "no request was served"
        return None

    def deterministic() -> str | None:
        if "a" not in runs:
            return "skipped: the policy does not serve"
        again = run_scenario(scenario())
        first, second = runs["a"].events, again.events
        if len(first) != len(second) or not np.array_equal(first.item, second.item):
            return "two runs with the same seed served different slates"
        return None

    def causal() -> str | None:
        if "a" not in runs:
            return "skipped: the policy does not serve"
        changed = run_scenario(
            scenario(
                f"interventions=[{{kind: topic_aversion, at: {FUTURE_AT:g}s, topic: 0, users: 1, "
                "among: all, strength: 50}]"
            )
        )
        before_a = runs["a"].events.time < FUTURE_AT
        before_b = changed.events.time < FUTURE_AT
        if not np.array_equal(runs["a"].events.item[before_a], changed.events.item[before_b]):
            return (
                "slates served before a change in the world differ from those served when the "
                "world does not change: the policy reads something it should not"
            )
        return None

    def hooks() -> str | None:
        if "a" not in runs:
            return "skipped: the policy does not serve"
        result = runs["a"]
        for layer in layers:
            versions = [v for v in result.versions if v.layer == layer]
            if not versions:
                return f"the {layer} layer published no version"
        return None

    report.run("constructs from validated params and clones", constructs)
    report.run("returns k distinct live items per request", serves)
    report.run("is deterministic under a seed", deterministic)
    report.run("never reads the future", causal)
    report.run("hooks (fit, refresh) run and their models serve", hooks)
    return report
