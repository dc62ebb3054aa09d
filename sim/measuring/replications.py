"""Adaptive replications: paired replications added until every variant is measured precisely.

With ``replications: {min, max, until: {metric, relative_half_width}}`` a sweep runs ``min``
replications, then adds more until every variant's 95% interval on ``metric`` (bounds aside) has
a half-width of at most ``relative_half_width`` × the variant's mean, or ``max`` have run. The
count kept is the smallest ``n`` at which replications ``0 … n-1`` meet the target, whatever the
batches were: runs started beyond it (a batch in flight) are left out, so ``--workers`` and
``--resume`` never change the results.

>>> rows = [{"variant": "a", "replication": r, "x": v} for r, v in enumerate([9.0, 10.0, 11.0])]
>>> reached = precision(rows, ["a"], Precision(metric="x", relative_half_width=0.5), 3)
>>> reached.half_widths, reached.met
({'a': 0.248414}, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sim.measuring.compare import NO_INTERVAL, interval
from sim.scenario.spec import AdaptiveReplications, Precision

__all__ = [
    "Reached",
    "precision",
    "first_met",
    "next_batch",
    "replication_plan",
    "describe",
    "precision_notes",
]


@dataclass(frozen=True)
class Reached:
    """The precision of each variant after ``replications`` replications."""

    replications: int
    until: Precision
    half_widths: dict[str, float | None]  # relative: half-width over |mean|
    reasons: dict[str, str] = field(default_factory=dict)  # why a half-width is None

    @property
    def met(self) -> bool:
        """Every variant's relative half-width is at most the target."""
        target = self.until.relative_half_width
        return all(width is not None and width <= target for width in self.half_widths.values())

    @property
    def worst(self) -> tuple[str, float | None]:
        """The variant furthest from the target (one that cannot be measured first)."""
        for label, width in self.half_widths.items():
            if width is None:
                return label, None
        label = max(self.half_widths, key=lambda name: self.half_widths[name] or 0.0)
        return label, self.half_widths[label]


def precision(
    rows: list[dict[str, Any]], variants: list[str], until: Precision, replications: int
) -> Reached:
    """Relative half-width of each variant's 95% interval on ``until.metric`` over replications
    ``0 … replications-1`` of ``rows`` (``runs.parquet`` rows; a run whose metric is missing, or
    that failed, leaves its replication out of that variant's interval)."""
    widths: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    metric = until.metric
    for label in variants:
        values = [
            float(row[metric])
            for row in rows
            if row["variant"] == label
            and row["replication"] < replications
            and row.get(metric) is not None
        ]
        widths[label] = None
        if not values:
            reasons[label] = f"{metric} was not computed in any run (see missing)"
            continue
        mean, low, high = interval(values)
        if low is None or high is None:
            reasons[label] = f"{NO_INTERVAL} where {metric} was computed"
        elif mean == 0:
            reasons[label] = f"mean {metric} is 0: no relative precision can be reached"
        else:
            widths[label] = round((high - low) / 2 / abs(mean), 6)
    return Reached(replications, until, widths, reasons)


def first_met(
    rows: list[dict[str, Any]],
    variants: list[str],
    rule: AdaptiveReplications,
    after: int,
    done: int,
) -> Reached | None:
    """The precision at the smallest count in ``(after, done]`` (and at least ``rule.min``) that
    meets ``rule.until``; None when none does."""
    for count in range(max(rule.min, after + 1), done + 1):
        reached = precision(rows, variants, rule.until, count)
        if reached.met:
            return reached
    return None


def next_batch(
    done: int, rule: AdaptiveReplications, reached: Reached | None, runs_per_replication: int,
    workers: int,
) -> int:  # fmt: skip
    """How many replications to add next: ``min`` first; then as many as keep the workers busy,
    but no more than the current precision suggests are needed (the half-width shrinks as
    1/√n) and never beyond ``max``."""
    if done < rule.min:
        return rule.min - done
    busy = max(1, math.ceil(workers / runs_per_replication))
    wanted = busy
    if reached is not None:
        _, worst = reached.worst
        if worst is not None:
            needed = math.ceil(done * (worst / rule.until.relative_half_width) ** 2)
            wanted = min(busy, max(1, needed - done))
    return max(0, min(wanted, rule.max - done))


def replication_plan(
    rule: int | AdaptiveReplications, reached: Reached | None = None
) -> dict[str, Any]:
    """``summary.json``'s ``replication_plan``: the rule, why the sweep stopped, and each
    variant's relative half-width on the metric (``unreachable`` gives the reason where None)."""
    if isinstance(rule, int):
        return {"min": rule, "max": rule, "until": None, "stopped": "fixed", "half_widths": {}}
    assert reached is not None
    return {
        "min": rule.min,
        "max": rule.max,
        "until": rule.until.model_dump(),
        "stopped": "precision reached" if reached.met else "max reached",
        "half_widths": reached.half_widths,
        "unreachable": reached.reasons,
    }


def describe(reached: Reached, rule: AdaptiveReplications) -> str:
    """The precision so far, one line: ``replication 5 of at most 12: bad_impressions ±21%
    (variant a), target ±15%``."""
    label, worst = reached.worst
    target = f"target ±{_percent(rule.until.relative_half_width)}"
    where = f" ({label})" if len(reached.half_widths) > 1 else ""
    if worst is None:
        shown = f"{rule.until.metric} not measurable{where}: {reached.reasons[label]}"
    else:
        shown = f"{rule.until.metric} ±{_percent(worst)}{where}"
    return f"replication {reached.replications} of at most {rule.max}: {shown}, {target}"


def precision_notes(plan: dict[str, Any], replications: int) -> list[str]:
    """What ``summary.json``'s notes say of an adaptive sweep's stopping (none for a fixed one)."""
    until = plan["until"]
    if until is None:
        return []
    metric, target = until["metric"], _percent(until["relative_half_width"])
    if plan["stopped"] == "precision reached":
        return [
            f"replications: {replications} run, until every variant's {metric} was within "
            f"±{target} (95% interval)"
        ]
    missed = [
        f"{label} ±{_percent(width)}"
        if width is not None
        else f"{label}: {plan['unreachable'][label]}"
        for label, width in plan["half_widths"].items()
        if width is None or width > until["relative_half_width"]
    ]
    return [
        f"replications: the maximum ({replications}) ran and {metric} is not within ±{target} "
        f"(95% interval) in every variant: {'; '.join(missed)}"
    ]


def _percent(share: float) -> str:
    return f"{100 * share:.3g}%"
