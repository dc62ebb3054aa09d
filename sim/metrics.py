"""What one run measured: propagation, residual exposure, suppression after interventions, and
business metrics over time. Pure functions of a :class:`sim.runner.RunResult`.

Every figure is computed exactly from the event log and the layers' version histories. A figure
that cannot be computed (no data, or censored by the end of the run) is ``None`` and its reason is
recorded in ``missing``; nothing is NaN or infinite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from sim import eventlog
from sim.domain import EXPLICIT_NEGATIVE_KINDS, Kind, Scope
from sim.eventlog import row_chunks
from sim.layers import Absorption, Reads, Version
from sim.runner import RunResult
from sim.spec import Scenario

__all__ = [
    "RunMetrics",
    "measure",
    "metric_names",
    "exposure_grid",
    "gini",
    "KeyedTimes",
    "count_following",
    "first_at_or_after",
    "layer_delays",
    "consumption_similarity",
    "top_items",
    "measured_days",
]

#: Residual exposure curves are evaluated at this many horizons, log-spaced from one minute.
EXPOSURE_POINTS = 40
#: Fractions of the pre-intervention level that define suppression.
SUPPRESSION_LEVELS = (0.5, 0.1)
#: Interventions with a definition of a "bad impression".
HARMFUL = ("topic_aversion", "item_turns_bad")
#: Seconds in the day windows over which ``item_coverage`` is measured.
DAY = 86400.0


@dataclass
class RunMetrics:
    """One run's metrics: scalars (a ``runs.parquet`` row), tables, and reasons for gaps."""

    scalars: dict[str, float | int | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)

    def put(self, name: str, value: float | int | None, reason: str = "") -> None:
        if value is None or not np.isfinite(value):
            self.scalars[name] = None
            self.missing[name] = reason or "not computable"
        else:
            self.scalars[name] = value if isinstance(value, int) else round(float(value), 6)


def measure(result: RunResult, on_step: Callable[[str], None] | None = None) -> RunMetrics:
    """Every metric of one run. ``on_step`` is told what is being measured as each step starts
    (on a week of a million users, measuring takes about 6 minutes)."""
    report = on_step or _quiet
    metrics = RunMetrics()
    steps: list[tuple[str, Callable[[RunResult, RunMetrics], None]]] = [
        ("business outcomes", _business),
        ("propagation delays", _propagation),
        ("residual exposure", partial(_exposure, on_shard=report)),
        ("suppression and harm", _suppression),
        ("regret", _regret),
        ("freshness", _freshness),
        ("exposure concentration", _concentration),
        ("homogenization", _homogenization),
        ("timeseries", _timeseries),
        ("costs", _costs),
    ]
    for name, step in steps:
        report(f"measuring {name}")
        step(result, metrics)
    return metrics


def metric_names(scenario: Scenario) -> list[str]:
    """The scalar metrics :func:`measure` gives a run of ``scenario``: its ``runs.parquet``
    columns, computed or ``None``. Known before running, to check a name a scenario refers to.
    """
    names = [
        "ctr", "mean_dwell_seconds", "explicit_negative_rate", "abandon_rate", "churn_rate",
        "requests", "impressions", "clicks", "sessions", "churned_users",
        "explicit_negatives", "repeat_offences", "repeat_offences_per_negative",
        "fresh_impression_share", "top1pct_item_share", "item_coverage", "topic_gini",
        "consumption_similarity", "cost_per_day",
    ]  # fmt: skip
    layers = list(scenario.stack.layers.active())
    for layer in layers:
        names += [f"absorption.{layer}.{part}" for part in ABSORPTION_PARTS]
        names.append(f"cost_per_day.{layer}")
    if scenario.metrics.regret:
        names += [
            "expected_clicks_per_request", "oracle_expected_clicks_per_request",
            "regret_per_request", "regret",
        ]  # fmt: skip
    harmful = [event.name for event in scenario.interventions if event.kind in HARMFUL]
    for name in harmful:
        names += [f"{name}.{part}" for part in SUPPRESSION_PARTS]
    if harmful:
        names += ["bad_impressions", "sessions_lost", "churned_exposed_users"]
    return names


#: Per layer: ``absorption.LAYER.PART``.
ABSORPTION_PARTS = (
    "median_seconds", "p90_seconds", "p99_seconds", "mean_seconds", "absorbed_share",
)  # fmt: skip
#: Per harmful intervention: ``NAME.PART``.
SUPPRESSION_PARTS = (
    "level", "bad_impressions", "sessions_lost", "churned_exposed_users",
    *(
        f"{what}_{round(100 * fraction)}pct{unit}"
        for fraction in SUPPRESSION_LEVELS
        for what, unit in (("time_to", "_seconds"), ("bad_before", ""))
    ),
)  # fmt: skip


def _quiet(step: str) -> None:
    """The default ``on_step``: measure without reporting."""


# --- helpers ---------------------------------------------------------------------------------


