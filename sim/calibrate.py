"""Calibrate a world to an event log: ``recloop calibrate LOG --out world.yaml``.

The log (Parquet or CSV) has a row per impression with at least ``user``, ``item``, ``time`` and
``kind``, optionally ``position``, ``session``, ``topic``, ``creator`` and ``dwell``. What the log
identifies is fitted and mapped onto the parametric world's own parameters (see
:mod:`users.behavior`, :mod:`users.arrivals`, :mod:`users.catalog`):

- activity: per-user sessions per day (a zero-truncated Poisson-lognormal, by maximum
  likelihood), the diurnal profile (the first harmonic of session start hours), requests per
  session and browse gaps (a shifted exponential), and abandonment (a linear hazard in the
  request's clicks and explicit negatives, as the world applies it);
- catalogue: items at the start and new items per day (the curve of items first seen), topics and
  creators (their columns);
- behaviour: examination by position (``examine_decay``, from the share of impressions examined,
  or from the click-through rate by position when the log does not tell skips from unexamined
  impressions), the click threshold, the popularity slope and the spread of item quality (a
  marginal likelihood of every item's clicks over its unknown popularity rank and quality), the
  explicit negatives' rate and mix, letdowns, dwell;
- user preferences: a logistic matrix factorization of clicks on examined impressions whose
  dimension is chosen by held-out likelihood, reported with the lower bound its interaction
  spread puts on ``affinity_weight`` (shrunk by its prior, so not written into the world).

What the log cannot identify keeps its default and is listed. Identification assumes what the
recloop world assumes: slates drawn independently of the user's response (a uniformly random
logging policy identifies everything above; a ranking policy confounds position with relevance
and item popularity with exposure, and the fitted values then describe the logging policy as much
as the users).
"""

from __future__ import annotations

import math
import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim.domain import Kind
from sim.errors import RecloopError
from sim.scenario.durations import format_duration

__all__ = [
    "EventData",
    "Fitted",
    "Calibration",
    "read_log",
    "parse_kind_map",
    "log_statistics",
    "fit_world",
    "scenario_text",
    "parse_text",
    "simulate_log",
    "refine_activity",
    "compare_logs",
    "calibrate",
]

DAY = 86400.0
#: The steps :func:`calibrate` reports to its progress callback, in order.
STEPS = (
    "reading the log",
    "activity",
    "catalogue",
    "position effect",
    "user preferences",
    "clicks and popularity",
    "negatives and dwell",
    "refining the activity by simulation",
    "simulating the fitted world",
    "writing the report",
)
KIND_NAMES = tuple(kind.name.lower() for kind in Kind)
REQUIRED = ("user", "item", "time", "kind")
#: Without a session column, a user's requests more than this apart start a new session.
SESSION_GAP = 1800.0
EXPLICIT_NAMES = ("dismiss", "not_interested", "thumbs_down", "block_creator")
#: Examined impressions the preference factorization trains on at most (a uniform sample).
FACTORIZATION_ROWS = 500_000
FACTORIZATION_DIMS = (0, 1, 2, 4, 8, 16)
#: Full-batch Adam steps per factorization.
FACTORIZATION_STEPS = 60
#: Penalty per squared parameter, per training row: a normal prior of variance 1 / (2 * this).
FACTORIZATION_PRIOR = 5.0


# --- reading ---------------------------------------------------------------------------------


@dataclass
class EventData:
    """A log's columns as arrays: ids as dense codes, time in seconds from the first midnight,
    kind as :class:`sim.domain.Kind` codes; optional columns are None when absent."""

    time: np.ndarray
    user: np.ndarray
    item: np.ndarray  # -1 on rows that are not about an item (abandon)
    kind: np.ndarray
    position: np.ndarray | None = None
    session: np.ndarray | None = None
    topic: np.ndarray | None = None
    creator: np.ndarray | None = None
    dwell: np.ndarray | None = None
    source: str = "log"

    def __len__(self) -> int:
        return int(self.time.shape[0])


def parse_kind_map(text: str | None) -> dict[str, str]:
    """``--map click=1,dismiss=dislike``: each log value (right) as the recloop kind (left)."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not value.strip():
            raise RecloopError(f"--map {part.strip()!r}: write KIND=VALUE, e.g. click=1")
        if name not in KIND_NAMES:
            raise RecloopError(
                f"--map {part.strip()!r}: {name!r} is not a recloop kind ({', '.join(KIND_NAMES)})"
            )
        mapping[value.strip()] = name
    return mapping


def read_log(path: str | Path, kind_map: dict[str, str] | None = None) -> EventData:
    """Read a Parquet or CSV log; a bad file, column or value is one :class:`RecloopError` line
    naming the path, the column and the value."""
    path = Path(path)
    table = _read_table(path)
    return events_from_table(table, kind_map or {}, str(path))


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise RecloopError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            from pyarrow import csv

            options = csv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return csv.read_csv(path, parse_options=options)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as error:
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecloopError(f"{path}: not a readable {kind} file ({first})") from None


def events_from_table(table: pa.Table, kind_map: dict[str, str], source: str) -> EventData:
    """:class:`EventData` from an Arrow table of the log's columns."""
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise RecloopError(
            f"{source}: missing column {missing[0]!r} (a log needs {', '.join(REQUIRED)}; "
            f"found {', '.join(table.column_names) or 'none'})"
        )
    if table.num_rows == 0:
        raise RecloopError(f"{source}: no rows")
    for name in REQUIRED:
        nulls = table.column(name).null_count
        if nulls and name != "item":
            raise RecloopError(f"{source}: column {name!r} has {nulls} empty values")
    kind = _kinds(table.column("kind"), kind_map, source)
    time = _times(table.column("time"), source)
    origin = math.floor(float(time.min()) / DAY) * DAY  # hours of day stay hours of day
    user = _codes(table.column("user"))
    item_column = table.column("item")
    not_item = kind == Kind.ABANDON
    if item_column.null_count:
        bad = np.flatnonzero(item_column.is_null().to_numpy(zero_copy_only=False) & ~not_item)
        if bad.shape[0]:
            raise RecloopError(
                f"{source}: column 'item' is empty on row {int(bad[0])} (kind "
                f"{KIND_NAMES[kind[bad[0]]]}); only abandon rows may have no item"
            )
    item = _codes(item_column, drop=not_item)
    data = EventData(time=time - origin, user=user, item=item, kind=kind, source=source)
    names = table.column_names
    if "position" in names:
        data.position = _integers(table.column("position"), "position", source, not_item)
    if "session" in names:
        data.session = _codes(table.column("session"))
    if "topic" in names:
        data.topic = _codes(table.column("topic"), drop=not_item)
    if "creator" in names:
        data.creator = _codes(table.column("creator"), drop=not_item)
    if "dwell" in names:
        dwell = _numbers(table.column("dwell"), "dwell", source)
        bad = np.flatnonzero(~np.isfinite(dwell) | (dwell < 0))
        if bad.shape[0]:
            raise RecloopError(
                f"{source}: column 'dwell' has {dwell[bad[0]]} on row {int(bad[0])} (seconds, "
                "at least 0)"
            )
        data.dwell = dwell
    return data


def _kinds(column: pa.ChunkedArray, kind_map: dict[str, str], source: str) -> np.ndarray:
    if pa.types.is_dictionary(column.type):  # map the dictionary, not every row's string
        combined = column.combine_chunks()
        unique = pc.cast(combined.dictionary, pa.string()).to_numpy(zero_copy_only=False)
        inverse = combined.indices.to_numpy(zero_copy_only=False)
        unique = unique.astype(str)
        used = np.zeros(unique.shape[0], bool)
        used[np.unique(inverse)] = True
        unique = np.where(used, unique, KIND_NAMES[0])  # an unused entry need not be a kind
    else:
        values = pc.cast(column, pa.string()).to_numpy(zero_copy_only=False).astype(str)
        unique, inverse = np.unique(values, return_inverse=True)
    codes = np.empty(unique.shape[0], np.int8)
    for index, value in enumerate(unique.tolist()):
        name = kind_map.get(value, value if value in KIND_NAMES else None)
        if name is None:
            raise RecloopError(
                f"{source}: column 'kind' has {value!r}, not a recloop kind "
                f"({', '.join(KIND_NAMES)}); map it with --map KIND={value}"
            )
        codes[index] = KIND_NAMES.index(name)
    return codes[inverse]


def _times(column: pa.ChunkedArray, source: str) -> np.ndarray:
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        seconds = pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64()).to_numpy() / 1e6
        return seconds.astype(np.float64)
    return _numbers(column, "time", source)


