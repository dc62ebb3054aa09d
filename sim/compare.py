"""Comparing variants over replications: means with 95% intervals and paired deltas.

Replication ``r`` of every variant shares users, items, arrivals and response noise (common
random numbers), so the difference between two variants is measured within each replication and
its interval is a paired t-interval over replications. With one replication there is no interval:
it is reported as missing, not guessed.

>>> interval([1.0, 2.0, 3.0])
(2.0, -0.484138, 4.484138)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["interval", "compare_variants", "propagation_efficiency", "instant_beaten"]

CONFIDENCE = 0.95
NO_INTERVAL = "an interval needs at least 2 replications"


def interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean and two-sided 95% Student-t interval of ``values`` (``None`` bounds below n = 2)."""
    data = np.asarray(values, np.float64)
    mean = float(data.mean())
    if data.shape[0] < 2:
        return round(mean, 6), None, None
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, data.shape[0] - 1) * stats.sem(data))
    if not np.isfinite(half):  # every value equal: sem is 0
        half = 0.0
    return round(mean, 6), round(mean - half, 6), round(mean + half, 6)


def _entry(values: list[float]) -> dict[str, Any]:
    mean, low, high = interval(values)
    return {"mean": mean, "ci95": None if low is None else [low, high], "n": len(values)}


def compare_variants(
    rows: list[dict[str, Any]], labels: list[str], baseline: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant and metric: mean and interval over replications, and against the baseline
    the paired delta and the relative change (paired delta over the baseline's mean), each with
    its interval.

    ``rows`` are ``runs.parquet`` rows (``variant``, ``replication`` and metric columns); a
    metric that is ``None`` in a run leaves that replication out of its figures.
    """
    by_run = {(row["variant"], row["replication"]): row for row in rows}
    metrics = sorted(
        {
            name
            for row in rows
            for name, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        - {"replication", "seed", "wall_seconds"}
    )
    replications = sorted({row["replication"] for row in rows})
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for label in labels:
        per_metric: dict[str, dict[str, Any]] = {}
        for metric in metrics:
            values = _values(by_run, label, metric, replications)
            if not values:
                continue
            entry = _entry(list(values.values()))
            if label != baseline:
                base = _values(by_run, baseline, metric, list(values))
                paired = [values[r] - base[r] for r in base]
                if paired:
                    entry["delta"] = _entry(paired)
                    entry.update(_relative(entry["delta"], [base[r] for r in base]))
            per_metric[metric] = entry
        result[label] = per_metric
    return result


def _relative(delta: dict[str, Any], base: list[float]) -> dict[str, Any]:
    """The paired delta as a share of the baseline's mean (its interval scaled alike).

    A ratio of means, not a mean of ratios: a replication where the baseline is near zero would
    otherwise dominate.
    """
    scale = float(np.mean(base))
    if scale == 0:
        return {}
    interval_ = delta["ci95"]
    return {
        "relative": {
            "mean": round(delta["mean"] / scale, 6),
            "ci95": None
            if interval_ is None
            else sorted(round(bound / scale, 6) for bound in interval_),
            "n": delta["n"],
        }
    }


def _values(
    by_run: dict[tuple[str, int], dict[str, Any]], label: str, metric: str, replications: list[int]
) -> dict[int, float]:
    """A metric's value per replication of one variant, where it was computed."""
    found = {r: by_run.get((label, r), {}).get(metric) for r in replications}
    return {r: float(value) for r, value in found.items() if value is not None}


def propagation_efficiency(
    rows: list[dict[str, Any]], metric: str = "bad_impressions"
) -> dict[tuple[str, int], float | None]:
    """(frozen − variant) / (frozen − best) of ``metric`` per run, within each replication, where
    best is the lowest value of any run of that replication: the instant bound or a variant.

    The share of the reduction that updates can buy here which this variant buys: 1 for the best
    run, 0 as bad as no updates at all, negative for worse than no updates. Never above 1, also
    where a variant beats the instant bound (a world in which faster propagation is not better
    everywhere: :func:`instant_beaten` says where). ``None`` where the frozen bound is missing or
    nothing beats it (nothing to gain from propagation).
    """
    by_run = {(row["variant"], row["replication"]): row for row in rows}
    best: dict[int, float] = {}
    for (_, replication), row in by_run.items():
        if row.get(metric) is not None:
            best[replication] = min(best.get(replication, np.inf), float(row[metric]))
    result: dict[tuple[str, int], float | None] = {}
    for (label, replication), row in by_run.items():
        frozen = by_run.get(("frozen", replication), {}).get(metric)
        value = row.get(metric)
        if frozen is None or value is None or best[replication] >= frozen:
            result[(label, replication)] = None
        else:
            result[(label, replication)] = (frozen - value) / (frozen - best[replication])
    return result


def instant_beaten(
    rows: list[dict[str, Any]], metric: str = "bad_impressions"
) -> dict[int, list[str]]:
    """Per replication, the variants with a lower ``metric`` than the instant bound (empty where
    the instant bound is the best run, or missing)."""
    by_run = {(row["variant"], row["replication"]): row for row in rows}
    beaten: dict[int, list[str]] = {}
    for (label, replication), row in by_run.items():
        instant = by_run.get(("instant", replication), {}).get(metric)
        value = row.get(metric)
        if label != "instant" and instant is not None and value is not None and value < instant:
            beaten.setdefault(replication, []).append(label)
    return beaten
