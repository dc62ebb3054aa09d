"""Planning a sweep: a scenario's variants × replications as runs, before any of them runs.

Every scenario is a sweep: without ``variants`` it has one variant, ``default``. A variant is the
scenario with its overrides applied (``variants.grid`` or ``variants.cases``), validated before
anything runs; the ``frozen`` and ``instant`` bounds are added when ``bounds`` asks for them.
Replication ``r`` runs every variant with the same root seed (the scenario's own for ``r = 0``),
so variants share users, items, arrivals and response noise and their differences are paired.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sim.errors import ScenarioError
from sim.scenario.durations import format_duration
from sim.scenario.loader import drop_other_policys_params, parse_scenario, set_path
from sim.scenario.spec import RESERVED_LABELS, AdaptiveReplications, Scenario
from sim.serving.rng import Streams

__all__ = [
    "RunPlan",
    "RunOutcome",
    "Progress",
    "plan_runs",
    "planned_replications",
    "grid_levels",
    "variant_overrides",
    "describe_plan",
]

#: Scenario keys that describe the sweep rather than one run.
SWEEP_KEYS = ("variants", "baseline", "replications", "bounds")
DEFAULT_LABEL = "default"


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: which variant, which replication, its scenario and directory."""

    variant: str
    replication: int
    scenario: Scenario
    folder: str  # relative to the results directory
    #: The twin of a run with probes: the same run without the probe users' controls
    twin: bool = False


class Progress(Protocol):
    """Where a single run reports how far it has got (the command line's bar or lines)."""

    def update(self, now: float) -> None:
        """Served up to ``now``, in simulated seconds."""

    def phase(self, step: str) -> None:
        """Serving is over and ``step`` (measuring a metric, writing the results) has begun."""


@dataclass
class RunOutcome:
    """What a finished (or failed) run reports back: one ``runs.parquet`` row."""

    plan: RunPlan
    row: dict[str, Any]
    missing: dict[str, str]
    error: str | None = None


def _base_data(scenario: Scenario) -> dict[str, Any]:
    data = scenario.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return {key: value for key, value in data.items() if key not in SWEEP_KEYS}


def _label(path: str, value: Any) -> str:
    parts = path.split(".")
    name = ".".join(parts[-2:])
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"{name}={shown}"


def variant_overrides(scenario: Scenario) -> list[tuple[str, dict[str, Any], str]]:
    """(label, overrides, where) of every declared variant, in order."""
    variants = scenario.variants
    if variants is None:
        return [(DEFAULT_LABEL, {}, "scenario")]
    if variants.cases:
        return [
            (case.label, dict(case.overrides), f"variants.cases.{index}")
            for index, case in enumerate(variants.cases)
        ]
    return [
        (label, {path: value for _, path, value in cell}, "variants.grid")
        for label, cell in _grid_cells(variants.grid)
    ]


def _grid_cells(grid: dict[str, Any]) -> list[tuple[str, tuple[tuple[str, str, Any], ...]]]:
    """Every combination of the grid's axes: its label and its (level label, path, value) per
    axis, in declared order."""
    axes = []
    for path, values in grid.items():
        if isinstance(values, dict):
            axes.append([(str(label), path, value) for label, value in values.items()])
        else:
            axes.append([(_label(path, value), path, value) for value in values])
    return [(" · ".join(part for part, _, _ in cell), cell) for cell in itertools.product(*axes)]


def grid_levels(scenario: Scenario) -> dict[str, dict[str, str]]:
    """Each grid variant's level label per axis (keyed by the axis's path), from the same
    planning as its label, so that nothing parses labels; empty without a ``variants.grid``."""
    if scenario.variants is None or not scenario.variants.grid:
        return {}
    return {
        label: {path: part for part, path, _ in cell}
        for label, cell in _grid_cells(scenario.variants.grid)
    }


def plan_runs(scenario: Scenario) -> tuple[list[str], str, list[RunPlan]]:
    """Variant labels (declared, then the bounds), the baseline label, and every run.

    Raises :class:`ScenarioError` naming the variant when one does not validate.
    """
    base = _base_data(scenario)
    declared = variant_overrides(scenario)
    labels = [label for label, _, _ in declared]
    problems = []
    if len(set(labels)) != len(labels):
        problems.append(f"variants: labels must be distinct, got {labels}")
    for label in labels:
        if label in RESERVED_LABELS:
            problems.append(f"variants: label {label!r} is reserved for the bounds")
    variants: dict[str, dict[str, Any]] = {}
    for label, overrides, where in declared:
        data = base
        try:
            for path, value in overrides.items():
                data = set_path(data, path, value, f"{where}: {path}")
            data, _ = drop_other_policys_params(base, data, list(overrides))
            parse_scenario(data, label)
        except ScenarioError as error:
            problems.extend(f"variant {label!r} ({where}): {line}" for line in error.problems)
            continue
        variants[label] = data
    baseline = scenario.baseline or labels[0]
    if baseline not in labels:
        problems.append(f"baseline: {baseline!r} is not a variant; variants: {', '.join(labels)}")
    if isinstance(scenario.replications, AdaptiveReplications) and variants:
        problems += _until_problems(scenario, variants)
    if problems:
        raise ScenarioError(problems)

    bounds = scenario.bounds
    if bounds.frozen:
        variants["frozen"] = set_path(variants[baseline], "stack.frozen_after_warmup", True, "")
    if bounds.instant:
        variants["instant"] = _instant(scenario, variants, baseline)
    all_labels = list(variants)
    plans = []
    for replication in range(planned_replications(scenario)):
        seed = _replication_seed(scenario.seed, replication)
        for index, label in enumerate(all_labels):
            data = dict(variants[label], seed=seed)
            plans.append(
                RunPlan(
                    variant=label,
                    replication=replication,
                    scenario=parse_scenario(data, label),
                    folder=f"variants/{index:02d}-{_slug(label)}/r{replication}",
                )
            )
            if scenario.probes:  # paired with its twin: same seed, the controls withheld
                plans.append(
                    RunPlan(
                        variant=label,
                        replication=replication,
                        scenario=parse_scenario(dict(data, probes_withheld=True), label),
                        folder=f"variants/{index:02d}-{_slug(label)}/r{replication}-twin",
                        twin=True,
                    )
                )
    return all_labels, baseline, plans


