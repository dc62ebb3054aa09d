"""Effects per lever: what each grid axis of a sweep changes, with the other axes held fixed.

When a sweep's variants form a grid (``variants.grid``), each axis is a lever and each variant
one combination of levels. For every metric of ``runs.parquet``:

- the **main effect** of level ``a`` of axis ``A`` is its difference from ``A``'s reference
  level ``a0`` (the baseline variant's level on ``A``) averaged over every combination ``c`` of
  the other axes' levels. It is computed within each replication ``r`` (common random numbers
  pair the variants of a replication) as ``mean_c Y(a, c, r) - mean_c Y(a0, c, r)``, then its
  95% Student-t interval is taken over replications;
- its **relative effect** is :func:`sim.measuring.compare.relative_change` of those two averages,
per
  replication: the geometric mean over replications of ``mean_c Y(a, c, r) / mean_c Y(a0, c,
  r)``, minus 1, never below -100% (a log ratio of means where a replication has a zero);
- the **two-way interaction** of levels ``a`` of ``A`` and ``b`` of ``B`` is the difference of
  differences ``M(a, b) - M(a0, b) - M(a, b0) + M(a0, b0)`` per replication, ``M`` averaging
  over the remaining axes; its relative form is the ratio of ratios ``M(a, b) / M(a0, b) /
  (M(a, b0) / M(a0, b0))`` minus 1, from paired log ratios: how much the relative effect of
  ``a`` at ``b`` differs from that at ``b0``. A relative effect reads "whatever the other
  lever" only where no relative interaction with that lever is detectable.

A replication enters a figure only where every cell it needs was measured (a metric missing in
one variant of a replication leaves that replication out; ``n`` says how many were used). Case
lists (``variants.cases``) and the bounds (``frozen``, ``instant``) are not grid cells and get
no effects.

>>> levels = {f"{a} · {b}": {"A": a, "B": b} for a in ("a0", "a1") for b in ("b0", "b1")}
>>> rows = [
...     {"variant": label, "replication": r, "clicks": (2 if cell["A"] == "a1" else 1) * (r + 1)}
...     for label, cell in levels.items()
...     for r in range(3)
... ]
>>> main = estimate_effects(rows, grid_factors(levels, "a0 · b0"), levels)[0]
>>> main["factor"], main["level"], main["reference"], main["effect"], main["relative"]
('A', 'a1', 'a0', 2.0, 1.0)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.measuring.compare import (
    LOG_RATIO,
    delta_range,
    interval,
    metric_range,
    numeric_metrics,
    relative_change,
    relative_from_log,
)
from sim.scenario.durations import format_duration

__all__ = [
    "Factor",
    "grid_factors",
    "estimate_effects",
    "Cells",
    "conditional_effect",
    "measured_updates",
    "never_fires",
    "harm_metric",
    "effect_sentences",
    "largest_effect",
    "EFFECT_COLUMNS",
]

#: effects.parquet's columns, in order.
EFFECT_COLUMNS = (
    "metric",
    "kind",
    "factor",
    "level",
    "reference",
    "effect",
    "ci_low",
    "ci_high",
    "relative",
    "relative_ci_low",
    "relative_ci_high",
    "relative_method",
    "n",
    "note",
)
#: Where the harm metric is not measured, this one stands in (as in the report).
HARM_METRICS = {
    "bad_impressions": "bad impressions",
    "repeat_offences_per_negative": "repeat offences per explicit negative",
    # what a scenario's metrics.headline may name instead
    "ctr": "CTR",
    "regret_per_request": "regret per request",
    "sessions_lost": "sessions lost",
    "churned_users": "churned users",
}
COST_METRIC = "cost_per_day"


@dataclass(frozen=True)
class Factor:
    """One grid axis: its short name, the scenario path it sets, its level labels in declared
    order, and its reference level (the baseline variant's)."""

    name: str
    path: str
    levels: tuple[str, ...]
    reference: str

    @property
    def title(self) -> str:
        """How a sentence names the lever: "the retrain cadence", "nearline embeddings" (an
        axis that switches a layer on or off), else its name."""
        parts = self.path.split(".")
        if len(parts) == 4 and parts[:2] == ["stack", "layers"]:
            layer = parts[2].replace("_", " ")
            if parts[3] == "every":
                return f"the {layer} cadence"
            if parts[3] == "enabled":
                return layer
        return self.name

    @property
    def switch(self) -> bool:
        """Whether the axis turns a layer on or off."""
        return self.path.startswith("stack.layers.") and self.path.endswith(".enabled")

    @property
    def layer(self) -> str | None:
        """The layer this axis configures (``stack.layers.NAME...``), if any."""
        parts = self.path.split(".")
        return parts[2] if len(parts) >= 3 and parts[:2] == ["stack", "layers"] else None


def grid_factors(levels: dict[str, dict[str, str]], baseline: str) -> list[Factor]:
    """The axes of a grid whose variants have ``levels`` (variant: {axis path: level label},
    from :func:`sim.sweeps.plan.grid_levels`), each referenced to ``baseline``'s level."""
    if baseline not in levels:
        return []
    paths = list(levels[baseline])
    short = [".".join(path.split(".")[-2:]) for path in paths]
    factors = []
    for path, name in zip(paths, short, strict=True):
        found = list(dict.fromkeys(cell[path] for cell in levels.values()))
        factors.append(
            Factor(
                name=name if short.count(name) == 1 else path,
                path=path,
                levels=tuple(found),
                reference=levels[baseline][path],
            )
        )
    return factors


class Cells:
    """A grid's measured values: a metric averaged over the cells with some levels fixed, per
    replication."""

    def __init__(
        self, rows: list[dict[str, Any]], factors: list[Factor], levels: dict[str, dict[str, str]]
    ):
        self.factors = factors
        self.values: dict[tuple[str, int], dict[str, Any]] = {
            (row["variant"], row["replication"]): row for row in rows if row["variant"] in levels
        }
        self.labels = {
            tuple(cell[f.path] for f in factors): label for label, cell in levels.items()
        }
        self.replications = sorted({replication for _, replication in self.values})

    def average(self, metric: str, fixed: dict[str, str], replication: int) -> float | None:
        """``metric`` averaged over every cell with the ``fixed`` levels (axis path: level), in
        one replication (None where a cell is missing)."""
        free = [f for f in self.factors if f.path not in fixed]
        total = []
        for combination in itertools.product(*(f.levels for f in free)):
            chosen = fixed | {f.path: level for f, level in zip(free, combination, strict=True)}
            label = self.labels.get(tuple(chosen[f.path] for f in self.factors), "")
            value = self.values.get((label, replication), {}).get(metric)
            if value is None:
                return None
            total.append(float(value))
        return float(np.mean(total))

    def paired(self, metric: str, *fixed: dict[str, str]) -> list[tuple[float | None, ...]]:
        """Per replication, the averages with each of the ``fixed`` levels."""
        return [tuple(self.average(metric, f, r) for f in fixed) for r in self.replications]


def estimate_effects(
    rows: list[dict[str, Any]],
    factors: list[Factor],
    levels: dict[str, dict[str, str]],
    metrics: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Main effects and two-way interactions of every metric: ``effects.parquet`` rows.

    ``rows`` are ``runs.parquet`` rows of finished runs; ``levels`` gives each grid variant's
    level per axis path (variants outside it, such as the bounds, are ignored).
    """
    cells = Cells(rows, factors, levels)
    found = []
    for metric in metrics if metrics is not None else numeric_metrics(rows):
        for factor in factors:
            for level in factor.levels:
                if level == factor.reference:
                    continue
                pairs = cells.paired(metric, {factor.path: level}, {factor.path: factor.reference})
                found.append(_main_row(metric, factor, level, pairs))
        for first, second in itertools.combinations(factors, 2):
            for a, b in itertools.product(first.levels, second.levels):
                if a == first.reference or b == second.reference:
                    continue
                quads = cells.paired(
                    metric,
                    *(
                        {first.path: x, second.path: y}
                        for x, y in (
                            (a, b),
                            (first.reference, b),
                            (a, second.reference),
                            (first.reference, second.reference),
                        )
                    ),
                )
                found.append(_interaction_row(metric, first, second, a, b, quads))
    return found


def conditional_effect(
    cells: Cells, metric: str, factor: Factor, level: str, other: Factor, other_level: str
) -> dict[str, Any]:
    """The relative effect of ``level`` of ``factor`` (against its reference) with ``other``
    held at ``other_level``, averaged over the remaining axes: what a detectable interaction
    makes of a main effect (:func:`sim.measuring.compare.relative_change`)."""
    pairs = cells.paired(
        metric,
        {factor.path: level, other.path: other_level},
        {factor.path: factor.reference, other.path: other_level},
    )
    return relative_change(*_complete(pairs))


def _complete(pairs: list[tuple[float | None, ...]]) -> tuple[list[float], list[float]]:
    """The pairs measured in both cells, as two lists (variant's, reference's)."""
    complete = [(a, b) for a, b in pairs if a is not None and b is not None]
    return [a for a, _ in complete], [b for _, b in complete]


def _main_row(
    metric: str, factor: Factor, level: str, pairs: list[tuple[float | None, ...]]
) -> dict[str, Any]:
    ours, theirs = _complete(pairs)
    row = _row(metric, "main", factor.name, level, factor.reference, len(ours))
    if not ours:
        return row | {"note": "not measured in every cell of any replication"}
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    row.update(_interval_columns(differences, *delta_range(metric)))
    if metric_range(metric)[0] != 0.0:
        return row | {"note": "the metric can be negative: no relative effect"}
    relative = relative_change(ours, theirs)
    if "missing" in relative:
        return row | {"note": relative["missing"]}
    return row | _relative_columns(relative)


def _interaction_row(
    metric: str,
    first: Factor,
    second: Factor,
    a: str,
    b: str,
    quads: list[tuple[float | None, ...]],
) -> dict[str, Any]:
    complete = [quad for quad in quads if all(value is not None for value in quad)]
    row = _row(
        metric,
        "interaction",
        f"{first.name} × {second.name}",
        f"{a} · {b}",
        f"{first.reference} · {second.reference}",
        len(complete),
    )
    if not complete:
        return row | {"note": "not measured in every cell of any replication"}
    cells = np.asarray(complete, np.float64)
    low, high = delta_range(metric)
    bounds = (None, None) if low is None or high is None else (2 * low, 2 * high)
    row.update(_interval_columns(list(cells @ [1.0, -1.0, -1.0, 1.0]), *bounds))
    if metric_range(metric)[0] != 0.0:
        return row | {"note": "the metric can be negative: no relative effect"}
    if not (cells > 0).all():
        return row | {"note": "a cell is zero in a replication: the ratio of ratios is undefined"}
    with np.errstate(all="ignore"):
        logs = np.log(cells) @ [1.0, -1.0, -1.0, 1.0]
    if not np.isfinite(logs).all():
        return row | {"note": "the ratio of ratios overflows"}
    mean, lower, upper = interval(list(logs))
    relative = relative_from_log(mean, lower, upper, len(complete), LOG_RATIO + " of ratios")
    return row | _relative_columns(relative)


def _row(metric: str, kind: str, factor: str, level: str, reference: str, n: int) -> dict:
    return dict.fromkeys(EFFECT_COLUMNS) | {
        "metric": metric,
        "kind": kind,
        "factor": factor,
        "level": level,
        "reference": reference,
        "n": n,
    }


def _interval_columns(values: list[float], low: float | None, high: float | None) -> dict:
    mean, lower, upper = interval(values, low, high)
    return {"effect": mean, "ci_low": lower, "ci_high": upper}


def _relative_columns(relative: dict[str, Any]) -> dict[str, Any]:
    low, high = relative["ci95"] or (None, None)
    return {
        "relative": round(relative["mean"], 6),
        "relative_ci_low": None if low is None else round(low, 6),
        "relative_ci_high": None if high is None else round(high, 6),
        "relative_method": relative["method"],
    }


# --- cadences that never fire ------------------------------------------------------------------


def measured_updates(
    layers: dict[str, list[Any]], periods: dict[str, tuple[float, float]]
) -> dict[tuple[str, str], int]:
    """Per (variant, layer): how many updates went live within the variant's measured period
    ``periods[variant] = (start, end)``, over all its replications. ``layers`` is the sweep's
    ``layers.parquet`` as columns."""
    counts: dict[tuple[str, str], int] = {}
    for variant, layer, origin, live_at in zip(
        layers["variant"], layers["layer"], layers["origin"], layers["live_at"], strict=True
    ):
        start, end = periods.get(variant, (np.inf, -np.inf))
        if origin == "update" and start <= live_at < end:
            counts[(variant, layer)] = counts.get((variant, layer), 0) + 1
    return counts


def never_fires(
    factors: list[Factor],
    levels: dict[str, dict[str, str]],
    active: dict[str, set[str]],
    updates: dict[tuple[str, str], int],
) -> dict[str, list[str]]:
    """Per factor name, the levels whose layer is on but published no update that went live in
    the measured period of any run of any variant at that level: measured, not predicted from
    the cadence. ``active`` gives each variant that ran its active layers."""
    found: dict[str, list[str]] = {}
    for factor in factors:
        layer = factor.layer
        found[factor.name] = []
        if layer is None:
            continue
        for level in factor.levels:
            ran = [
                variant
                for variant, cell in levels.items()
                if cell[factor.path] == level and layer in active.get(variant, set())
            ]
            if ran and not any(updates.get((variant, layer), 0) for variant in ran):
                found[factor.name].append(level)
    return found


# --- sentences -----------------------------------------------------------------------------


def harm_metric(rows: list[dict[str, Any]], headline: str | None = None) -> str:
    """The scenario's ``metrics.headline`` where measured, else ``bad_impressions`` where
    measured, else ``repeat_offences_per_negative`` (as the report chooses)."""
    if headline and any(row.get(headline) is not None for row in rows):
        return headline
    if any(row.get("bad_impressions") is not None for row in rows):
        return "bad_impressions"
    return "repeat_offences_per_negative"


def _detectable(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and (low > 0 or high < 0)


def _effect_detectable(row: dict[str, Any]) -> bool:
    """Whether the row's interval excludes zero: the relative one where it exists."""
    if row["relative"] is not None:
        return _detectable(row["relative_ci_low"], row["relative_ci_high"])
    return _detectable(row["ci_low"], row["ci_high"])


def _interacts(effects: list[dict[str, Any]], metric: str, factor: Factor, other: Factor) -> bool:
    """Whether any interaction of the two axes on ``metric`` is detectable, on the relative
    scale where it exists (the scale of the claim "whatever the other lever")."""
    names = {f"{factor.name} × {other.name}", f"{other.name} × {factor.name}"}
    for row in effects:
        if row["metric"] == metric and row["kind"] == "interaction" and row["factor"] in names:
            if _effect_detectable(row):
                return True
    return False


def _percent(value: float) -> str:
    return f"{100 * value:+.0f}%"


def _size(row: dict[str, Any]) -> float:
    """How large a main effect is, for ordering: |log ratio| where relative, else |effect|."""
    if row["relative"] is not None:
        return abs(float(np.log1p(max(row["relative"], -0.999999))))
    return abs(row["effect"] or 0.0)


def effect_sentences(
    effects: list[dict[str, Any]],
    factors: list[Factor],
    harm: str,
    never: dict[str, list[str]],
    duration: float,
    cells: Cells | None = None,
) -> list[str]:
    """One plain sentence per lever level on the harm metric, with its cost, most important
    first: detectable effects before the others, larger before smaller. With the grid's
    ``cells``, an effect that depends on another lever gives its size at each of its levels."""
    mains = {
        (row["metric"], row["factor"], row["level"]): row
        for row in effects
        if row["kind"] == "main"
    }
    by_name = {factor.name: factor for factor in factors}
    ranked = sorted(
        (row for key, row in mains.items() if key[0] == harm and row["effect"] is not None),
        key=lambda row: (not _effect_detectable(row), -_size(row)),
    )
    title = HARM_METRICS.get(harm, harm)
    sentences = []
    for row in ranked:
        factor = by_name[row["factor"]]
        others = [f for f in factors if f is not factor and len(f.levels) > 1]
        text = f"{row['level']} (vs {row['reference']}): " + _harm_clause(row, title)
        if others and _effect_detectable(row):
            depends = [f for f in others if _interacts(effects, harm, factor, f)]
            if depends:
                text += " on average; the effect depends on " + " and ".join(
                    _depends(f, cells, harm, factor, row["level"]) for f in depends
                )
            else:
                text += " " + _whatever(others)
        cost = mains.get((COST_METRIC, row["factor"], row["level"]))
        if cost is not None and cost["effect"] is not None:
            text += "; " + _cost_clause(cost)
        for level in (row["level"], row["reference"]):
            if level in never.get(factor.name, []):
                text += (
                    f"; {level} never fires: no {factor.layer} update went live within the "
                    f"{format_duration(duration)} measured in any of its runs"
                )
        n = row["n"]  # the replications in which every cell was measured
        sentences.append(f"{text} ({n} replication{'s' * (n != 1)}).")
    return sentences


def _depends(other: Factor, cells: Cells | None, metric: str, factor: Factor, level: str) -> str:
    """ "nearline embeddings (-72% [-80%, -60%] at near-line off, -58% [...] at near-line on)"."""
    name = f"{other.title} (on or off)" if other.switch else other.title
    if cells is None:
        return name
    parts = []
    for other_level in other.levels:
        found = conditional_effect(cells, metric, factor, level, other, other_level)
        if "missing" in found:
            continue
        shown = _percent(found["mean"])
        if found["ci95"]:
            shown += f" [{_percent(found['ci95'][0])}, {_percent(found['ci95'][1])}]"
        parts.append(f"{shown} at {other_level}")
    return f"{name}: {', '.join(parts)}" if parts else name


def _whatever(others: list[Factor]) -> str:
    """ "whatever the retrain cadence, with or without nearline embeddings"."""
    levers = " and ".join(f.title for f in others if not f.switch)
    switches = " and ".join(f.title for f in others if f.switch)
    return ", ".join(
        part
        for part in (levers and f"whatever {levers}", switches and f"with or without {switches}")
        if part
    )


def _harm_clause(row: dict[str, Any], title: str) -> str:
    if row["relative"] is not None:
        low, high = row["relative_ci_low"], row["relative_ci_high"]
        shown = _percent(row["relative"])
        if low is None:
            return f"{title} {shown} (no interval)"
        if not _detectable(low, high):
            return (
                f"no detectable difference in {title} ({shown} [{_percent(low)}, {_percent(high)}])"
            )
        if row["relative"] < 0:
            return (
                f"cut {title} by {-100 * row['relative']:.0f}% "
                f"[{-100 * high:.0f}%, {-100 * low:.0f}%]"
            )
        return (
            f"raised {title} by {100 * row['relative']:.0f}% [{100 * low:.0f}%, {100 * high:.0f}%]"
        )
    shown = f"{row['effect']:+,.3g}"
    if row["ci_low"] is None:
        return f"{title} {shown} (no interval)"
    interval_ = f"[{row['ci_low']:+,.3g}, {row['ci_high']:+,.3g}]"
    if not _detectable(row["ci_low"], row["ci_high"]):
        return f"no detectable difference in {title} ({shown} {interval_})"
    return f"changed {title} by {shown} {interval_}"


def _cost_clause(row: dict[str, Any]) -> str:
    if row["effect"] == 0 and row["ci_low"] in (0, None) and row["ci_high"] in (0, None):
        return "no difference in cost"
    text = f"cost {row['effect']:+,.0f} units/day"
    if row["ci_low"] is not None:
        text += f" [{row['ci_low']:+,.0f}, {row['ci_high']:+,.0f}]"
    if row["relative"] is not None:
        text += f" ({_percent(row['relative'])})"
    return text


def largest_effect(effects: list[dict[str, Any]], harm: str) -> dict[str, Any] | None:
    """The level with the largest main effect on ``harm`` and its cost, or None."""
    mains = [
        row
        for row in effects
        if row["kind"] == "main" and row["metric"] == harm and row["effect"] is not None
    ]
    if not mains:
        return None
    row = max(mains, key=_size)
    cost = next(
        (
            other
            for other in effects
            if other["kind"] == "main"
            and other["metric"] == COST_METRIC
            and (other["factor"], other["level"]) == (row["factor"], row["level"])
        ),
        None,
    )
    return {
        "metric": harm,
        "factor": row["factor"],
        "level": row["level"],
        "reference": row["reference"],
        "relative": row["relative"],
        "relative_ci95": None
        if row["relative_ci_low"] is None
        else [row["relative_ci_low"], row["relative_ci_high"]],
        "effect": row["effect"],
        "ci95": None if row["ci_low"] is None else [row["ci_low"], row["ci_high"]],
        "cost_per_day": None
        if cost is None or cost["effect"] is None
        else {
            "effect": cost["effect"],
            "ci95": None if cost["ci_low"] is None else [cost["ci_low"], cost["ci_high"]],
            "relative": cost["relative"],
        },
    }
