"""Comparing variants over replications: means with 95% intervals and paired changes, each
kept inside the range the metric can take.

Replication ``r`` of every variant shares users, items, arrivals and response noise (common
random numbers), so the difference between two variants is measured within each replication and
its interval is a paired t-interval over replications. With one replication there is no interval:
it is reported as missing, not guessed.

How each figure's interval is made, by the metric's kind (:func:`metric_kind`):

- **count** (impressions, bad impressions, churned users, ...), **time** (seconds) and **rate**
  (a non-negative quantity per something: repeat offences per negative, cost per day, regret):
  the mean's Student-t interval intersected with ``[0, inf)``; **share** (CTR, abandon rate,
  absorbed share, Gini, ...): intersected with ``[0, 1]``; **signed** (propagation efficiency,
  at most 1): intersected with ``(-inf, 1]``. A true mean lies inside its range, so cutting
  the interval to the range never lowers its coverage.
- **paired delta** (variant minus baseline, in the metric's unit): the paired t-interval; for a
  share, within ``[-1, 1]``.
- **relative change** (count, time, rate and share): from paired log ratios. Per replication
  ``log(variant / baseline)``, then the t-interval of their mean, transformed back by
  ``exp(.) - 1``: a geometric mean of the per-replication ratios whose interval is never below
  -100%. Where a replication has a zero (a log ratio of zero is infinite), the log of the ratio
  of the means is used instead, its interval by the delta method from the paired (co)variances
  (``method`` says which). A variant at zero in every replication against a positive baseline
  is -100% without an interval; a baseline at zero in every replication has no relative change
  (missing, with the reason). A signed metric has no relative change.

>>> interval([1.0, 2.0, 3.0])
(2.0, -0.484138, 4.484138)
>>> interval([1.0, 2.0, 3.0], low=0.0)
(2.0, 0.0, 4.484138)
>>> relative_change([5.0, 10.0], [10.0, 20.0])["mean"]
-0.5
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "interval",
    "numeric_metrics",
    "delta_range",
    "compare_variants",
    "metric_kind",
    "metric_range",
    "metric_resolution",
    "relative_change",
    "relative_from_log",
    "propagation_efficiency",
    "instant_beaten",
    "LOG_RATIO",
    "RATIO_OF_MEANS",
]

CONFIDENCE = 0.95
NO_INTERVAL = "an interval needs at least 2 replications"
#: How a relative change was computed (``method`` of a relative entry).
LOG_RATIO = "paired log ratio"
RATIO_OF_MEANS = "log ratio of means (a replication has a zero)"
ALL_ZERO = "zero in every replication"

#: A metric's kind, by its name (first match wins); see the module docstring for what each
#: kind's intervals are. tests/test_effects.py checks that every metric a run writes has one.
KINDS: tuple[tuple[str, str], ...] = (
    (r"propagation_efficiency", "signed"),
    (r"(^|\.)time_to_\d+pct_seconds$|_seconds$", "time"),
    (
        r"(^|\.)(ctr|explicit_negative_rate|abandon_rate|churn_rate|item_coverage|topic_gini|"
        r"consumption_similarity|level)$|_share$",
        "share",
    ),
    (
        r"(^|\.)(requests|impressions|clicks|sessions|churned_users|explicit_negatives|"
        r"repeat_offences|bad_impressions|sessions_lost|churned_exposed_users|"
        r"bad_before_\d+pct)$",
        "count",
    ),
    (
        r"(^|\.)(repeat_offences_per_negative|regret|regret_per_request|"
        r"expected_clicks_per_request|oracle_expected_clicks_per_request)$|^cost_per_day",
        "rate",
    ),
)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "count": (0.0, None),
    "time": (0.0, None),
    "rate": (0.0, None),
    "share": (0.0, 1.0),
    "signed": (None, 1.0),
    "unknown": (None, None),
}


def metric_kind(metric: str) -> str:
    """``count``, ``time``, ``share``, ``rate``, ``signed`` or ``unknown`` (no range known).

    >>> metric_kind("topic aversion.time_to_50pct_seconds"), metric_kind("ctr")
    ('time', 'share')
    """
    for pattern, kind in KINDS:
        if re.search(pattern, metric):
            return kind
    return "unknown"


def metric_range(metric: str) -> tuple[float | None, float | None]:
    """The values ``metric`` can take, ``None`` where unbounded."""
    return RANGES[metric_kind(metric)]


def metric_resolution(metrics: list[str], suppression_bin: float) -> dict[str, float]:
    """The times among ``metrics`` measured in bins, with the bin: a time to suppression is
    the end of the first bin at the level, so a value of one bin means "within one bin".

    >>> metric_resolution(["ctr", "aversion.time_to_50pct_seconds"], 3600.0)
    {'aversion.time_to_50pct_seconds': 3600.0}
    """
    return {
        metric: float(suppression_bin)
        for metric in metrics
        if re.search(r"(^|\.)time_to_\d+pct_seconds$", metric)
    }


def interval(
    values: list[float], low: float | None = None, high: float | None = None
) -> tuple[float, float | None, float | None]:
    """Mean and two-sided 95% Student-t interval of ``values`` (``None`` bounds below n = 2),
    the interval cut to ``[low, high]`` where given."""
    data = np.asarray(values, np.float64)
    mean = float(data.mean())
    if data.shape[0] < 2:
        return round(mean, 6), None, None
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, data.shape[0] - 1) * stats.sem(data))
    if not np.isfinite(half):  # every value equal: sem is 0
        half = 0.0
    lower, upper = mean - half, mean + half
    if low is not None:
        lower, upper = max(lower, low), max(upper, low)
    if high is not None:
        lower, upper = min(lower, high), min(upper, high)
    return round(mean, 6), round(lower, 6), round(upper, 6)


def relative_change(values: list[float], base: list[float]) -> dict[str, Any]:
    """The relative change of paired ``values`` against ``base`` (same replications, same
    order): ``{"mean", "ci95", "n", "method"}``, or ``{"missing": reason, "n"}``.

    Only for metrics that cannot be negative; see the module docstring for the method.
    """
    ours, theirs = np.asarray(values, np.float64), np.asarray(base, np.float64)
    n = int(ours.shape[0])
    if n == 0:
        return {"missing": "no replication measured both", "n": 0}
    with np.errstate(all="ignore"):  # a ratio of subnormal values overflows: checked below
        logs = np.log(ours / theirs)
        centre = float(np.log(ours.mean() / theirs.mean()))
    if (ours > 0).all() and (theirs > 0).all() and np.isfinite(logs).all():
        mean, low, high = interval(list(logs))
        return relative_from_log(mean, low, high, n, LOG_RATIO)
    if theirs.mean() <= 0:
        return {"missing": "the reference is zero in every replication", "n": n}
    if ours.mean() <= 0:
        return {"mean": -1.0, "ci95": None, "n": n, "method": ALL_ZERO}
    if not np.isfinite(centre):
        return {"missing": "the ratio of the means overflows", "n": n}
    if n < 2:
        return relative_from_log(centre, None, None, n, RATIO_OF_MEANS)
    covariance = np.cov(ours, theirs)
    with np.errstate(all="ignore"):  # subnormal means overflow their squares' reciprocals
        variance = (
            covariance[0, 0] / ours.mean() ** 2
            + covariance[1, 1] / theirs.mean() ** 2
            - 2 * covariance[0, 1] / (ours.mean() * theirs.mean())
        ) / n
    if not np.isfinite(variance):
        return relative_from_log(centre, None, None, n, RATIO_OF_MEANS)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * np.sqrt(max(variance, 0.0)))
    return relative_from_log(centre, centre - half, centre + half, n, RATIO_OF_MEANS)


def relative_from_log(
    mean: float, low: float | None, high: float | None, n: int, method: str
) -> dict[str, Any]:
    """A relative entry from a mean log ratio and its interval (``exp(.) - 1`` of each)."""

    def back(value: float) -> float:
        with np.errstate(over="ignore"):
            return round(float(np.expm1(value)), 6)

    bounds = None if low is None or high is None else [back(low), back(high)]
    return {
        "mean": back(mean),
        # an interval too wide to write down (a bound beyond any float) bounds nothing
        "ci95": bounds if bounds is not None and np.isfinite(bounds).all() else None,
        "n": n,
        "method": method,
    }


def _entry(values: list[float], low: float | None = None, high: float | None = None) -> dict:
    mean, lower, upper = interval(values, low, high)
    return {"mean": mean, "ci95": None if lower is None else [lower, upper], "n": len(values)}


def numeric_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns of ``runs.parquet`` rows: every number but the bookkeeping."""
    return sorted(
        {
            name
            for row in rows
            for name, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        - {"replication", "seed", "wall_seconds"}
    )


def delta_range(metric: str) -> tuple[float | None, float | None]:
    """The values a difference of two ``metric`` values can take, ``None`` where unbounded."""
    low, high = metric_range(metric)
    if low is None or high is None:
        return None, None
    return low - high, high - low


def compare_variants(
    rows: list[dict[str, Any]], labels: list[str], baseline: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant and metric: mean and interval over replications, and against the baseline
    the paired delta and the relative change (:func:`relative_change`), each with its interval
    inside the metric's range.

    ``rows`` are ``runs.parquet`` rows (``variant``, ``replication`` and metric columns); a
    metric that is ``None`` in a run leaves that replication out of its figures. A relative
    change that cannot be computed is left out, its reason under ``relative_missing``.
    """
    by_run = {(row["variant"], row["replication"]): row for row in rows}
    replications = sorted({row["replication"] for row in rows})
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for label in labels:
        per_metric: dict[str, dict[str, Any]] = {}
        for metric in numeric_metrics(rows):
            values = _values(by_run, label, metric, replications)
            if not values:
                continue
            entry = _entry(list(values.values()), *metric_range(metric))
            if label != baseline:
                base = _values(by_run, baseline, metric, list(values))
                if base:
                    ours = [values[r] for r in base]
                    theirs = [base[r] for r in base]
                    paired = [a - b for a, b in zip(ours, theirs, strict=True)]
                    entry["delta"] = _entry(paired, *delta_range(metric))
                    entry.update(_relative(metric, ours, theirs))
            per_metric[metric] = entry
        result[label] = per_metric
    return result


def _relative(metric: str, ours: list[float], theirs: list[float]) -> dict[str, Any]:
    """``{"relative": ...}`` for a metric that cannot be negative, else the reason it has none."""
    if metric_range(metric)[0] != 0.0:
        return {"relative_missing": "the metric can be negative: no relative change"}
    found = relative_change(ours, theirs)
    if "missing" in found:
        return {"relative_missing": found["missing"]}
    return {"relative": found}


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