def planned_replications(scenario: Scenario) -> int:
    """Replications planned: the count, or an adaptive sweep's ``max``."""
    rule = scenario.replications
    return rule if isinstance(rule, int) else rule.max


def _until_problems(scenario: Scenario, variants: dict[str, dict[str, Any]]) -> list[str]:
    """``replications.until.metric`` must be a ``runs.parquet`` metric of every variant."""
    from sim.measuring.metrics import metric_names

    assert isinstance(scenario.replications, AdaptiveReplications)
    metric = scenario.replications.until.metric
    bounds = scenario.bounds
    extra = ["propagation_efficiency"] if bounds.frozen and bounds.instant else []
    known = {
        label: [*metric_names(parse_scenario(data, label)), *extra]
        for label, data in variants.items()
    }
    lacking = [label for label, names in known.items() if metric not in names]
    where = f"replications.until.metric: {metric!r}"
    if len(lacking) == len(known):
        names = sorted({name for names in known.values() for name in names})
        match = difflib.get_close_matches(metric, names, n=1, cutoff=0.6)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        if metric in ("bad_impressions", "sessions_lost", "churned_exposed_users"):
            hint = " (it is measured after a topic_aversion or item_turns_bad intervention)"
        return [f"{where} is not a runs.parquet metric of this scenario{hint}"]
    if lacking:
        return [f"{where} is not measured in variant(s) {', '.join(map(repr, lacking))}"]
    return []


def _replication_seed(seed: int, replication: int) -> int:
    return seed if replication == 0 else Streams(seed).integer_seed(f"replication:{replication}")


def _instant(scenario: Scenario, variants: dict[str, dict[str, Any]], baseline: str) -> dict:
    """The baseline with every layer of any variant at its fastest: no latency, no compute
    time, immediate rollout; incremental layers at every window, batch layers every
    ``bounds.instant_every`` or their fastest period in any variant, whichever is shorter."""
    layers: dict[str, Any] = {}
    fastest: dict[str, float] = {}
    for label in [baseline, *variants]:
        for name, layer in parse_scenario(variants[label], label).stack.layers.active().items():
            layers.setdefault(name, layer)
            if layer.every:
                fastest[name] = min(fastest.get(name, np.inf), layer.every)
    bound = scenario.bounds.instant_every
    period = scenario.tick_seconds if bound == "tick" else bound
    data = variants[baseline]
    for name, layer in layers.items():
        fast = layer.model_dump(mode="json", by_alias=True)
        fast.update(
            enabled=True,
            latency="0s",
            compute_time="0s",
            rollout="immediate",
            every=None,
            after_events=None,
            on_drift=None,
            continuous=not layer.snapshots,  # state updated in place: at every window
        )
        if layer.snapshots:
            fast.update(every=format_duration(min(period, fastest.get(name, np.inf))), phase="0s")
        data = set_path(data, f"stack.layers.{name}", fast, "bounds.instant")
    return data


def _slug(label: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.=-]+", "-", label).strip("-.")
    return cleaned[:60] or "variant"


def describe_plan(
    labels: list[str],
    plans: list[RunPlan],
    workers: int,
    replications: int | AdaptiveReplications | None = None,
) -> str:
    """One line: variants × replications = runs, how long each, on how many workers; an
    adaptive sweep gives its range of replications and the precision it runs until."""
    scenario = plans[0].scenario
    count = len({plan.replication for plan in plans})
    variants = f"{len(labels)} variant{'s' * (len(labels) != 1)}"
    length = f"{format_duration(scenario.end)} simulated, {workers} worker{'s' * (workers != 1)}"
    if isinstance(replications, AdaptiveReplications):
        until = replications.until
        least = replications.min * len(labels)
        return (
            f"{variants} × {replications.min} to {replications.max} replications (until every "
            f"variant's {until.metric} is within ±{100 * until.relative_half_width:.3g}%, 95% "
            f"interval) = {least} to {len(plans)} runs of {length}"
        )
    return (
        f"{variants} × {count} replication{'s' * (count != 1)} = "
        f"{len(plans)} run{'s' * (len(plans) != 1)} of {length}"
    )