def _rows_where(events: Any, select: Callable[[slice], np.ndarray]) -> np.ndarray:
    """Indices (int64) of the log's rows where ``select(rows)``, a boolean mask of the rows in
    ``rows``, holds: computed chunk by chunk, so that no whole-log mask is ever built."""
    parts = [np.flatnonzero(select(rows)) + rows.start for rows in row_chunks(events.time)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _user_shards(events: Any, only: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Ranges ``[low, high)`` of user ids, in order, each with about ``CHUNK_ROWS`` of the log's
    rows (:mod:`sim.eventlog`) of the users ``only`` marks (all users: ``None``); one range when
    there are fewer such rows."""
    if events.user.shape[0] <= eventlog.CHUNK_ROWS:
        return [(0, np.iinfo(np.int64).max)]
    per_user = np.zeros(0, np.int64)
    for rows in row_chunks(events.time):
        found = np.bincount(events.user[rows])
        if found.shape[0] > per_user.shape[0]:
            per_user = np.pad(per_user, (0, found.shape[0] - per_user.shape[0]))
        per_user[: found.shape[0]] += found
    if only is not None:
        per_user[~only[: per_user.shape[0]]] = 0
    count = int(per_user.sum())
    if count <= eventlog.CHUNK_ROWS:
        return [(0, np.iinfo(np.int64).max)]
    shards = -(-count // eventlog.CHUNK_ROWS)
    targets = np.arange(1, shards) * (count / shards)
    bounds = np.searchsorted(np.cumsum(per_user), targets, "left") + 1
    edges = [0, *sorted(set(bounds.tolist()) - {0, per_user.shape[0]}), per_user.shape[0]]
    return list(zip(edges, edges[1:], strict=False))


def _among(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``np.isin(values, wanted)`` for sorted unique ``wanted``, by binary search: ``wanted`` is
    small and stays in cache, where ``np.isin`` would sort ``values`` too.

    >>> _among(np.array([5, 1, 7, 5]), np.array([1, 5]))
    array([ True,  True, False,  True])
    """
    if not wanted.shape[0]:
        return np.zeros(values.shape[0], bool)
    found = np.minimum(np.searchsorted(wanted, values), wanted.shape[0] - 1)
    return wanted[found] == values


class KeyedTimes:
    """Rows with an integer key and a time, indexed once for many range queries by key.

    A row is coded ``dense key * (n + 1) + rank`` where ``rank`` counts the rows at or before its
    time; thresholds are ranked the same way, so comparisons of codes are exact comparisons of
    (key, time) and every query is a binary search.
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray):
        keys = np.asarray(keys).reshape(-1)
        # An event log's times are already sorted: keep them as they are (no copy).
        in_order = times.shape[0] < 2 or bool((times[1:] >= times[:-1]).all())
        self._times = times if in_order else np.sort(times)
        self._span = np.int64(times.shape[0] + 1)
        ranks = (
            _ranks_in_sorted(times) if in_order else np.searchsorted(self._times, times, "right")
        )
        # One sort orders the rows by (key, time): for rows already in time order, a stable sort
        # by key alone. The distinct keys and each row's dense key follow from it in one pass (a
        # separate np.unique was a second sort of the whole log).
        order = np.argsort(keys, kind="stable") if in_order else np.lexsort((ranks, keys))
        sorted_keys = keys[order]
        first = np.ones(sorted_keys.shape[0], bool)
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
        self._keys = sorted_keys[first]
        del sorted_keys
        dense = np.cumsum(first, dtype=np.int64) - 1
        del first
        self._codes = dense * self._span + ranks[order]
        del dense, ranks
        self._times_by_code = times[order]

    def _lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each query key's dense index, and whether any row has that key."""
        if not self._keys.shape[0]:
            return np.zeros(keys.shape[0], np.int64), np.zeros(keys.shape[0], bool)
        dense = _sorted_search(self._keys, keys, "left")
        known = self._keys[np.minimum(dense, self._keys.shape[0] - 1)] == keys
        return dense, known

    def count(self, keys: np.ndarray, after: np.ndarray, until: np.ndarray) -> np.ndarray:
        """Rows with each query's key and a time in ``(after, until]``."""
        dense, known = self._lookup(keys)
        return self._counts(dense, known, self._position(dense, after), until)

    def count_windows(self, keys: np.ndarray, after: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``(len(lengths), n)``: per window length, rows with each query's key and a time in
        ``(after, after + length]``; the same as ``count`` per length, with the keys looked up
        and the window starts found once."""
        dense, known = self._lookup(keys)
        low = self._position(dense, after)
        return np.stack([self._counts(dense, known, low, after + length) for length in lengths])

    def _position(self, dense: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Where each query's rows after its time begin in the (key, time) order."""
        return _sorted_search(
            self._codes, dense * self._span + np.searchsorted(self._times, after, "right")
        )

    def _counts(
        self, dense: np.ndarray, known: np.ndarray, low: np.ndarray, until: np.ndarray
    ) -> np.ndarray:
        """Rows with each query's key from ``low`` (see ``_position``) to ``until``."""
        high = _sorted_search(
            self._codes, dense * self._span + np.searchsorted(self._times, until, "right")
        )
        return np.where(known, high - low, 0)

    def first_at_or_after(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The earliest row time with each query's key at or after its time (``inf``: none)."""
        dense, known = self._lookup(keys)
        found = _sorted_search(
            self._codes, dense * self._span + np.searchsorted(self._times, times, "left")
        )
        result = np.full(keys.shape[0], np.inf)
        inside = (found < self._codes.shape[0]) & known
        same = np.zeros_like(inside)
        same[inside] = self._codes[found[inside]] // self._span == dense[inside]
        result[same] = self._times_by_code[found[same]]
        return result


def _ranks_in_sorted(times: np.ndarray) -> np.ndarray:
    """``np.searchsorted(times, times, "right")`` for sorted ``times``, in one linear pass: each
    row's rank is the end of its run of equal times.

    >>> _ranks_in_sorted(np.array([1.0, 2.0, 2.0, 5.0]))
    array([1, 3, 3, 4])
    """
    if not times.shape[0]:
        return np.zeros(0, np.int64)
    last_of_run = np.empty(times.shape[0], bool)
    np.not_equal(times[1:], times[:-1], out=last_of_run[:-1])
    last_of_run[-1] = True
    run_ends = np.flatnonzero(last_of_run) + 1
    run = np.cumsum(last_of_run) - last_of_run  # the run each row is in
    return run_ends[run]


def _sorted_search(
    haystack: np.ndarray, needles: np.ndarray, side: Literal["left", "right"] = "right"
) -> np.ndarray:
    """``np.searchsorted(haystack, needles, side)`` with the needles searched in sorted order,
    which keeps the binary searches in cache (several times faster on large haystacks)."""
    order = np.argsort(needles, kind="stable")
    found = np.empty(needles.shape[0], np.int64)
    found[order] = np.searchsorted(haystack, needles[order], side)
    return found


def count_following(
    keys: np.ndarray,
    times: np.ndarray,
    query_keys: np.ndarray,
    query_from: np.ndarray,
    query_to: np.ndarray,
) -> np.ndarray:
    """For each query, how many ``(keys, times)`` rows have its key and a time in ``(from, to]``.

    >>> count_following(np.array([1, 1, 2, 1]), np.array([1.0, 2.0, 2.0, 5.0]),
    ...                 np.array([1, 2]), np.array([1.0, 0.0]), np.array([5.0, 1.0]))
    array([2, 0])
    """
    return KeyedTimes(keys, times).count(query_keys, query_from, query_to)


def first_at_or_after(
    keys: np.ndarray, times: np.ndarray, query_keys: np.ndarray, query_times: np.ndarray
) -> np.ndarray:
    """For each query, the earliest time among rows with its key at or after its time (or inf).

    >>> first_at_or_after(np.array([1, 1, 2]), np.array([3.0, 8.0, 1.0]),
    ...                   np.array([1, 1, 2]), np.array([4.0, 9.0, 0.5]))
    array([ 8., inf,  1.])
    """
    return KeyedTimes(keys, times).first_at_or_after(query_keys, query_times)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = even, towards 1 = concentrated).

    >>> gini(np.array([5, 5, 5, 5])), round(gini(np.array([0, 0, 0, 8])), 3)
    (0.0, 0.75)
    """
    values = np.sort(np.asarray(counts, np.float64))
    total = values.sum()
    if total <= 0:
        return float("nan")
    n = values.shape[0]
    return float(2.0 * np.sum(np.arange(1, n + 1) * values) / (n * total) - (n + 1) / n)


def exposure_grid(horizon: float) -> np.ndarray:
    """Seconds since a negative event at which exposure curves are evaluated."""
    start = min(60.0, horizon)
    return np.unique(np.geomspace(start, horizon, EXPOSURE_POINTS).round(3))


def _quantile(values: np.ndarray, q: float) -> float | None:
    """Quantile of delays that may be ``inf`` (not absorbed); ``None`` when it lands there."""
    if values.shape[0] == 0:
        return None
    found = float(np.quantile(values, q, method="inverted_cdf"))
    return found if np.isfinite(found) else None


# --- business --------------------------------------------------------------------------------


def _business(result: RunResult, metrics: RunMetrics) -> None:
    summary = result.summary
    for name in (
        "ctr",
        "mean_dwell_seconds",
        "explicit_negative_rate",
        "abandon_rate",
        "churn_rate",
    ):
        metrics.put(name, summary[name], summary["missing"].get(name, ""))
    for name in ("requests", "impressions", "clicks", "sessions", "churned_users"):
        metrics.put(name, int(summary[name]))


def _fresh(result: RunResult, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Which of the event rows in ``rows`` are impressions, and which are impressions of a
    fresh item."""
    events = result.events
    items = events.item[rows]
    shown = items >= 0
    created = result.item_created_at[np.maximum(items, 0)]  # row -1 reads item 0, masked below
    fresh = (events.time[rows] - created < result.scenario.metrics.fresh_age) & shown
    return shown, fresh


def _freshness(result: RunResult, metrics: RunMetrics) -> None:
    impressions, fresh_impressions = 0, 0
    for rows in row_chunks(result.events.time):
        shown, fresh = _fresh(result, rows)
        measured = result.events.time[rows] >= result.scenario.warmup
        impressions += int(np.count_nonzero(shown & measured))
        fresh_impressions += int(np.count_nonzero(fresh & measured))
    share = fresh_impressions / impressions if impressions else None
    metrics.put("fresh_impression_share", share, "no impressions in the measured period")


# --- exposure concentration ------------------------------------------------------------------


def top_items(live: Any) -> Any:
    """How many items the top 1% of ``live`` items are: ``ceil(live / 100)``, in integer
    arithmetic (exact for any count, no floating-point ceiling to trust).

    >>> top_items(1), top_items(100), top_items(101), top_items(np.array([0, 700, 701]))
    (1, 1, 2, array([0, 7, 8]))
    """
    return -(-live // 100)


def measured_days(warmup: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the windows ``item_coverage`` averages over: the whole days of
    ``[warmup, end)`` counted from ``warmup`` (a trailing part of a day is left out, as fewer
    hours cover fewer items), or the whole period when it is shorter than a day.

    >>> measured_days(3600.0, 3600.0 + 2.5 * DAY)
    (array([ 3600., 90000.]), array([ 90000., 176400.]))
    >>> measured_days(0.0, 7200.0)
    (array([0.]), array([7200.]))
    """
    whole = int((end - warmup) // DAY)
    if whole == 0:
        return np.array([warmup]), np.array([end])
    starts = warmup + DAY * np.arange(whole)
    return starts, starts + DAY


def _concentration(result: RunResult, metrics: RunMetrics) -> None:
    """How concentrated exposure was over the measured period ``[warmup, end)``.

    An item is live in a window if it was created before the window ends (it existed at some
    point in it); impressions are the rows with an item (abandon rows have item -1).

    - ``top1pct_item_share``: the impressions of the ``ceil(live / 100)`` items with the most
      impressions in the period, over all its impressions (``None`` without impressions).
      Uniform exposure gives about 1%; everyone shown the same few items, up to 100%.
    - ``item_coverage``: per day window (:func:`measured_days`), the distinct items shown over
      the items live in it, averaged over the days: the share of the catalogue that is shown at
      all in a day.
    - ``topic_gini``: the Gini coefficient (:func:`gini`) of the period's impressions across
      the scenario's topics (``None`` without impressions).

    Item counts and one day's "shown" marks are kept per item, so memory grows with the
    catalogue, never with the log, which is read chunk by chunk.
    """
    scenario = result.scenario
    events = result.events
    warmup, end = scenario.warmup, scenario.end
    capacity = int(result.item_topic.shape[0])
    day_starts, day_ends = measured_days(warmup, end)
    per_item = np.zeros(capacity, np.int64)
    distinct = np.zeros(day_starts.shape[0], np.int64)
    shown_today = np.zeros(capacity, bool)
    today = 0
    for rows in row_chunks(events.time):
        time, items = events.time[rows], events.item[rows]
        shown = (items >= 0) & (time >= warmup)
        per_item += np.bincount(items[shown], minlength=capacity)
        day = np.searchsorted(day_starts, time, "right") - 1
        in_a_day = shown & (time < day_ends[-1])
        # The log is in time order: a day's rows are consecutive, so one day's marks suffice.
        for found in np.unique(day[in_a_day]).tolist():
            if found != today:
                distinct[today] = np.count_nonzero(shown_today)
                shown_today[:] = False
                today = found
            shown_today[items[in_a_day & (day == found)]] = True
    distinct[today] = np.count_nonzero(shown_today)
    created = result.item_created_at
    impressions = int(per_item.sum())
    empty = "no impressions in the measured period"
    live = int(np.searchsorted(created, end, "left"))
    top = top_items(live)
    top_impressions = (
        int(np.partition(per_item, capacity - top)[capacity - top :].sum()) if top else 0
    )
    metrics.put("top1pct_item_share", top_impressions / impressions if impressions else None, empty)
    live_per_day = np.searchsorted(created, day_ends, "left")
    metrics.put(
        "item_coverage",
        float(np.mean(distinct / live_per_day)) if live_per_day.all() else None,
        "no live items in a measured day",
    )
    topics = int(scenario.world.catalog.topics)
    per_topic = np.bincount(result.item_topic, weights=per_item, minlength=topics)
    metrics.put("topic_gini", gini(per_topic) if impressions else None, empty)


#: Random user pairs over which consumption_similarity is averaged.
SIMILARITY_PAIRS = 20_000


def _homogenization(result: RunResult, metrics: RunMetrics) -> None:
    value = consumption_similarity(result.events, result.scenario.warmup, seed=result.scenario.seed)
    metrics.put("consumption_similarity", value, "fewer than two users clicked")


def consumption_similarity(
    events: Any, since: float = 0.0, pairs: int = SIMILARITY_PAIRS, seed: int = 0
) -> float | None:
    """Homogenization as Chaney et al. (2018) measure it: the mean Jaccard similarity of the sets
    of items two users clicked since ``since``, over ``pairs`` random pairs of distinct users who
    clicked anything (``None`` if fewer than two did).

    >>> from types import SimpleNamespace
    >>> clicks = SimpleNamespace(time=np.zeros(5), user=np.array([0, 0, 1, 1, 1]),
    ...     item=np.array([1, 2, 2, 3, 4]), kind=np.full(5, Kind.CLICK))
    >>> consumption_similarity(clicks, pairs=50)  # {1, 2} and {2, 3, 4}: 1 shared of 4
    0.25
    """
    # Who clicked (the users pairs are drawn from), then the clicked items of the drawn users
    # only: two passes over the log's chunks, so that memory does not grow with the log.
    clicked = np.zeros(0, bool)
    width = 0
    for rows in row_chunks(events.time):
        keep = (events.time[rows] >= since) & (events.kind[rows] == Kind.CLICK)
        users = events.user[rows][keep]
        if users.size:
            if users.max() >= clicked.shape[0]:
                clicked = np.pad(clicked, (0, int(users.max()) + 1 - clicked.shape[0]))
            clicked[users] = True
            width = max(width, int(events.item[rows][keep].max()) + 1)
    active = np.flatnonzero(clicked)
    if active.size < 2:
        return None
    rng = np.random.default_rng(seed)
    first = rng.integers(0, active.size, pairs)
    second = (first + rng.integers(1, active.size, pairs)) % active.size  # a different user
    first, second = active[first], active[second]
    drawn = np.zeros(clicked.shape[0], bool)
    drawn[first] = drawn[second] = True
    parts = []
    for rows in row_chunks(events.time):
        keep = (events.time[rows] >= since) & (events.kind[rows] == Kind.CLICK)
        users = events.user[rows][keep].astype(np.int64)
        mine = drawn[users]
        parts.append(users[mine] * width + events.item[rows][keep][mine])
    keys = np.unique(np.concatenate(parts))  # the drawn users' clicked items, sorted by user
    starts = np.searchsorted(keys, first * width)
    counts = np.searchsorted(keys, (first + 1) * width) - starts
    second_counts = np.searchsorted(keys, (second + 1) * width) - np.searchsorted(
        keys, second * width
    )
    row = np.repeat(np.arange(pairs), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    wanted = second[row] * width + keys[np.repeat(starts, counts) + within] % width
    found = keys[np.minimum(np.searchsorted(keys, wanted), keys.size - 1)] == wanted
    shared = np.bincount(row, weights=found, minlength=pairs)
    return float(np.mean(shared / (counts + second_counts - shared)))


def _costs(result: RunResult, metrics: RunMetrics) -> None:
    layers = result.summary["layers"]
    total = 0.0
    for name, layer in layers.items():
        metrics.put(f"cost_per_day.{name}", layer["cost_units_per_day"])
        total += layer["cost_units_per_day"]
    metrics.put("cost_per_day", total)


# --- propagation -----------------------------------------------------------------------------


def _propagation(result: RunResult, metrics: RunMetrics) -> None:
    scenario = result.scenario
    events = result.events
    codes = [int(Kind[name.upper()]) for name in scenario.metrics.propagation_kinds]
    chosen = _rows_where(
        events,
        lambda rows: (events.time[rows] >= scenario.warmup) & np.isin(events.kind[rows], codes),
    )
    times, users = events.time[chosen], events.user[chosen]
    layer_names = list(result.summary["layers"])
    starts = _session_starts_by_user(result) if "profile_memory" in layer_names else None
    columns: dict[str, list[np.ndarray]] = {"event": [], "layer": [], "delay": []}
    columns.update({part: [] for part in DELAY_PARTS})
    for layer in layer_names:
        parts = layer_delay_parts(result, layer, chosen)
        delays = parts.pop("delay")
        if layer == "profile_memory" and starts is not None:
            # a profile applies from the user's next session that starts once it is live
            session_keys, session_times = starts
            live = times + delays
            finite = np.isfinite(live)
            served = np.full(live.shape[0], np.inf)
            served[finite] = first_at_or_after(
                session_keys, session_times, users[finite].astype(np.int64), live[finite]
            )
            session_wait = np.full(live.shape[0], np.nan)  # nan: not served before the end
            reached = np.isfinite(served)
            session_wait[reached] = served[reached] - live[reached]
            parts["rollout"] = parts["rollout"] + session_wait
            delays = served - times
        for part, values in parts.items():
            columns[part].append(values)
        columns["event"].append(chosen)
        columns["layer"].append(np.full(chosen.shape[0], layer_names.index(layer), np.int8))
        columns["delay"].append(delays)
        absorbed = np.isfinite(delays)
        prefix = f"absorption.{layer}"
        censored = "fewer events absorbed before the run ended than this quantile needs"
        if chosen.shape[0] == 0:
            censored = "no negative events in the measured period"
        metrics.put(f"{prefix}.median_seconds", _quantile(delays, 0.5), censored)
        metrics.put(f"{prefix}.p90_seconds", _quantile(delays, 0.9), censored)
        metrics.put(f"{prefix}.p99_seconds", _quantile(delays, 0.99), censored)
        metrics.put(
            f"{prefix}.mean_seconds",
            float(delays[absorbed].mean()) if absorbed.all() and absorbed.shape[0] else None,
            "some events were not absorbed before the run ended"
            if chosen.shape[0]
            else "no negative events in the measured period",
        )
        metrics.put(
            f"{prefix}.absorbed_share",
            float(absorbed.mean()) if absorbed.shape[0] else None,
            "no negative events in the measured period",
        )
    event = np.concatenate(columns["event"]) if layer_names else np.empty(0, np.int64)
    delay = np.concatenate(columns["delay"]) if layer_names else np.empty(0)
    layer_codes = np.concatenate(columns["layer"]) if layer_names else np.empty(0, np.int8)
    absorbed = np.isfinite(delay)
    kind_names = pa.array([kind.name.lower() for kind in Kind])
    metrics.tables["propagation"] = pa.table(
        {
            "event": event.astype(np.int64),
            "time": events.time[event],
            "user": events.user[event],
            "kind": pa.DictionaryArray.from_arrays(pa.array(events.kind[event]), kind_names),
            "layer": pa.DictionaryArray.from_arrays(
                pa.array(layer_codes), pa.array(layer_names, pa.string())
            ),
            "absorbed": absorbed,
            "delay_seconds": pa.array(np.where(absorbed, delay, 0.0), mask=~absorbed),
            **{
                f"{part}_seconds": pa.array(
                    np.where(absorbed, values, 0.0), pa.float64(), mask=~absorbed
                )
                for part, values in (
                    (part, np.concatenate(columns[part]) if layer_names else np.empty(0))
                    for part in DELAY_PARTS
                )
            },
        }
    )


#: The parts an absorption delay splits into, in the order they elapse: the label's way to the
#: logs, the layer's ingestion latency, the wait for its next trigger once the event is visible,
#: the update's compute, and the rollout until the version serves the event's user (a canary's
#: duration for everyone outside it; for profile memory, also the wait for the user's next
#: session). They sum to the delay.
DELAY_PARTS = ("label_delay", "latency", "trigger_wait", "compute", "rollout")


def layer_delays(result: RunResult, layer: str, rows: np.ndarray) -> np.ndarray:
    """Absorption delay through ``layer`` of the events at log ``rows`` (inf: never).

    An event of user u at time t is absorbed by the earliest live version that covers it
    (``since <= t < horizon``; with label delays, the event arrived before the horizon: ``since
    <= t`` and ``arrival < horizon``, and for an incremental layer, whose versions each read what
    arrived since the last, ``since <= arrival < horizon``), reflects it (the layer's
    :class:`sim.layers.Reads` admit it and no incremental update read it without reflecting it)
    and changed what u is served: everyone, or u among the users it changed. A version that
    changed nothing absorbs nothing; a lost event is absorbed by none. A user in the layer's
    canary cohort is served a version from its canary release on; everyone else from its full
    rollout.
    """
    return layer_delay_parts(result, layer, rows)["delay"]


def layer_delay_parts(result: RunResult, layer: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`layer_delays` (``delay``) and its split into :data:`DELAY_PARTS`, from the
    version that absorbed each event (the parts are ``nan`` where none did)."""
    events = result.events
    rows = np.asarray(rows, np.int64)
    times, users = events.time[rows], events.user[rows]
    arrivals = times if events.arrival is None else events.arrival[rows]
    record = result.absorption.get(layer) or Absorption(Reads(), incremental=False)
    used = record.reads.admits(
        events.kind[rows], events.item[rows], events.position[rows], events.scope[rows], users
    )
    if record.missed.shape[0]:
        used &= ~_among(rows, record.missed)
    versions = _Versions([v for v in result.versions if v.layer == layer], record)
    canary = result.canary_users.get(layer)
    in_canary = canary[users] if canary is not None else np.zeros(rows.shape[0], bool)
    live = np.full(rows.shape[0], np.inf)
    by = np.full(rows.shape[0], -1, np.int64)  # the absorbing version's index
    starts = arrivals if record.incremental else times
    for members, cohort in ((~in_canary, versions.live_all), (in_canary, versions.live_canary)):
        chosen = np.flatnonzero(members & used)
        if chosen.shape[0]:
            live[chosen], by[chosen] = versions.earliest_live(
                cohort, starts[chosen], users[chosen], arrivals[chosen]
            )
    parts = {"delay": live - times}
    found = by >= 0
    if not found.any():  # also: a layer without a version that changed anything
        return parts | {part: np.full(rows.shape[0], np.nan) for part in DELAY_PARTS}
    version = np.maximum(by, 0)
    horizon, triggered = versions.horizon[version], versions.triggered[version]
    ready = versions.ready[version]
    for part, values in (
        ("label_delay", arrivals - times),
        ("latency", triggered - horizon),
        ("trigger_wait", horizon - arrivals),
        ("compute", ready - triggered),
        ("rollout", live - ready),
    ):
        parts[part] = np.where(found, values, np.nan)
    return parts


class _Versions:
    """One layer's versions that changed what some user is served, one entry per version in
    order of horizon: the input each reflects (``since``, ``horizon``), when it went live for
    each cohort, and whom it changed (everyone, or a sorted array of user ids)."""

    def __init__(self, versions: list[Version], record: Absorption):
        entries: dict[int, list[Any]] = {}
        for v in versions:
            if v.changed == "none":
                continue
            entry = entries.setdefault(
                v.version, [v.since, v.horizon, np.inf, np.inf, v.triggered_at, v.changed]
            )
            column = 3 if v.cohort == "canary" else 2
            entry[column] = min(entry[column], v.live_at)
        numbers = sorted(entries, key=lambda number: (entries[number][1], entries[number][0]))
        columns = [np.array([entries[n][i] for n in numbers], np.float64) for i in range(5)]
        self.since, self.horizon, self.live_all, canary, self.triggered = columns
        self.live_canary = np.minimum(canary, self.live_all)  # canary users see both releases
        #: When each version's state was ready (its first release, to any cohort)
        self.ready = self.live_canary
        # An incremental update changes exactly the users of the events it reflects.
        self.users = [
            None
            if entries[n][5] == "all" or record.incremental or n not in record.changed_users
            else record.changed_users[n]
            for n in numbers
        ]
        self.everyone = np.array([users is None for users in self.users], bool)

    def earliest_live(
        self,
        live: np.ndarray,
        times: np.ndarray,
        users: np.ndarray,
        arrivals: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """For events by ``users`` that start at ``times`` (compared with each version's
        ``since``) and arrived at ``arrivals`` (compared with its horizon; their times when
        None), the earliest ``live`` time of a version that covers the event and changed its user
        (inf: none), and that version's index (-1: none)."""
        if not self.horizon.shape[0]:
            return np.full(times.shape[0], np.inf), np.full(times.shape[0], -1, np.int64)
        arrivals = times if arrivals is None else arrivals
        in_order = bool(np.all(self.since[1:] >= self.since[:-1]) and np.all(live[1:] >= live[:-1]))
        if in_order:
            return self._first_covering(live, times, users, arrivals)
        return self._each_version(live, times, users, arrivals)

    def _first_covering(
        self, live: np.ndarray, times: np.ndarray, users: np.ndarray, arrivals: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """With input starts and live times in horizon order (every periodic layer's), the
        first version after an event's arrival that changed its user is the earliest live, and
        if it does not cover the event (its input starts later), no later one does."""
        best = np.full(times.shape[0], np.inf)
        which = np.full(times.shape[0], -1, np.int64)
        everyone = np.flatnonzero(self.everyone)
        if everyone.shape[0]:
            first = np.searchsorted(self.horizon[everyone], arrivals, "right")
            found = first < everyone.shape[0]
            version = everyone[np.minimum(first, everyone.shape[0] - 1)]
            found &= self.since[version] <= times
            best[found] = live[version[found]]
            which[found] = version[found]
        some = np.flatnonzero(~self.everyone)
        if not some.shape[0]:
            return best, which
        # Each (user, version) a version changed is coded ``user * span + version`` (versions in
        # horizon order): an event's first candidate is one binary search, in integers.
        span = np.int64(self.horizon.shape[0] + 1)
        after = np.searchsorted(self.horizon, arrivals, "right")  # the first version after each
        query = users.astype(np.int64) * span + after
        total = sum(len(changed) for changed in self.users if changed is not None)
        top = int(users.max()) + 1
        shards = max(1, -(-total // eventlog.CHUNK_ROWS))  # bounded memory, however many
        bounds = np.linspace(0, top, shards + 1).round().astype(np.int64)
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            asked = np.flatnonzero((users >= low) & (users < high))
            if not asked.shape[0]:
                continue
            parts = []
            for i in some:
                changed = self.users[i]
                assert changed is not None
                lo, hi = np.searchsorted(changed, [low, high])
                parts.append(changed[lo:hi].astype(np.int64) * span + i)
            codes = np.sort(np.concatenate(parts))
            if not codes.shape[0]:
                continue
            at = np.searchsorted(codes, query[asked])
            code = codes[np.minimum(at, codes.shape[0] - 1)]
            version = code % span
            found = (at < codes.shape[0]) & (code // span == users[asked])
            found &= self.since[version] <= times[asked]
            hit = asked[found]
            better = live[version[found]] < best[hit]
            best[hit[better]] = live[version[found]][better]
            which[hit[better]] = version[found][better]
        return best, which

    def _each_version(
        self, live: np.ndarray, times: np.ndarray, users: np.ndarray, arrivals: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The definition, version by version (for histories out of order): events in time
        order, each version's a range of them; with label delays, a mask on arrival."""
        order = np.argsort(times, kind="stable")
        ordered_times, ordered_users = times[order], users[order]
        delayed = arrivals is not times
        ordered_arrivals = arrivals[order] if delayed else ordered_times
        best = np.full(times.shape[0], np.inf)
        which = np.full(times.shape[0], -1, np.int64)
        for i in range(self.horizon.shape[0]):
            end = self.horizon[i] if not delayed else np.inf  # arrival >= time
            low, high = np.searchsorted(ordered_times, [self.since[i], end], "left")
            if low >= high or not np.isfinite(live[i]):
                continue
            hit = ordered_arrivals[low:high] < self.horizon[i]
            changed = self.users[i]
            if changed is not None:
                hit &= _among(ordered_users[low:high], changed)
            hit &= live[i] < best[low:high]
            best[low:high][hit] = live[i]
            which[low:high][hit] = i
        result, version = np.empty_like(best), np.empty_like(which)
        result[order], version[order] = best, which
        return result, version


def _session_starts_by_user(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """The user and start time of every session, in session-id order (its first row's)."""
    events = result.events
    ids, firsts = [], []
    for rows in row_chunks(events.time):
        chunk_ids, first = np.unique(events.session[rows], return_index=True)
        ids.append(chunk_ids)
        firsts.append(first + rows.start)
    # A session that spans chunks starts in the earliest: np.unique keeps first occurrences.
    _, keep = np.unique(np.concatenate(ids), return_index=True)
    first = np.concatenate(firsts)[keep]
    return events.user[first].astype(np.int64), events.time[first]


# --- residual exposure -----------------------------------------------------------------------


def _exposure(
    result: RunResult, metrics: RunMetrics, on_shard: Callable[[str], None] = _quiet
) -> None:
    scenario = result.scenario
    events = result.events
    end, horizon, warmup = scenario.end, scenario.metrics.exposure_horizon, scenario.warmup
    negative = _rows_where(
        events,
        lambda rows: (
            (events.time[rows] >= warmup) & np.isin(events.kind[rows], EXPLICIT_NEGATIVE_KINDS)
        ),
    )
    grid = exposure_grid(horizon)
    matches = (
        ("item", None, Scope.ITEM),
        ("topic", result.item_topic, Scope.TOPIC),
        ("creator", result.item_creator, Scope.CREATOR),
    )
    # Per (match, grid step): impressions in the step after negatives observed through it.
    impressions = np.zeros((2, grid.shape[0]), np.int64)
    observed_negatives = np.zeros((2, grid.shape[0]), np.int64)
    offences = 0
    # Every figure counts a user's own impressions of what they rejected: only impressions of
    # users with a negative are read, and of those only the (user, attribute) keys some negative
    # has are indexed (indexing every impression was 85% of measuring). Users are measured a
    # shard at a time (each with about CHUNK_ROWS rows of users with a negative; every shard
    # scans the log for its rows), and one (user, attribute) index at a time.
    rejected = np.zeros(result.churned_at.shape[0], bool)
    rejected[events.user[negative]] = True
    shards = _user_shards(events, only=rejected)
    for shard, (low, high) in enumerate(shards):
        if len(shards) > 1:
            on_shard(f"measuring residual exposure (users part {shard + 1} of {len(shards)})")

        def in_shard(rows: Any, low: int = low, high: int = high) -> np.ndarray:
            return (events.user[rows] >= low) & (events.user[rows] < high)

        mine = _rows_where(
            events,
            lambda rows: (events.item[rows] >= 0) & in_shard(rows) & rejected[events.user[rows]],
        )
        theirs = negative[in_shard(negative)]
        t = events.time[theirs]
        scope = events.scope[theirs]
        for which_match, (match, attribute, scope_code) in enumerate(matches):
            span = np.int64(
                result.item_topic.shape[0]
                if attribute is None
                else int(attribute.max(initial=0)) + 1
            )
            shown_items = events.item[mine]
            negative_items = np.maximum(events.item[theirs], 0)
            if attribute is not None:
                shown_items, negative_items = attribute[shown_items], attribute[negative_items]
            shown_keys = events.user[mine].astype(np.int64) * span + shown_items
            del shown_items
            negative_keys = events.user[theirs].astype(np.int64) * span + negative_items
            # Only impressions whose (user, attribute) some negative has are ever counted.
            relevant = _among(shown_keys, np.unique(negative_keys))
            index = KeyedTimes(shown_keys[relevant], events.time[mine[relevant]])
            del shown_keys, relevant
            if match != "creator":
                # The mean cumulative function of recurrent events under censoring: each step
                # of the grid adds the impressions in that step per negative observed through
                # it. A cumulative mean over the negatives observed that long instead changes
                # its cohort at every point and can fall as late negatives drop out.
                counts = index.count_windows(negative_keys, t, grid)
                steps = np.diff(counts, axis=0, prepend=0)
                for point, seconds in enumerate(grid):
                    observed = t + seconds <= end  # negatives observed this long
                    impressions[which_match, point] += int(steps[point][observed].sum())
                    observed_negatives[which_match, point] += int(observed.sum())
            # Repeat offences: showing the user again what a negative of this scope rejected,
            # within the horizon (cut at the end of the run).
            which = scope == scope_code
            offences += int(
                index.count(
                    negative_keys[which], t[which], np.minimum(t[which] + horizon, end)
                ).sum()
            )
            del index
    rows: dict[str, list[Any]] = {"match": [], "seconds": [], "per_negative": [], "negatives": []}
    for which_match, (match, _, _) in enumerate(matches[:2]):
        curve, seen = 0.0, True
        for point, seconds in enumerate(grid):
            count = int(observed_negatives[which_match, point])
            seen = seen and count > 0  # no negative observed this long: none observed longer
            if seen:
                curve += impressions[which_match, point] / count
            rows["match"].append(match)
            rows["seconds"].append(float(seconds))
            rows["per_negative"].append(curve if seen else None)
            rows["negatives"].append(count)
    metrics.tables["exposure"] = pa.table(
        {
            "match": pa.array(rows["match"], pa.string()),
            "seconds_since_negative": pa.array(rows["seconds"], pa.float64()),
            "impressions_per_negative": pa.array(rows["per_negative"], pa.float64()),
            "negatives_observed": pa.array(rows["negatives"], pa.int64()),
        }
    )
    metrics.put("explicit_negatives", int(negative.shape[0]))
    metrics.put("repeat_offences", offences)
    metrics.put(
        "repeat_offences_per_negative",
        offences / negative.shape[0] if negative.shape[0] else None,
        "no explicit negatives in the measured period",
    )


# --- regret against the oracle ----------------------------------------------------------------


def _regret(result: RunResult, metrics: RunMetrics) -> None:
    """Expected clicks lost per request against an oracle that knows every user's noise-free
    utility (``metrics.regret``), over the measured period."""
    if result.expected_clicks is None:
        return
    times, served, best = result.expected_clicks
    measured = times >= result.scenario.warmup
    empty = "no requests in the measured period"
    count = int(measured.sum())
    metrics.put("expected_clicks_per_request", served[measured].mean() if count else None, empty)
    metrics.put(
        "oracle_expected_clicks_per_request", best[measured].mean() if count else None, empty
    )
    lost = best[measured] - served[measured]
    metrics.put("regret_per_request", lost.mean() if count else None, empty)
    metrics.put("regret", float(lost.sum()))


# --- suppression after interventions -----------------------------------------------------------


def _suppression(result: RunResult, metrics: RunMetrics) -> None:
    scenario = result.scenario
    spec = scenario.metrics
    events = result.events
    end = scenario.end
    columns: dict[str, list[Any]] = {
        name: [] for name in ("intervention", "kind", "bin_start_seconds", "bad", "population")
    }
    total_bad = 0
    harmful = 0
    for name, affected in result.affected.items():
        if affected.kind not in HARMFUL:
            continue
        harmful += 1
        at = affected.at
        edges = np.arange(at, end, spec.suppression_bin)
        harm = _Harm(edges.shape[0], result.churned_at.shape[0])
        # Chunks cut between different times: a request's rows (its slate, its abandon) together.
        for rows in row_chunks(events.time):
            harm.add(result, rows, affected, edges, max(at - spec.level_window, 0.0))
        bad_per_bin, pop_per_bin = harm.bad_per_bin, harm.population_per_bin
        level = harm.level_bad / harm.level_population if harm.level_population else None
        prefix = f"{name}."
        metrics.put(
            prefix + "level",
            level,
            "no impressions to the affected population before the intervention",
        )
        metrics.put(prefix + "bad_impressions", int(bad_per_bin.sum()))
        total_bad += int(bad_per_bin.sum())
        share = np.divide(
            bad_per_bin, pop_per_bin, out=np.full(edges.shape[0], np.inf), where=pop_per_bin > 0
        )
        for fraction in SUPPRESSION_LEVELS:
            percent = round(100 * fraction)
            if not level:
                reason = "no pre-intervention level to compare with"
                seconds, before_suppression = None, None
            else:
                below = np.flatnonzero(share <= fraction * level)
                reason = f"not suppressed to {percent}% of the level by the end of the run"
                seconds = (
                    float(min(edges[below[0]] + spec.suppression_bin, end) - at)
                    if below.shape[0]
                    else None
                )
                before_suppression = (
                    int(bad_per_bin[: below[0] + 1].sum()) if below.shape[0] else None
                )
            metrics.put(f"{prefix}time_to_{percent}pct_seconds", seconds, reason)
            metrics.put(f"{prefix}bad_before_{percent}pct", before_suppression, reason)
        metrics.put(prefix + "sessions_lost", harm.sessions_lost)
        churned = harm.exposed & np.isfinite(result.churned_at) & (result.churned_at >= at)
        metrics.put(prefix + "churned_exposed_users", int(churned.sum()))
        columns["intervention"] += [name] * edges.shape[0]
        columns["kind"] += [affected.kind] * edges.shape[0]
        columns["bin_start_seconds"] += list(edges - at)
        columns["bad"] += bad_per_bin.tolist()
        columns["population"] += pop_per_bin.tolist()
    if harmful:
        metrics.put("bad_impressions", total_bad)
        for total in ("sessions_lost", "churned_exposed_users"):
            metrics.put(
                total,
                sum(
                    int(metrics.scalars[f"{name}.{total}"] or 0)
                    for name, affected in result.affected.items()
                    if affected.kind in HARMFUL
                ),
            )
    metrics.tables["suppression"] = pa.table(
        {
            "intervention": pa.array(columns["intervention"], pa.string()),
            "kind": pa.array(columns["kind"], pa.string()),
            "seconds_since_intervention": pa.array(columns["bin_start_seconds"], pa.float64()),
            "bad_impressions": pa.array(columns["bad"], pa.int64()),
            "population_impressions": pa.array(columns["population"], pa.int64()),
        }
    )


class _Harm:
    """Bad impressions of one harmful intervention, per suppression bin and before it (the
    level), and what they were associated with: sessions abandoned right after a slate with a
    bad impression, and the users exposed (paired deltas give the effect). Summed over chunks of
    the log."""

    def __init__(self, bins: int, users: int):
        self.bad_per_bin = np.zeros(bins, np.int64)
        self.population_per_bin = np.zeros(bins, np.int64)
        self.level_bad = 0
        self.level_population = 0
        self.sessions_lost = 0
        self.exposed = np.zeros(users, bool)

    def add(
        self,
        result: RunResult,
        rows: slice,
        affected: Any,  # users.world.Affected (sim/ does not import users/)
        edges: np.ndarray,
        level_from: float,
    ) -> None:
        events = result.events
        time, user, item = events.time[rows], events.user[rows], events.item[rows]
        shown = item >= 0
        item = np.where(shown, item, 0)
        if affected.users is not None:  # topic aversion: the averse users, shown the topic
            population = shown & affected.users[user]
            bad = population & (result.item_topic[item] == affected.topic)
        else:  # items turned bad: anyone shown them
            assert affected.items is not None
            population = shown
            bad = shown & affected.items[item]
        at = affected.at
        after = time >= at
        bins = (
            np.searchsorted(
                np.arange(at, result.scenario.end, result.scenario.metrics.suppression_bin),
                time,
                side="right",
            )
            - 1
        )
        size = self.bad_per_bin.shape[0]
        self.bad_per_bin += np.bincount(bins[after & bad], minlength=size)
        self.population_per_bin += np.bincount(bins[after & population], minlength=size)
        before = (time >= level_from) & ~after
        self.level_population += int((population & before).sum())
        self.level_bad += int((bad & before).sum())
        times = np.unique(time)
        request = user.astype(np.int64) * (times.shape[0] + 1) + np.searchsorted(times, time)
        bad_requests = np.unique(request[bad & after])
        abandoned = (events.kind[rows] == Kind.ABANDON) & after
        self.sessions_lost += int(np.isin(request[abandoned], bad_requests).sum())
        self.exposed[user[bad & after]] = True


# --- timeseries ------------------------------------------------------------------------------


def _timeseries(result: RunResult, metrics: RunMetrics) -> None:
    metrics.tables["timeseries"] = timeseries(result)


def timeseries(result: RunResult) -> pa.Table:
    """Business and health metrics per ``metrics.timeseries_bin`` of simulated time.

    Exposure concentration is measured per bin as the run's figures are over the measured
    period, with the bin as the window: ``top1pct_item_share`` and ``topic_gini`` alike, and
    ``catalog_coverage``, the distinct items shown in the bin over the items live in it
    (created before it ends). The run's ``item_coverage`` is the mean of ``catalog_coverage``
    over the measured days; with ``timeseries_bin: 1d`` and a warm-up of whole days, over the
    measured bins. A share of the catalogue shown *per day* has no meaning for a bin of another
    length, so the table has no ``item_coverage`` column.
    """
    scenario = result.scenario
    events = result.events
    width = scenario.metrics.timeseries_bin
    edges = np.arange(0.0, scenario.end, width)
    n = edges.shape[0]
    capacity = max(int(result.item_topic.shape[0]), 1)
    # Items live in a bin: created before it ends.
    live = np.searchsorted(result.item_created_at, np.minimum(edges + width, scenario.end), "left")
    top = top_items(live)
    topics = int(scenario.world.catalog.topics)
    topic_counts = np.zeros((n, topics))
    per_bin = {
        name: np.zeros(n)
        for name in (
            "impressions",
            "clicks",
            "dwell",
            "explicit",
            "requests",
            "abandons",
            "fresh",
            "distinct",
            "top",
        )
    }
    # Chunks of whole bins: each bin's sums run over its rows in order, as over the whole log.
    for rows in row_chunks(events.time, edges):
        # each row's bin: the log is in time order, so from where each bin starts in it
        starts = np.searchsorted(events.time[rows], edges, side="left")
        bins = np.repeat(np.arange(n), np.diff(starts, append=rows.stop - rows.start))
        shown, fresh = _fresh(result, rows)
        kind = events.kind[rows]
        click = kind == Kind.CLICK
        items = events.item[rows][shown]
        for name, mask, weights in (
            ("impressions", shown, None),
            ("clicks", click, None),
            ("dwell", click, events.dwell[rows]),
            ("explicit", np.isin(kind, EXPLICIT_NEGATIVE_KINDS), None),
            ("requests", shown & (events.position[rows] == 0), None),
            ("abandons", kind == Kind.ABANDON, None),
            ("fresh", fresh, None),
        ):
            per_bin[name] += np.bincount(
                bins[mask],
                weights=None if weights is None else weights[mask].astype(np.float64),
                minlength=n,
            )
        pairs, shows = np.unique(
            bins[shown].astype(np.int64) * capacity + items, return_counts=True
        )
        pair_bins = pairs // capacity
        per_bin["distinct"] += np.bincount(pair_bins, minlength=n)
        # Every bin lies in one chunk: its top items are its (bin, item) pairs with the most
        # impressions, ranked within the bin.
        order = np.lexsort((-shows, pair_bins))
        ranked_bins = pair_bins[order]
        rank = np.arange(order.shape[0]) - np.searchsorted(ranked_bins, ranked_bins, "left")
        among_top = rank < top[ranked_bins]
        per_bin["top"] += np.bincount(
            ranked_bins[among_top], weights=shows[order][among_top], minlength=n
        )
        cells = bins[shown].astype(np.int64) * topics + result.item_topic[items]
        topic_counts += np.bincount(cells, minlength=n * topics).reshape(n, topics)
    impressions, clicks, explicit = per_bin["impressions"], per_bin["clicks"], per_bin["explicit"]
    sessions = np.bincount(
        np.searchsorted(edges, result.session_starts, side="right") - 1, minlength=n
    )
    churn_times = result.churned_at[np.isfinite(result.churned_at)]
    churned = np.bincount(np.searchsorted(edges, churn_times, side="right") - 1, minlength=n)

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> pa.Array:
        empty = denominator <= 0
        values = np.divide(numerator, denominator, out=np.zeros(n), where=~empty)
        return pa.array(values, mask=empty)

    concentration = np.array([gini(row) if row.sum() else 0.0 for row in topic_counts])
    if result.expected_clicks is None:
        regret = pa.nulls(n, pa.float64())
    else:
        times, served, best = result.expected_clicks
        request_bins = np.searchsorted(edges, times, side="right") - 1
        lost = np.bincount(request_bins, weights=best - served, minlength=n)
        regret = ratio(lost, np.bincount(request_bins, minlength=n).astype(np.float64))
    return pa.table(
        {
            "start_seconds": edges,
            "measured": edges >= scenario.warmup,
            "requests": per_bin["requests"].astype(np.int64),
            "impressions": impressions.astype(np.int64),
            "clicks": clicks.astype(np.int64),
            "ctr": ratio(clicks, impressions),
            "mean_dwell_seconds": ratio(per_bin["dwell"], clicks),
            "explicit_negatives": explicit.astype(np.int64),
            "explicit_negative_rate": ratio(explicit, impressions),
            "sessions": sessions[:n].astype(np.int64),
            "abandoned_sessions": per_bin["abandons"].astype(np.int64),
            "churned_users": churned[:n].astype(np.int64),
            "catalog_coverage": ratio(per_bin["distinct"], live.astype(np.float64)),
            "topic_gini": pa.array(concentration, mask=impressions == 0),
            "top1pct_item_share": ratio(per_bin["top"], impressions),
            "regret_per_request": regret,
            "fresh_impression_share": ratio(per_bin["fresh"], impressions),
        }
    )