def _numbers(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        sample = column.drop_null().slice(0, 1).to_pylist()
        raise RecloopError(
            f"{source}: column {name!r} is not numeric (e.g. {sample[0]!r})"
            if sample
            else f"{source}: column {name!r} is not numeric"
        ) from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.shape[0]:
        raise RecloopError(f"{source}: column {name!r} has {values[bad[0]]} on row {int(bad[0])}")
    return values


def _integers(column: pa.ChunkedArray, name: str, source: str, ignore: np.ndarray) -> np.ndarray:
    values = np.where(ignore, 0.0, np.nan_to_num(_numbers_or_null(column, name, source), nan=-1))
    bad = np.flatnonzero((values < 0) | (values != np.round(values)))
    if bad.shape[0]:
        raise RecloopError(
            f"{source}: column {name!r} has {values[bad[0]]} on row {int(bad[0])} (a slate "
            "position from 0)"
        )
    return np.where(ignore, -1, values).astype(np.int32)


def _numbers_or_null(column: pa.ChunkedArray, name: str, source: str) -> np.ndarray:
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise RecloopError(f"{source}: column {name!r} is not numeric") from None


def _codes(column: pa.ChunkedArray, drop: np.ndarray | None = None) -> np.ndarray:
    """Dense codes of any id column (numbers or strings); ``drop`` rows and nulls become -1."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    values = column.to_numpy(zero_copy_only=False)
    null = column.is_null().to_numpy(zero_copy_only=False)
    if drop is not None:
        null = null | drop
    if values.dtype == object:
        values = np.where(null, "", values.astype(str))
    else:
        values = np.where(null, values.min() if values.shape[0] else 0, values)
    keep = ~null
    codes = np.full(values.shape[0], -1, np.int64)
    if not keep.any():
        return codes
    kept = values[keep]
    if np.issubdtype(kept.dtype, np.integer):
        low, high = int(kept.min()), int(kept.max())
        if high - low < 4 * kept.shape[0] + 1_000_000:
            # ids in a compact range (recloop's, most databases'): rank by a presence table, in
            # linear time instead of a sort (the ids of a 10-million-row log: 10 s less)
            present = np.zeros(high - low + 1, bool)
            present[kept - low] = True
            rank = np.cumsum(present) - 1
            codes[keep] = rank[kept - low]
            return codes
    _, codes[keep] = np.unique(kept, return_inverse=True)
    return codes


# --- statistics of a log ---------------------------------------------------------------------


@dataclass
class Statistics:
    """What the fit and the comparison read from a log, computed once."""

    days: float
    n_rows: int
    n_users: int
    n_items: int
    slate_size: int
    has_skip: bool
    # per request (time order within user)
    request_time: np.ndarray
    request_user: np.ndarray
    request_clicks: np.ndarray  # kind == click, as the world's abandonment counts them
    request_explicit: np.ndarray
    request_abandoned: np.ndarray
    # per session
    session_start: np.ndarray
    session_requests: np.ndarray
    session_abandoned: np.ndarray
    sessions_per_user: np.ndarray  # over users seen at least once
    gaps: np.ndarray  # between consecutive requests of a session
    # impressions
    position_shown: np.ndarray  # per position
    position_examined: np.ndarray
    position_clicked: np.ndarray
    kind_counts: dict[str, int]
    impressions: int
    examined: int
    clicked: int
    letdowns: int
    # items
    item_examined: np.ndarray
    item_clicked: np.ndarray
    item_first_seen: np.ndarray
    n_topics: int | None
    n_creators: int | None
    click_dwell: np.ndarray | None
    short_dwell_max: float | None
    click_dwell_min: float | None
    examined_rows: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False, default=None)  # type: ignore[assignment]


def log_statistics(data: EventData) -> Statistics:
    """Everything :func:`fit_world` and :func:`compare_logs` need, in vectorized passes."""
    kind = data.kind
    on_item = data.item >= 0
    # Requests: the rows of one user at one time (a slate, and its abandon row if any).
    order = np.lexsort((data.time, data.user))
    user, when = data.user[order], data.time[order]
    new = np.empty(order.shape[0], bool)
    new[0] = True
    new[1:] = (user[1:] != user[:-1]) | (when[1:] != when[:-1])
    request_of_row = np.empty(order.shape[0], np.int64)
    request_of_row[order] = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    n_requests = starts.shape[0]
    request_user, request_time = user[starts], when[starts]
    clicks = np.bincount(request_of_row, kind == Kind.CLICK, n_requests)
    explicit = np.bincount(
        request_of_row, (kind >= Kind.DISMISS) & (kind <= Kind.BLOCK_CREATOR), n_requests
    )
    abandoned = np.bincount(request_of_row, kind == Kind.ABANDON, n_requests) > 0
    # Sessions: the log's, or a user's requests no more than SESSION_GAP apart.
    first_of_user = np.empty(n_requests, bool)
    first_of_user[0] = True
    first_of_user[1:] = request_user[1:] != request_user[:-1]
    if data.session is not None:
        session = data.session[order][starts]
        new_session = first_of_user.copy()
        new_session[1:] |= session[1:] != session[:-1]
    else:
        new_session = first_of_user.copy()
        new_session[1:] |= np.diff(request_time) > SESSION_GAP
    session_index = np.cumsum(new_session) - 1
    session_starts = np.flatnonzero(new_session)
    session_requests = np.diff(np.append(session_starts, n_requests))
    session_abandoned = np.bincount(session_index, abandoned, session_starts.shape[0]) > 0
    within = ~new_session
    gaps = np.diff(request_time)[within[1:]]
    session_user = request_user[session_starts]
    sessions_per_user = np.bincount(session_user)
    sessions_per_user = sessions_per_user[sessions_per_user > 0]

    examined = on_item & (kind != Kind.IMPRESSION)
    letdown = (
        (kind == Kind.THUMBS_DOWN) & (data.dwell > 0)
        if data.dwell is not None
        else np.zeros_like(on_item)
    )
    clicked = (kind == Kind.CLICK) | (kind == Kind.SHORT_DWELL) | letdown
    slate = 1
    if data.position is not None:
        position = np.where(on_item, data.position, 0)
        slate = int(position.max()) + 1
        shown = np.bincount(position[on_item], minlength=slate)
        exam = np.bincount(position[examined], minlength=slate)
        click_at = np.bincount(position[clicked], minlength=slate)
    else:
        per_request = np.bincount(request_of_row[on_item], minlength=n_requests)
        slate = int(per_request.max()) if n_requests else 1
        shown = np.array([on_item.sum()])
        exam = np.array([examined.sum()])
        click_at = np.array([clicked.sum()])
    counts = np.bincount(kind, minlength=len(KIND_NAMES))
    kind_counts = {name: int(counts[code]) for code, name in enumerate(KIND_NAMES)}
    n_items = int(data.item.max()) + 1 if on_item.any() else 0
    item_examined = np.bincount(data.item[examined], minlength=n_items)
    item_clicked = np.bincount(data.item[clicked], minlength=n_items)
    first_seen = np.full(n_items, np.inf)
    np.minimum.at(first_seen, data.item[on_item], data.time[on_item])
    click_dwell = short_max = click_min = None
    if data.dwell is not None:
        click_dwell = data.dwell[clicked]
        short = data.dwell[kind == Kind.SHORT_DWELL]
        short_max = float(short.max()) if short.shape[0] else None
        plain = data.dwell[kind == Kind.CLICK]
        click_min = float(plain.min()) if plain.shape[0] else None
    span = float(data.time.max())
    return Statistics(
        days=max(math.ceil(span / 3600.0) * 3600.0, 3600.0) / DAY,
        n_rows=len(data),
        n_users=int(sessions_per_user.shape[0]),
        n_items=int(np.isfinite(first_seen).sum()),
        slate_size=slate,
        has_skip=bool(kind_counts["skip"] > 0),
        request_time=request_time,
        request_user=request_user,
        request_clicks=clicks,
        request_explicit=explicit,
        request_abandoned=abandoned,
        session_start=request_time[session_starts],
        session_requests=session_requests,
        session_abandoned=session_abandoned,
        sessions_per_user=sessions_per_user,
        gaps=gaps,
        position_shown=shown,
        position_examined=exam,
        position_clicked=click_at,
        kind_counts=kind_counts,
        impressions=int(on_item.sum()),
        examined=int(examined.sum()),
        clicked=int(clicked.sum()),
        letdowns=int(letdown.sum()),
        item_examined=item_examined,
        item_clicked=item_clicked,
        item_first_seen=first_seen[np.isfinite(first_seen)],
        n_topics=int(np.unique(data.topic[on_item]).shape[0]) if data.topic is not None else None,
        n_creators=(
            int(np.unique(data.creator[on_item]).shape[0]) if data.creator is not None else None
        ),
        click_dwell=click_dwell,
        short_dwell_max=short_max,
        click_dwell_min=click_min,
        examined_rows=(data.user[examined], data.item[examined], clicked[examined]),
    )


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """One fitted parameter: where it goes, its value, what it came from and how sure it is."""

    path: str  # dotted path in the scenario, e.g. world.behavior.click_at
    value: float
    source: str
    se: float | None = None  # standard error (None: exact, a count, or not estimated)
    duration: bool = False  # written as a duration
    integer: bool = False

    def text(self) -> str:
        """The value as the scenario writes it."""
        if self.integer:
            return str(int(round(self.value)))
        if self.duration:
            return f"{_four_digits(self.value)}s" if self.value else "0s"
        return _four_digits(self.value)

    def comment(self) -> str:
        uncertainty = "" if self.se is None else f"; SE {_significant(self.se, self.duration)}"
        return f"{self.source}{uncertainty}"


def _four_digits(value: float) -> str:
    return np.format_float_positional(value, 4, unique=False, fractional=False, trim="-")


def _significant(value: float, duration: bool) -> str:
    text = np.format_float_positional(value, 2, unique=False, fractional=False, trim="-")
    return f"{text}s" if duration else text


@dataclass
class Calibration:
    """What :func:`fit_world` found: the fitted parameters, what it could not identify, and the
    scenario facts (slate size, duration) the world is written with."""

    fitted: dict[str, Fitted]
    not_identified: list[str]
    notes: list[str]
    slate_size: int
    duration: float
    factorization: list[dict[str, float]] = field(default_factory=list)

    def value(self, path: str, default: float | None = None) -> float:
        if path in self.fitted:
            return self.fitted[path].value
        if default is None:
            raise KeyError(path)
        return default

    def world(self) -> dict[str, Any]:
        """The fitted values as a nested ``world`` mapping (what the scenario's YAML holds)."""
        world: dict[str, Any] = {}
        for path, fitted in self.fitted.items():
            node = world
            parts = path.split(".")[1:]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = fitted
        return world


Progress = Callable[[str], None]


def fit_world(
    stats: Statistics, progress: Progress | None = None, seed: int = 0, factorize: bool = True
) -> Calibration:
    """Fit the parametric world's parameters to a log's statistics (see the module docstring)."""
    from sim.scenario.spec import Behavior, Catalog

    step = progress or (lambda _: None)
    fitted: dict[str, Fitted] = {}
    not_identified: list[str] = [
        "world.users.topic_concentration, idiosyncrasy and drift (preference structure: the "
        "factorization reports it)",
        "world.catalog.dim and topic_spread (the factorization's dimension is reported, not "
        "mapped: item vectors live around topic centroids)",
        "world.behavior.noise_sd, click_temperature, quality_weight and popularity_weight (they "
        "fix the utility scale: quality_sd and zipf_exponent are fitted on it)",
        "world.behavior.explicit_at (only explicit_prob is fitted at the default threshold), "
        "dwell_utility_slope, freshness",
        "world.behavior.churn_after_bad_sessions and churn_prob (a user who quits looks like a "
        "less active one)",
    ]
    notes: list[str] = []

    def put(path: str, value: float, source: str, se: float | None = None, **kind: bool) -> None:
        fitted[path] = Fitted(path, float(value), source, se, **kind)

    step("activity")
    users_fit = _fit_sessions_per_day(stats.sessions_per_user, stats.days)
    put(
        "world.users.count",
        users_fit["count"],
        users_fit["count_source"],
        users_fit["count_se"],
        integer=True,
    )
    put(
        "world.users.sessions_per_day.median",
        users_fit["median"],
        f"Poisson-lognormal ML over {stats.n_users:,} users' session counts in "
        f"{stats.days:.3g} days",
        users_fit["median_se"],
    )
    put(
        "world.users.sessions_per_day.sigma",
        users_fit["sigma"],
        "same fit: spread of per-user rates",
        users_fit["sigma_se"],
    )
    amplitude, peak, amplitude_se, peak_se = _fit_diurnal(stats.session_start)
    if stats.days >= 1:
        put(
            "world.users.diurnal.amplitude",
            amplitude,
            f"first harmonic of {stats.session_start.shape[0]:,} session start hours",
            amplitude_se,
        )
        put("world.users.diurnal.peak_hour", peak, "same harmonic's phase", peak_se)
    else:
        not_identified.append("world.users.diurnal (the log spans less than a day)")
    n_requests = stats.request_time.shape[0]
    ended = int((~stats.session_abandoned).sum())
    p_last = ended / n_requests
    put(
        "world.users.session.requests_mean",
        1.0 / p_last,
        f"{n_requests:,} requests / {ended:,} sessions not abandoned (abandonment cuts the "
        "planned length)",
        math.sqrt(p_last * (1 - p_last) / n_requests) / p_last**2,
    )
    if stats.gaps.shape[0] >= 2:
        gap_min = float(stats.gaps.min())
        gap_mean = max(float(stats.gaps.mean()) - gap_min, 0.0)
        put(
            "world.users.session.gap_min",
            gap_min,
            f"shortest of {stats.gaps.shape[0]:,} gaps between requests of a session",
            gap_mean / stats.gaps.shape[0],
            duration=True,
        )
        put(
            "world.users.session.gap_mean",
            gap_mean,
            "mean gap beyond gap_min",
            gap_mean / math.sqrt(stats.gaps.shape[0]),
            duration=True,
        )
    else:
        not_identified.append("world.users.session gaps (no session has two requests)")
    for path, value, se, source in _fit_abandonment(stats, p_last):
        put(path, value, source, se)

    step("catalogue")
    items, new_per_day, new_se, items_source = _fit_arrivals(stats.item_first_seen, stats.days)
    # SE: the arrivals subtracted, new_items_per_day x days, carry all the uncertainty
    put("world.catalog.items", items, items_source, new_se * stats.days, integer=True)
    put(
        "world.catalog.new_items_per_day",
        new_per_day,
        "items first seen per day in the log's second half",
        new_se,
    )
    if stats.n_topics is not None:
        put("world.catalog.topics", stats.n_topics, "distinct topics in the log", integer=True)
    else:
        not_identified.append("world.catalog.topics (no topic column)")
    if stats.n_creators is not None:
        put(
            "world.catalog.creators", stats.n_creators, "distinct creators in the log", integer=True
        )
    else:
        not_identified.append("world.catalog.creators (no creator column)")

    step("position effect")
    decay = _fit_examination(stats)
    if decay is None:
        not_identified.append("world.behavior.examine_decay (no position column)")
    else:
        put("world.behavior.examine_decay", decay[0], decay[2], decay[1])

    behavior = Behavior()
    catalog_spec = Catalog(
        items=max(int(items), 1),
        topics=int(stats.n_topics or Catalog().topics),
        creators=int(stats.n_creators or Catalog().creators),
        new_items_per_day=0,
    )
    sample = _world_sample(catalog_spec, seed)
    factorization: list[dict[str, float]] = []
    if factorize:
        step("user preferences")
        factorization, found = _factorize(stats, behavior, sample["spread"], seed, step)
        if found is not None:
            implied, weight_se, dim = found
            # Not written into the world: the factorization's prior shrinks the spread by an
            # amount that depends on the clicks per user and item (on the example world's
            # 10-million-row log it implied 0.54 where the truth is 1.5), so it bounds the weight
            # from below rather than measuring it.
            notes.append(
                f"preferences: held-out likelihood chooses a rank-{dim} factorization; its "
                f"interaction spread implies affinity_weight of at least {implied:.3g} (SE "
                f"{weight_se:.2g}; shrunk by regularization): affinity_weight keeps its default "
                f"{behavior.affinity_weight}"
            )
        else:
            notes.append(
                "preferences: no personal structure that held-out clicks confirm (the "
                "factorization's chosen dimension is 0); affinity_weight keeps its default"
            )
    not_identified.append(
        "world.behavior.affinity_weight (the factorization reports a dimension and a lower bound, "
        "see the notes)"
        if factorize
        else "world.behavior.affinity_weight (factorization skipped)"
    )

    step("clicks and popularity")
    clicks = _fit_item_clicks(stats, behavior, sample, catalog_spec, seed)
    put(
        "world.behavior.click_at",
        clicks["click_at"],
        f"marginal likelihood of {int((stats.item_examined > 0).sum()):,} items' clicks on "
        f"{stats.examined:,} examined impressions, over the affinities of {_SAMPLE_WORLDS} drawn "
        "worlds",
        clicks["click_at_se"],
    )
    exponent = clicks["slope"] / behavior.popularity_weight
    if exponent > 5:
        notes.append(
            f"the popularity slope {clicks['slope']:.3g} exceeds zipf_exponent 5 at "
            f"popularity_weight {behavior.popularity_weight}: capped at 5"
        )
        exponent = 5.0
    put(
        "world.catalog.zipf_exponent",
        exponent,
        f"same likelihood: popularity slope {clicks['slope']:.3g} / popularity_weight "
        f"{behavior.popularity_weight} (only the product is identified)",
        clicks["slope_se"] / behavior.popularity_weight,
    )
    put(
        "world.catalog.quality_sd",
        clicks["quality_sd"],
        "same likelihood: spread of item effects beyond popularity",
        clicks["quality_sd_se"],
    )
    behavior = behavior.model_copy(update={"click_at": clicks["click_at"]})

    step("negatives and dwell")
    draws = _utility_draws(behavior, sample, clicks, stats.n_items, seed)
    for path, value, error, source in _fit_negatives(stats, behavior, draws, notes):
        put(path, value, source, error)
    for path, value, error, source, is_duration in _fit_dwell(stats, behavior, draws, notes):
        put(path, value, source, error, duration=is_duration)
    if stats.click_dwell is None:
        not_identified.append("world.behavior dwell (no dwell column)")
    calibration = Calibration(
        fitted=fitted,
        not_identified=not_identified,
        notes=notes,
        slate_size=stats.slate_size,
        duration=stats.days * DAY,
        factorization=factorization,
    )
    return calibration


def _numeric_hessian(function: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """Central-difference Hessian, for standard errors from the observed information."""
    n = x.shape[0]
    # Steps of 1% of the scale: the likelihoods interpolate tables, so finer differences see the
    # interpolation's kinks instead of the curvature.
    steps = 1e-2 * np.maximum(np.abs(x), 1.0)
    hessian = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.zeros(n), np.zeros(n)
            ei[i], ej[j] = steps[i], steps[j]
            value = (
                function(x + ei + ej)
                - function(x + ei - ej)
                - function(x - ei + ej)
                + function(x - ei - ej)
            ) / (4 * steps[i] * steps[j])
            hessian[i, j] = hessian[j, i] = value
    return hessian


def _standard_errors(function: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    hessian = _numeric_hessian(function, x)
    try:
        covariance = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return np.full(x.shape[0], np.nan)
    return np.sqrt(np.clip(np.diag(covariance), 0, None))


def _fit_sessions_per_day(counts: np.ndarray, days: float) -> dict[str, Any]:
    """Zero-truncated Poisson-lognormal fit of sessions per seen user; users never seen are
    added back from the fitted chance of a user having no session in the log."""
    from scipy.optimize import minimize
    from scipy.special import gammaln, logsumexp

    values, weights = np.unique(counts, return_counts=True)
    nodes, node_weights = np.polynomial.hermite_e.hermegauss(48)
    log_node_weights = np.log(node_weights / node_weights.sum())

    def log_terms(theta: np.ndarray) -> tuple[np.ndarray, float]:
        log_median, log_sigma = theta
        mean = np.exp(log_median + np.exp(log_sigma) * nodes) * days  # (nodes,)
        log_p = values[:, None] * np.log(mean) - mean - gammaln(values + 1.0)[:, None]
        log_pn = logsumexp(log_p + log_node_weights, axis=1)
        log_p0 = float(logsumexp(-mean + log_node_weights))
        return log_pn, log_p0

    def negative(theta: np.ndarray) -> float:
        log_pn, log_p0 = log_terms(theta)
        return -float(weights @ (log_pn - np.log1p(-min(math.exp(log_p0), 1 - 1e-12))))

    start = np.array([math.log(max(counts.mean() / days, 1e-3)), math.log(0.5)])
    result = minimize(
        negative,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 2000},
    )
    theta = result.x
    theta[1] = max(theta[1], math.log(1e-3))
    se = _standard_errors(negative, theta)
    median, sigma = math.exp(theta[0]), math.exp(theta[1])
    seen = 1.0 - math.exp(log_terms(theta)[1])
    n = counts.shape[0]
    count = n / seen
    return {
        "median": median,
        "median_se": median * se[0],
        "sigma": sigma,
        "sigma_se": sigma * se[1],
        "count": count,
        # binomial: seen users out of the population, at the fitted chance of being seen
        "count_se": math.sqrt(count * seen * (1 - seen)) / seen,
        "count_source": f"{n:,} users seen / {seen:.3f}, the fitted chance that a user has a "
        "session in the log",
    }


def _fit_diurnal(starts: np.ndarray) -> tuple[float, float, float, float]:
    """Amplitude and peak hour of ``1 + a cos(2 pi (h - peak) / 24)`` from session start hours:
    the density's first harmonic is ``a / 2``."""
    angle = 2 * np.pi * (starts % DAY) / DAY
    c, s = float(np.cos(angle).mean()), float(np.sin(angle).mean())
    n = starts.shape[0]
    amplitude = min(2 * math.hypot(c, s), 0.95)
    peak = (math.atan2(s, c) * 24 / (2 * math.pi)) % 24
    amplitude_se = math.sqrt(2.0 / n)
    peak_se = 24 / (2 * math.pi) * amplitude_se / max(amplitude, 1e-9)
    return amplitude, peak, amplitude_se, min(peak_se, 12.0)


def _fit_abandonment(stats: Statistics, p_last: float) -> list[tuple[str, float, float, str]]:
    """Weighted least squares of the abandonment share by (no click, explicit negatives) on the
    world's hazard ``(1 - 1/requests_mean) * (base + no_click [clicks == 0] + per_explicit
    * explicit)``."""
    no_click = (stats.request_clicks == 0).astype(np.int64)
    explicit = np.minimum(stats.request_explicit, 3).astype(np.int64)
    group = no_click * 4 + explicit
    requests = np.bincount(group, minlength=8).astype(np.float64)
    left = np.bincount(group, stats.request_abandoned, minlength=8)
    present = requests > 0
    rate = np.where(present, left / np.maximum(requests, 1), 0) / (1 - p_last)
    design = np.stack([np.ones(8), np.repeat([0.0, 1.0], 4), np.tile(np.arange(4.0), 2)], 1)
    variance = np.maximum(rate * (1 - np.minimum(rate, 1)), 1e-6) / np.maximum(requests, 1)
    weight = np.where(present, 1.0 / variance, 0.0)
    columns = [0, 1] + ([2] if requests[np.arange(8) % 4 > 0].sum() else [])
    x = design[:, columns]
    information = x.T @ (weight[:, None] * x)
    try:
        covariance = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        return []
    beta = covariance @ (x.T @ (weight * rate))
    se = np.sqrt(np.diag(covariance))
    names = ("abandon_base", "abandon_no_click", "abandon_per_explicit")
    sources = (
        "abandon share of requests with a click",
        "extra abandon share of requests without a click",
        "extra abandon share per explicit negative",
    )
    return [
        (
            f"world.behavior.{names[c]}",
            float(np.clip(beta[i], 0, 1)),
            float(se[i]),
            f"weighted least squares over {int(requests.sum()):,} requests: {sources[c]}",
        )
        for i, c in enumerate(columns)
    ]


def _fit_arrivals(first_seen: np.ndarray, days: float) -> tuple[float, float, float, str]:
    """Items at the start and new items per day from the times items were first seen: in the
    log's second half the starting catalogue has been seen and new items are what is new."""
    total = first_seen.shape[0]
    if days < 1:
        return float(total), 0.0, 0.0, f"{total:,} distinct items (log under a day: no arrivals)"
    half = days * DAY / 2
    late = int((first_seen >= half).sum())
    per_day = late / (days / 2)
    items = max(total - per_day * days, 1.0)
    return (
        items,
        per_day,
        math.sqrt(max(late, 1)) / (days / 2),
        f"{total:,} distinct items less {per_day * days:,.0f} new ones over {days:.3g} days",
    )


def _fit_examination(stats: Statistics) -> tuple[float, float, str] | None:
    """``examine_decay`` d with examination ``d ** position``: by binomial likelihood of the
    examined share when the log tells skips from unexamined impressions, else from the
    click-through rate by position relative to position 0."""
    from scipy.optimize import minimize_scalar

    if stats.position_shown.shape[0] < 2:
        return None
    positions = np.arange(stats.position_shown.shape[0], dtype=np.float64)
    shown = stats.position_shown.astype(np.float64)
    if stats.has_skip:
        hits = stats.position_examined.astype(np.float64)
        scale_free = False
        what = "examined share (not 'impression') by position"
    else:
        hits = stats.position_clicked.astype(np.float64)
        scale_free = True
        what = (
            "click-through rate by position, relative to position 0 (assumes slates in random "
            "order)"
        )

    def negative(d: float, scale: float = 1.0) -> float:
        p = np.clip(scale * d**positions, 1e-12, 1 - 1e-12)
        return -float(hits @ np.log(p) + (shown - hits) @ np.log1p(-p))

    if scale_free:

        def profile(d: float) -> float:
            scale = hits.sum() / max(float(shown @ d**positions), 1e-12)
            return negative(d, min(scale, 1.0))

        objective = profile
    else:
        objective = negative
    result = minimize_scalar(
        objective, bounds=(1e-3, 1.0), method="bounded", options={"xatol": 1e-7}
    )
    d = float(result.x)
    h = 1e-4
    second = (objective(min(d + h, 1.0)) - 2 * objective(d) + objective(d - h)) / h**2
    se = 1.0 / math.sqrt(second) if second > 0 else float("nan")
    return d, se, f"binomial likelihood of the {what}, {int(shown.sum()):,} impressions"


#: Utility margins over which the click table is tabulated, and the draws of the world sample:
#: affinities pooled over many drawn worlds (see :func:`_world_sample`), and the quantiles of
#: them the click table averages over.
_MARGINS = np.linspace(-16.0, 16.0, 1281)
_SAMPLE_WORLDS = 200
_SAMPLE_USERS = 200
_SAMPLE_ITEMS = 1000
_AFFINITY_DRAWS = 100
_AFFINITY_QUANTILES = 500
_UTILITY_DRAWS = 200_000


def _world_sample(catalog_spec: Any, seed: int) -> dict[str, Any]:
    """Affinities of random (user, item) pairs in worlds of the default preference structure:
    what a uniformly random slate puts in front of a user.

    Pooled over :data:`_SAMPLE_WORLDS` drawn worlds, because the mean affinity is a property of
    one world's random topic centroids (from world to world its sd is about 0.03, 0.045 in
    utility at the default weight, and the click rate's about 5%): ``click_at`` absorbs the
    difference between the log's world and the sample, and the fitted world, simulated with
    fresh draws, clicks as the sample's worlds do on average. A single drawn world (mean 0.051
    on the example, against 0.084 over worlds) put the example's fitted world 10% above the
    log. ``spread`` is the sd within a world, what one log's preference structure shows."""
    from sim.scenario.spec import Users
    from users.catalog import Catalog
    from users.population import Population

    spec = catalog_spec.model_copy(update={"items": min(catalog_spec.items, _SAMPLE_ITEMS)})
    affinities, spreads = [], []
    for world in range(_SAMPLE_WORLDS):
        rng = np.random.default_rng([seed, 25, world])
        catalog = Catalog(spec, DAY, rng)
        population = Population(Users(count=_SAMPLE_USERS), catalog.centroids, rng)
        users = rng.integers(0, population.count, _AFFINITY_DRAWS)
        items = rng.integers(0, catalog.n_live, _AFFINITY_DRAWS)
        affinity = np.einsum("nd,nd->n", population.preferences[users], catalog.vectors[items])
        affinities.append(affinity.astype(np.float64))
        spreads.append(float(affinity.std()))
    return {"affinity": np.concatenate(affinities), "spread": float(np.mean(spreads))}


def _popularity_levels(n_items: int, bins: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """The standardized ``-log(rank)`` of a catalogue of ``n_items`` (what ``appeal`` is at
    zipf_exponent 1), in bins of log-rank: each bin's mean level and share of items."""
    log_rank = np.log(np.arange(1, n_items + 1, dtype=np.float64))
    level = (log_rank.mean() - log_rank) / (log_rank.std() if n_items > 1 else 1.0)
    edges = np.unique(np.floor(np.geomspace(1, n_items + 1, bins + 1)).astype(np.int64)) - 1
    edges[-1] = n_items
    sums = np.add.reduceat(level, edges[:-1])
    sizes = np.diff(edges).astype(np.float64)
    return sums / sizes, sizes / n_items


def _click_table(behavior: Any, affinity: np.ndarray) -> np.ndarray:
    """Chance that an examined item is clicked, at each margin (utility less ``click_at``, before
    the user's affinity), averaged over the users' affinities and the utility noise."""
    from users.behavior import click_probability

    spec = behavior.model_copy(update={"click_at": 0.0})
    levels = (np.arange(_AFFINITY_QUANTILES) + 0.5) / _AFFINITY_QUANTILES
    draws = behavior.affinity_weight * np.quantile(affinity, levels)
    table = np.empty(_MARGINS.shape[0])
    for start in range(0, _MARGINS.shape[0], 64):
        margins = _MARGINS[start : start + 64]
        table[start : start + 64] = click_probability(spec, margins[:, None] + draws[None, :]).mean(
            axis=1
        )
    return table


def _fit_item_clicks(
    stats: Statistics, behavior: Any, sample: dict[str, np.ndarray], catalog_spec: Any, seed: int
) -> dict[str, float]:
    """``click_at``, the popularity slope (``popularity_weight * zipf_exponent``) and the spread
    of item quality, by the marginal likelihood of each item's clicks among its examined
    impressions, integrated over its unknown popularity rank and quality."""
    import torch
    from scipy.optimize import minimize

    seen = stats.item_examined > 0
    pairs, repeats = np.unique(
        np.stack([stats.item_examined[seen], stats.item_clicked[seen]], 1),
        axis=0,
        return_counts=True,
    )
    n, k = pairs[:, 0].astype(np.float64), pairs[:, 1].astype(np.float64)
    # Each item's likelihood over a grid of its effect (its margin: quality, popularity, less
    # click_at), fine enough to resolve the best-measured item's, computed once; the parameters
    # only move the effects' density over the grid, a mixture over popularity ranks of normals.
    rate = stats.clicked / max(stats.examined, 1)
    width = 1 / math.sqrt(max(float(n.max()) * rate * (1 - rate), 1.0))
    spacing = min(float(_MARGINS[1] - _MARGINS[0]), width / 4)
    grid = np.arange(_MARGINS[0], _MARGINS[-1], spacing)
    table = np.clip(
        np.interp(grid, _MARGINS, _click_table(behavior, sample["affinity"])), 1e-12, 1 - 1e-12
    )
    per_item = torch.from_numpy(k[:, None] * np.log(table) + (n - k)[:, None] * np.log1p(-table))
    counts = torch.from_numpy(repeats.astype(np.float64))
    levels, shares = _popularity_levels(max(stats.n_items, 1))
    popularity = torch.from_numpy(levels)[:, None]
    log_shares = torch.from_numpy(np.log(shares))[:, None]
    effects = torch.from_numpy(grid)[None, :]
    log_spacing = math.log(spacing)

    def negative(theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The negative log-likelihood and its gradient."""
        x = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        sd = behavior.quality_weight * torch.exp(x[2])
        z = (effects - (x[1] * popularity - x[0])) / sd
        log_density = torch.logsumexp(
            log_shares - 0.5 * z**2 - torch.log(sd) - 0.5 * math.log(2 * math.pi), dim=0
        )
        per_pair = torch.logsumexp(per_item + log_density[None, :] + log_spacing, dim=1)
        value = -(counts * per_pair).sum()
        value.backward()
        assert x.grad is not None
        return float(value.detach()), x.grad.numpy().copy()

    start_click_at = float(-grid[np.argmin(np.abs(table - rate))])
    best = None
    for slope0 in (0.3, 0.8):
        result = minimize(
            negative,
            np.array([start_click_at, slope0, math.log(0.5)]),
            jac=True,
            method="L-BFGS-B",
            bounds=[
                (-30, 30),
                (0.0, 5 * behavior.popularity_weight),
                (math.log(0.01), math.log(10)),
            ],
        )
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    theta = best.x
    se = _gradient_standard_errors(lambda x: negative(x)[1], theta)
    sd = math.exp(theta[2]) / behavior.quality_weight
    return {
        "click_at": float(theta[0]),
        "click_at_se": float(se[0]),
        "slope": float(theta[1]),
        "slope_se": float(se[1]),
        "quality_sd": sd,
        "quality_sd_se": float(sd * se[2]),
    }


def _gradient_standard_errors(
    gradient: Callable[[np.ndarray], np.ndarray], x: np.ndarray
) -> np.ndarray:
    """Standard errors from the observed information, the Hessian by central differences of the
    gradient."""
    steps = 1e-3 * np.maximum(np.abs(x), 1.0)
    columns = []
    for i in range(x.shape[0]):
        shift = np.zeros_like(x)
        shift[i] = steps[i]
        columns.append((gradient(x + shift) - gradient(x - shift)) / (2 * steps[i]))
    hessian = np.array(columns)
    hessian = (hessian + hessian.T) / 2
    try:
        covariance = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return np.full(x.shape[0], np.nan)
    return np.sqrt(np.clip(np.diag(covariance), 0, None))


def _utility_draws(
    behavior: Any, sample: dict[str, np.ndarray], clicks: dict[str, float], n_items: int, seed: int
) -> dict[str, np.ndarray]:
    """Utilities of random examined impressions in the fitted world, with their click chance:
    what the explicit negatives and dwell are fitted against."""
    rng = np.random.default_rng([seed, 26])
    n = _UTILITY_DRAWS
    levels, shares = _popularity_levels(max(n_items, 1), bins=max(n_items, 1))
    level = rng.choice(levels, n, p=shares)
    hype = clicks["slope"] * level
    value = (
        behavior.affinity_weight * rng.choice(sample["affinity"], n)
        + behavior.quality_weight * clicks["quality_sd"] * rng.standard_normal(n)
        + hype
        + behavior.noise_sd * rng.standard_normal(n)
    )
    click = 0.5 + 0.5 * np.tanh((value - behavior.click_at) / (2 * behavior.click_temperature))
    return {"value": value, "hype": hype, "click": click}


def _fit_negatives(
    stats: Statistics, behavior: Any, draws: dict[str, np.ndarray], notes: list[str]
) -> list[tuple[str, float, float | None, str]]:
    """``explicit_prob`` (at the default ``explicit_at``), the mix of explicit kinds and the
    letdown chance, each from its rate in the log over the fitted world's utilities."""
    out: list[tuple[str, float, float | None, str]] = []
    counts = stats.kind_counts
    explicit = sum(counts[name] for name in EXPLICIT_NAMES) - stats.letdowns
    unclicked = stats.examined - stats.clicked
    value, click = draws["value"], draws["click"]
    if unclicked > 0:
        rate = explicit / unclicked
        below = float(((1 - click) * (value < behavior.explicit_at)).sum() / (1 - click).sum())
        prob = rate / below if below > 0 else 1.0
        if prob > 1:
            notes.append(
                f"explicit negatives ({rate:.2%} of examined, unclicked impressions) exceed what "
                f"explicit_at {behavior.explicit_at} allows ({below:.2%}): explicit_prob capped "
                "at 1; raise explicit_at by hand"
            )
            prob = 1.0
        out.append(
            (
                "world.behavior.explicit_prob",
                prob,
                math.sqrt(rate * (1 - rate) / unclicked) / max(below, 1e-12),
                f"{explicit:,} explicit negatives / {unclicked:,} examined, unclicked impressions "
                f"= {rate:.4f}, over the fitted world's share under explicit_at ({below:.4f})",
            )
        )
    if explicit > 0:
        for name in EXPLICIT_NAMES:
            number = counts[name] - (stats.letdowns if name == "thumbs_down" else 0)
            share = number / explicit
            out.append(
                (
                    f"world.behavior.explicit_kinds.{name}",
                    share,
                    math.sqrt(share * (1 - share) / explicit),
                    f"share of the explicit negatives ({number:,} of {explicit:,})",
                )
            )
    if stats.letdowns > 0 and stats.clicked > 0:
        rate = stats.letdowns / stats.clicked
        delivered = value - draws["hype"] < behavior.letdown_at
        below = float((click * delivered).sum() / click.sum())
        prob = min(rate / below, 1.0) if below > 0 else 1.0
        out.append(
            (
                "world.behavior.letdown_prob",
                prob,
                math.sqrt(rate * (1 - rate) / stats.clicked) / max(below, 1e-12),
                f"{stats.letdowns:,} thumbs-downs after watching / {stats.clicked:,} clicks, over "
                f"the fitted world's share of clicks under letdown_at ({below:.4f})",
            )
        )
    return out


def _fit_dwell(
    stats: Statistics, behavior: Any, draws: dict[str, np.ndarray], notes: list[str]
) -> list[tuple[str, float, float | None, str, bool]]:
    """``dwell_median`` and ``dwell_sd`` from the log-dwell of clicks (its mean and variance less
    the fitted world's utility of clicked items at the default slope) and ``short_dwell``."""
    if stats.click_dwell is None:
        return []
    dwell = stats.click_dwell[stats.click_dwell > 0]
    out: list[tuple[str, float, float | None, str, bool]] = []
    if dwell.shape[0] >= 2:
        log_dwell = np.log(dwell)
        weight = draws["click"] / draws["click"].sum()
        mean_value = float(weight @ draws["value"])
        var_value = float(weight @ (draws["value"] - mean_value) ** 2)
        slope = behavior.dwell_utility_slope
        median = math.exp(float(log_dwell.mean()) - slope * mean_value)
        variance = float(log_dwell.var()) - slope**2 * var_value
        if variance < 0:
            notes.append(
                "clicks' dwell varies less than dwell_utility_slope alone implies: dwell_sd is 0"
            )
        sd = math.sqrt(max(variance, 0.0))
        n = dwell.shape[0]
        out.append(
            (
                "world.behavior.dwell_median",
                median,
                median * float(log_dwell.std()) / math.sqrt(n),
                f"mean log-dwell of {n:,} clicks less dwell_utility_slope x the fitted world's "
                "mean utility of a clicked item",
                True,
            )
        )
        out.append(
            (
                "world.behavior.dwell_sd",
                sd,
                sd / math.sqrt(2 * n),
                "variance of log-dwell less the clicked items' utility spread",
                False,
            )
        )
    if stats.short_dwell_max is not None and stats.click_dwell_min is not None:
        threshold = (stats.short_dwell_max + stats.click_dwell_min) / 2
        out.append(
            (
                "world.behavior.short_dwell",
                threshold,
                None,
                f"between the longest short dwell ({stats.short_dwell_max:.3g}s) and the shortest "
                f"click ({stats.click_dwell_min:.3g}s)",
                True,
            )
        )
    elif stats.kind_counts["short_dwell"] == 0 and stats.clicked > 0:
        out.append(
            (
                "world.behavior.short_dwell",
                0.0,
                None,
                "no short_dwell events in the log",
                True,
            )
        )
    return out


def _factorize(
    stats: Statistics, behavior: Any, sd_affinity: float, seed: int, progress: Progress
) -> tuple[list[dict[str, float]], tuple[float, float, int] | None]:
    """A logistic factorization of clicks on examined impressions for each dimension in
    :data:`FACTORIZATION_DIMS`, scored by held-out log-likelihood; the chosen one's interaction
    spread, on the utility scale, over the default preference structure's affinity spread: the
    ``affinity_weight`` it implies (a lower bound: the prior shrinks the spread)."""
    import torch

    from users.behavior import click_probability

    users, items, clicked = stats.examined_rows
    rng = np.random.default_rng([seed, 27])
    if clicked.shape[0] > FACTORIZATION_ROWS:
        keep = rng.choice(clicked.shape[0], FACTORIZATION_ROWS, replace=False)
        users, items, clicked = users[keep], items[keep], clicked[keep]
    n = clicked.shape[0]
    if n < 100 or clicked.sum() == 0:
        return [], None
    held = rng.random(n) < 0.1
    u = torch.from_numpy(users.astype(np.int64))
    i = torch.from_numpy(items.astype(np.int64))
    y = torch.from_numpy(clicked.astype(np.float32))
    train, test = torch.from_numpy(~held), torch.from_numpy(held)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict[str, float]] = []
    models: dict[int, torch.Tensor] = {}
    per_row: dict[int, np.ndarray] = {}
    for dim in FACTORIZATION_DIMS:
        progress(f"user preferences (dimension {dim})")
        held_ll, inter = _train_factorization(
            (u, i, y), (train, test), dim, (n_users, n_items), generator
        )
        rows.append({"dimension": dim, "held_out_log_likelihood": float(held_ll.mean())})
        models[dim] = inter
        per_row[dim] = held_ll
    best = max(rows, key=lambda row: row["held_out_log_likelihood"])
    dim = int(best["dimension"])
    # a dimension is kept only if it beats none by two standard errors of the paired difference
    gain = per_row[dim] - per_row[0]
    if gain.mean() < 2 * gain.std() / math.sqrt(gain.shape[0]):
        dim = 0
    for row in rows:
        row["chosen"] = float(row["dimension"] == dim)
    if dim == 0:
        return rows, None
    inter = models[dim].numpy().astype(np.float64)
    # logit slope of the click chance per unit of utility, where the log's click rate sits
    rate = float(clicked.mean())
    grid = np.linspace(-10, 10, 2001)
    chance = click_probability(behavior.model_copy(update={"click_at": 0.0}), grid)
    at = grid[np.argmin(np.abs(chance - rate))]
    step = 1e-3
    up, down = (
        click_probability(behavior.model_copy(update={"click_at": 0.0}), np.array([at + s]))[0]
        for s in (step, -step)
    )
    slope = (math.log(up / (1 - up)) - math.log(down / (1 - down))) / (2 * step)
    halves = rng.random(inter.shape[0]) < 0.5
    spread = float(inter.std())
    weight = spread / (slope * sd_affinity)
    split = abs(float(inter[halves].std()) - float(inter[~halves].std())) / 2
    return rows, (weight, weight * split / max(spread, 1e-12), dim)


# --- the scenario ----------------------------------------------------------------------------

#: Order of the world's sections and of the fields within them, as the schema lists them.
_SECTION_ORDER = ("users", "catalog", "behavior")


def scenario_text(
    calibration: Calibration,
    name: str,
    source: str,
    rows: int,
    policy: str = "random",
    seed: int = 0,
) -> str:
    """The calibrated scenario as YAML, a comment per fitted value naming its source statistic
    and standard error, and a header listing what the log could not identify."""
    lines = [
        f"# Calibrated by `recloop calibrate` from {source} ({rows:,} rows).",
        "# Each fitted value's comment names the statistic it comes from and its standard error",
        "# (SE). The log cannot identify these; they keep recloop's defaults:",
        *(f"#   - {entry}" for entry in calibration.not_identified),
    ]
    lines += [f"# Note: {note}" for note in calibration.notes]
    lines += [
        f"name: {_yaml_scalar(name)}",
        "description: |",
        f"  A world calibrated from {source}, served by the {policy} policy as the log is assumed",
        "  to have been (slates independent of the user's response).",
        f"seed: {seed}",
        f"duration: {format_duration(calibration.duration)}",
        "",
        "world:",
    ]
    world = calibration.world()
    for section in _SECTION_ORDER:
        if section in world:
            lines.append(f"  {section}:")
            lines += _yaml_block(world[section], 4)
    lines += [
        "",
        "stack:",
        f"  policy: {{name: {_yaml_scalar(policy)}}}",
        f"  slate_size: {calibration.slate_size}  # positions in the log",
        "",
        "output:",
        "  events: true",
        "",
        "# `recloop run FILE --quick`: the same world, small enough for a minute.",
        "quick:",
        "  set:",
        f"    world.users.count: {min(round(calibration.value('world.users.count', 500)), 500)}",
        f"    duration: {format_duration(min(calibration.duration, 6 * 3600.0))}",
        "",
    ]
    return "\n".join(lines)


def _yaml_block(node: dict[str, Any], indent: int) -> list[str]:
    lines = []
    pad = " " * indent
    for key, value in node.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            if key == "sessions_per_day":
                lines.append(f"{pad}  distribution: lognormal")
            lines += _yaml_block(value, indent + 2)
        else:
            lines.append(f"{pad}{key}: {value.text()}  # {value.comment()}")
    return lines


def _yaml_scalar(text: str) -> str:
    import yaml

    return yaml.safe_dump(text, default_style=None).strip().removesuffix("...").strip()


def parse_text(text: str, label: str) -> Any:
    """The scenario a calibrated YAML text describes (validated as a person's file is)."""
    import yaml

    from sim.scenario.loader import parse_scenario

    return parse_scenario(yaml.safe_load(text), label)


# --- simulating and comparing ----------------------------------------------------------------

#: Impressions a comparison simulation aims at (users are sampled down to stay near it).
SIMULATION_ROWS = 500_000


def simulation_scenario(scenario: Any, stats: Statistics, rows: int = SIMULATION_ROWS) -> Any:
    """``scenario`` with its users sampled down so that its log has about ``rows`` rows: the
    statistics compared are per user, per session or per impression, so they do not change."""
    per_user = stats.n_rows / max(stats.n_users, 1)
    users = scenario.world.users.count
    wanted = int(min(users, max(200, rows / max(per_user, 1.0))))
    if wanted >= users:
        return scenario
    world = scenario.world.model_copy(
        update={"users": scenario.world.users.model_copy(update={"count": wanted})}
    )
    return scenario.model_copy(update={"world": world})


def simulate_log(scenario: Any, on_progress: Callable[[float], None] | None = None) -> EventData:
    """Run ``scenario`` once and return its event log as :class:`EventData`."""
    from sim.serving.runner import run_scenario

    result = run_scenario(scenario, on_progress=on_progress)
    events = result.events
    item = np.asarray(events.item).astype(np.int64)
    on_item = item >= 0
    topic = np.where(on_item, result.item_topic[np.where(on_item, item, 0)], -1).astype(np.int64)
    creator = np.where(on_item, result.item_creator[np.where(on_item, item, 0)], -1)
    return EventData(
        time=np.asarray(events.time, np.float64),
        user=np.asarray(events.user).astype(np.int64),
        item=item,
        kind=np.asarray(events.kind).astype(np.int8),
        position=np.asarray(events.position).astype(np.int32),
        session=np.asarray(events.session).astype(np.int64),
        topic=topic,
        creator=creator.astype(np.int64),
        dwell=np.asarray(events.dwell, np.float64),
        source="simulated",
    )


def _two_proportions(a: int, n: int, b: int, m: int) -> float:
    """Two-sided p-value of the two-proportion z-test (1 when both are 0 or 1)."""
    from scipy.stats import norm

    pooled = (a + b) / max(n + m, 1)
    se = math.sqrt(pooled * (1 - pooled) * (1 / max(n, 1) + 1 / max(m, 1)))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(a / max(n, 1) - b / max(m, 1)) / se))


def _prediction_p(value: float, replicated: list[float]) -> float | None:
    """Two-sided p-value that ``value`` is one more draw from the distribution the replications
    sample (a t prediction interval): what a log from the fitted world would show, catalogue
    draw to catalogue draw, not only impression to impression."""
    from scipy.stats import t

    if len(replicated) < 2:
        return None
    spread = float(np.std(replicated, ddof=1))
    if spread == 0:
        return 1.0 if value == replicated[0] else 0.0
    score = (value - float(np.mean(replicated))) / (spread * math.sqrt(1 + 1 / len(replicated)))
    return float(2 * t.sf(abs(score), len(replicated) - 1))


def compare_logs(log: Statistics, replications: list[Statistics]) -> dict[str, Any]:
    """The log's statistics beside those of logs simulated from the fitted world, with tests: a
    table of rows (statistic, log, simulated mean, test, p-value) and the series the report
    draws.

    Distributions (sessions per user, requests per session, gaps, dwell) are compared with the
    pooled simulated logs by Kolmogorov-Smirnov; rates (CTR by position, each kind's rate, the
    abandoned share) vary with the world's random catalogue as much as with its impressions, so
    the log's rate is tested as one more replication (see :func:`_prediction_p`); with a single
    replication, by the two-proportion z-test."""
    from scipy.stats import ks_2samp

    rows: list[dict[str, Any]] = []
    pooled = lambda name: np.concatenate([getattr(s, name) for s in replications])  # noqa: E731

    def add(statistic: str, a: float, b: float, test: str, p: float | None) -> None:
        rows.append(
            {
                "statistic": statistic,
                "log": float(a),
                "simulated": float(b),
                "test": test,
                "p_value": None if p is None else float(p),
            }
        )

    def rate(statistic: str, counts: Callable[[Statistics], tuple[int, int]]) -> None:
        a, n = counts(log)
        values = [c / max(m, 1) for c, m in map(counts, replications)]
        if len(replications) >= 2:
            test = f"prediction interval over {len(replications)} replications"
            p = _prediction_p(a / max(n, 1), values)
        else:
            b, m = counts(replications[0])
            test, p = "two proportions", _two_proportions(a, n, b, m)
        add(statistic, a / max(n, 1), float(np.mean(values)), test, p)

    for name, title in (
        ("sessions_per_user", "sessions per user (mean)"),
        ("session_requests", "requests per session (mean)"),
        ("gaps", "gap between requests, s (mean)"),
    ):
        ours, theirs = getattr(log, name), pooled(name)
        if ours.shape[0] and theirs.shape[0]:
            add(
                title,
                ours.mean(),
                theirs.mean(),
                "Kolmogorov-Smirnov",
                ks_2samp(ours, theirs).pvalue,
            )
    hours = [
        np.bincount((s.session_start % DAY // 3600).astype(np.int64), minlength=24)[:24]
        for s in (log, *replications)
    ]
    if log.days >= 1:
        starts = pooled("session_start") % DAY
        add(
            "session start hour (mean angle, h)",
            _mean_hour(log.session_start % DAY),
            _mean_hour(starts),
            "Kolmogorov-Smirnov on hour of day",
            ks_2samp(log.session_start % DAY, starts).pvalue,
        )
    rate("abandoned sessions (share)", _abandoned_counts)
    positions = min(s.position_shown.shape[0] for s in (log, *replications))
    for p in range(positions):
        rate(f"CTR at position {p}", partial(_position_counts, p))
    for name in KIND_NAMES:
        if name in ("impression", "abandon"):
            continue
        if log.kind_counts[name] == 0 and all(s.kind_counts[name] == 0 for s in replications):
            continue
        rate(f"{name} rate per impression", partial(_kind_counts, name))
    top = [_top_share(s.item_clicked) for s in replications]
    add(
        "clicks on the top 10% of items (share)",
        _top_share(log.item_clicked),
        float(np.mean(top)),
        f"prediction interval over {len(top)} replications" if len(top) >= 2 else "descriptive",
        _prediction_p(_top_share(log.item_clicked), top),
    )
    if log.click_dwell is not None and all(s.click_dwell is not None for s in replications):
        dwell = pooled("click_dwell")
        add(
            "dwell of a click, s (median)",
            np.median(log.click_dwell),
            np.median(dwell),
            "Kolmogorov-Smirnov",
            ks_2samp(log.click_dwell, dwell).pvalue,
        )

    def mean_rates(shown: str, hit: str) -> list[float]:
        return np.mean(
            [
                getattr(s, hit)[:positions] / np.maximum(getattr(s, shown)[:positions], 1)
                for s in replications
            ],
            axis=0,
        ).tolist()

    merged = _merge_counts(replications)
    return {
        "rows": rows,
        "replications": len(replications),
        "series": {
            "sessions_per_user": [
                _histogram(log.sessions_per_user),
                _histogram(pooled("sessions_per_user")),
            ],
            "session_requests": [
                _histogram(log.session_requests),
                _histogram(pooled("session_requests")),
            ],
            "hourly": [
                (hours[0] / max(hours[0].sum(), 1)).tolist(),
                (sum(hours[1:]) / max(sum(h.sum() for h in hours[1:]), 1)).tolist(),
            ],
            "ctr_by_position": [
                (
                    log.position_clicked[:positions] / np.maximum(log.position_shown[:positions], 1)
                ).tolist(),
                mean_rates("position_shown", "position_clicked"),
            ],
            "popularity": [
                _popularity_curve(log.item_clicked),
                _popularity_curve(replications[0].item_clicked),
            ],
            "kind_rates": {
                name: [log.kind_counts[name] / log.impressions, merged[name]]
                for name in KIND_NAMES
                if name != "impression"
            },
        },
    }


def _abandoned_counts(stats: Statistics) -> tuple[int, int]:
    return int(stats.session_abandoned.sum()), int(stats.session_abandoned.shape[0])


def _position_counts(position: int, stats: Statistics) -> tuple[int, int]:
    return int(stats.position_clicked[position]), int(stats.position_shown[position])


def _kind_counts(name: str, stats: Statistics) -> tuple[int, int]:
    return stats.kind_counts[name], stats.impressions


def _mean_hour(seconds: np.ndarray) -> float:
    angle = 2 * np.pi * seconds / DAY
    return float(math.atan2(np.sin(angle).mean(), np.cos(angle).mean()) * 24 / (2 * np.pi)) % 24


def _merge_counts(replications: list[Statistics]) -> dict[str, float]:
    impressions = sum(s.impressions for s in replications)
    return {
        name: sum(s.kind_counts[name] for s in replications) / max(impressions, 1)
        for name in KIND_NAMES
    }


def _top_share(clicks: np.ndarray) -> float:
    ordered = np.sort(clicks)[::-1]
    top = max(1, int(round(0.1 * ordered.shape[0])))
    return float(ordered[:top].sum() / max(ordered.sum(), 1))


def _histogram(values: np.ndarray) -> dict[str, list[float]]:
    counts = np.bincount(np.minimum(values, 50).astype(np.int64))
    return {"value": list(range(counts.shape[0])), "share": (counts / counts.sum()).tolist()}


def _popularity_curve(clicks: np.ndarray) -> dict[str, list[float]]:
    """Share of clicks by item rank, both on a log scale, at up to 200 ranks."""
    ordered = np.sort(clicks)[::-1].astype(np.float64)
    ordered = ordered[ordered > 0]
    if not ordered.shape[0]:
        return {"rank": [], "share": []}
    ranks = np.unique(np.geomspace(1, ordered.shape[0], 200).astype(np.int64))
    return {
        "rank": (ranks / ordered.shape[0]).tolist(),
        "share": (ordered[ranks - 1] / ordered.sum()).tolist(),
    }


# --- the command -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What :func:`calibrate` wrote and found."""

    scenario: str  # the YAML text written
    calibration: Calibration
    statistics: Statistics
    comparison: dict[str, Any] | None
    seconds: float


#: Indirect-inference steps of the activity correction (each simulates the fitted world once).
REFINE_STEPS = 2


def refine_activity(
    calibration: Calibration,
    stats: Statistics,
    render: Callable[[Calibration], Any],
    rows: int = SIMULATION_ROWS,
    on_simulated: Callable[[float], None] | None = None,
    seed: int = 0,
    steps: int = REFINE_STEPS,
) -> None:
    """Indirect inference on the activity: churn ends some users' sessions early, so the session
    count fit understates the rate. The same fit on a log simulated from the fitted world
    (``render`` makes its scenario) shows by how much; the rate moves by that ratio and the
    spread by that difference, ``steps`` times."""
    path = "world.users.sessions_per_day"
    observed = {name: calibration.fitted[f"{path}.{name}"].value for name in ("median", "sigma")}
    for step in range(steps):
        scenario = render(calibration).model_copy(update={"seed": seed + 1000 + step})
        simulated = log_statistics(
            simulate_log(simulation_scenario(scenario, stats, rows), on_simulated)
        )
        fit = _fit_sessions_per_day(simulated.sessions_per_user, simulated.days)
        median = calibration.fitted[f"{path}.median"]
        sigma = calibration.fitted[f"{path}.sigma"]
        note = (
            f"; corrected for sessions lost to churn by {steps} simulations of the fitted world "
            "(indirect inference)"
        )
        source = median.source.split("; corrected")[0]
        calibration.fitted[median.path] = Fitted(
            median.path, median.value * observed["median"] / fit["median"], source + note, median.se
        )
        calibration.fitted[sigma.path] = Fitted(
            sigma.path,
            max(sigma.value + observed["sigma"] - fit["sigma"], 1e-3),
            sigma.source.split("; corrected")[0] + note,
            sigma.se,
        )


def calibrate(
    log: str | Path,
    out: str | Path,
    report: str | Path | None = None,
    kind_map: dict[str, str] | None = None,
    policy: str = "random",
    seed: int = 0,
    factorize: bool = True,
    refine: bool = True,
    progress: Progress | None = None,
    on_simulated: Callable[[float], None] | None = None,
    simulation_rows: int = SIMULATION_ROWS,
    plotlyjs: str = "inline",
    replications: int = 3,
) -> Outcome:
    """Fit a world to the log at ``log`` and write its scenario to ``out`` (and, with
    ``report``, the fit report comparing the log with logs simulated from it).

    On one core, as a run is: torch's and BLAS's thread pools contending with each other on
    the small operations of the fit made it several times slower on a busy machine.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return _calibrate(
                log, out, report, kind_map, policy, seed, factorize, refine, progress,
                on_simulated, simulation_rows, plotlyjs, replications,
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _calibrate(
    log: str | Path,
    out: str | Path,
    report: str | Path | None,
    kind_map: dict[str, str] | None,
    policy: str,
    seed: int,
    factorize: bool,
    refine: bool,
    progress: Progress | None,
    on_simulated: Callable[[float], None] | None,
    simulation_rows: int,
    plotlyjs: str,
    replications: int,
) -> Outcome:
    from sim.sweeps.results import atomic_write

    started = wallclock.perf_counter()
    step = progress or (lambda _: None)
    step("reading the log")
    data = read_log(log, kind_map)
    stats = log_statistics(data)
    if stats.impressions == 0:
        raise RecloopError(f"{log}: no impressions (every row is an abandon)")
    calibration = fit_world(stats, step, seed, factorize)
    name = f"calibrated-{Path(log).stem}"
    text = scenario_text(calibration, name, str(log), stats.n_rows, policy, seed)
    scenario = parse_text(text, str(out))
    if refine and "world.users.sessions_per_day.median" in calibration.fitted:
        step("refining the activity by simulation")

        def render(fitted: Calibration) -> Any:
            return parse_text(
                scenario_text(fitted, name, str(log), stats.n_rows, policy, seed), str(out)
            )

        refine_activity(calibration, stats, render, simulation_rows, on_simulated, seed)
        text = scenario_text(calibration, name, str(log), stats.n_rows, policy, seed)
        scenario = parse_text(text, str(out))
    comparison = None
    if report is not None:
        small = simulation_scenario(scenario, stats, simulation_rows)
        simulated: list[Statistics] = []
        for replication in range(replications):
            step(f"simulating the fitted world (replication {replication + 1} of {replications})")
            seeded = small.model_copy(update={"seed": seed + 1 + replication})
            simulated.append(log_statistics(simulate_log(seeded, on_simulated)))
        comparison = compare_logs(stats, simulated)
        comparison["simulated_users"] = small.world.users.count
    try:
        atomic_write(Path(out), lambda path: path.write_text(text))
    except OSError as error:
        raise RecloopError(f"--out {out}: cannot write ({error.strerror or error})") from None
    outcome = Outcome(text, calibration, stats, comparison, wallclock.perf_counter() - started)
    if report is not None:
        step("writing the report")
        from reports.calibration import build_calibration_report

        page = build_calibration_report(report_data(outcome, str(log), str(out)), plotlyjs)
        try:
            atomic_write(Path(report), lambda path: path.write_text(page))
        except OSError as error:
            raise RecloopError(
                f"--report {report}: cannot write ({error.strerror or error})"
            ) from None
    return outcome


def report_data(outcome: Outcome, log: str, out: str) -> dict[str, Any]:
    """Plain data for :func:`reports.calibration.build_calibration_report` (which must not
    import the simulator)."""
    calibration, stats = outcome.calibration, outcome.statistics
    return {
        "log": log,
        "scenario_path": out,
        "rows": stats.n_rows,
        "users": stats.n_users,
        "items": stats.n_items,
        "days": stats.days,
        "seconds": outcome.seconds,
        "fitted": [
            {
                "parameter": f.path.removeprefix("world."),
                "value": f.text(),
                "se": f.se,
                "source": f.source,
            }
            for f in calibration.fitted.values()
        ],
        "not_identified": calibration.not_identified,
        "notes": calibration.notes,
        "factorization": calibration.factorization,
        "comparison": outcome.comparison,
        "scenario": outcome.scenario,
    }


def _train_factorization(
    data: tuple[Any, Any, Any],
    split: tuple[Any, Any],
    dim: int,
    sizes: tuple[int, int],
    generator: Any,
) -> tuple[np.ndarray, Any]:
    """Train one logistic factorization (global, user and item biases, rank ``dim``) by full-batch
    Adam on the training rows; its log-likelihood of each held-out row and held-out
    interactions."""
    import torch
    import torch.nn.functional as functional

    u, i, y = data
    train, test = split
    n_users, n_items = sizes
    bias = torch.zeros(1, requires_grad=True)
    user_bias = torch.zeros(n_users, requires_grad=True)
    item_bias = torch.zeros(n_items, requires_grad=True)
    user_vec = (0.1 * torch.randn(n_users, dim, generator=generator)).requires_grad_()
    item_vec = (0.1 * torch.randn(n_items, dim, generator=generator)).requires_grad_()
    parameters = [bias, user_bias, item_bias, user_vec, item_vec]
    optimizer = torch.optim.Adam(parameters, lr=0.1)
    u_train, i_train, y_train = u[train], i[train], y[train]
    penalty_scale = FACTORIZATION_PRIOR / float(train.sum())
    for _ in range(FACTORIZATION_STEPS):
        optimizer.zero_grad()
        inter = (user_vec[u_train] * item_vec[i_train]).sum(1)
        logit = bias + user_bias[u_train] + item_bias[i_train] + inter
        loss = functional.binary_cross_entropy_with_logits(logit, y_train)
        # the prior on the vectors; the biases' is weak (an item's rate is well measured)
        penalty = (user_vec**2).sum() + (item_vec**2).sum()
        weak = (user_bias**2).sum() + (item_bias**2).sum()
        (loss + penalty_scale * (penalty + 0.02 * weak)).backward()
        optimizer.step()
    with torch.no_grad():
        u_test, i_test = u[test], i[test]
        inter = (user_vec[u_test] * item_vec[i_test]).sum(1)
        logit = bias + user_bias[u_test] + item_bias[i_test] + inter
        held = -functional.binary_cross_entropy_with_logits(logit, y[test], reduction="none")
    return held.numpy().astype(np.float64), inter
