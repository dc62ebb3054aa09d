"""Probes: a sample of users take one control at one time, and the twin run in which they do not.

At a probe's time each chosen user takes the control on their own target, as if in their next
request: one explicit negative event in the log (time, user, the target item, the control's kind
and scope, the user's current session, the layer versions that served them last), which every
layer then reads like any other. The twin run (``Scenario.probes_withheld``) chooses the same users
and targets, from the same log (the twins are identical until then), but logs nothing, so every
difference after the probe time is the control's. Measurement is per run (:func:`exposure_table`);
the pairing of twins and the prevented shares are :func:`responsiveness`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from sim.compare import interval
from sim.domain import CatalogView, Kind, Scope
from sim.durations import format_duration
from sim.eventlog import EventLog
from sim.spec import Probe, Scenario

__all__ = [
    "ProbeRecord",
    "Snoozes",
    "SNOOZE",
    "CONTROL_EVENT",
    "RECENTLY_SHOWN",
    "HORIZONS",
    "PROBE_BIN",
    "start_probes",
    "exposure_table",
    "responsiveness",
    "deletion_delays",
]

#: How far back a probe looks for each user's most shown item (seconds), as interventions do.
RECENTLY_SHOWN = 3600.0

#: The event each control logs: its kind and scope (as the behaviour model logs them).
CONTROL_EVENT: dict[str, tuple[Kind, Scope]] = {
    "dismiss": (Kind.DISMISS, Scope.ITEM),
    "not_interested": (Kind.NOT_INTERESTED, Scope.TOPIC),
    "thumbs_down": (Kind.THUMBS_DOWN, Scope.ITEM),
    "block_creator": (Kind.BLOCK_CREATOR, Scope.CREATOR),
}

#: What a control is about, so what its prevented share counts: exposure to the item, its topic
#: or its creator.
CONTROL_LEVEL = {
    "dismiss": "item",
    "not_interested": "topic",
    "thumbs_down": "item",
    "block_creator": "creator",
}

#: Longest bin of the probe exposure curves: the first horizon is one hour.
PROBE_BIN = 3600.0

#: What a control on a target of no stated scope (remove_from_history) is about.
TARGET_LEVEL = {
    "most_shown_item": "item",
    "most_shown_topic": "topic",
    "most_shown_creator": "creator",
}

#: Horizons of the prevented share, in seconds after the control (``end``: the run's end).
HORIZONS: dict[str, float] = {"1h": 3600.0, "1d": 86400.0, "end": np.inf}


#: The state serving a snooze, by this name in every view's ``states``.
SNOOZE = "snooze"


class Snoozes:
    """Per user, one topic or creator hidden until a time (``-1``: none), served like a layer's
    state: ranking reads :meth:`hidden` (see ``policies.signals``)."""

    def __init__(self, n_users: int):
        self.topic = np.full(n_users, -1, np.int64)
        self.creator = np.full(n_users, -1, np.int64)
        self.until = np.full(n_users, -np.inf)

    def hidden(self, users: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Each user's hidden topic and creator at ``now`` (``-1``: none, or expired)."""
        live = self.until[users] > now
        return np.where(live, self.topic[users], -1), np.where(live, self.creator[users], -1)


@dataclass(frozen=True)
class ProbeRecord:
    """Who took a probe's control, on what, and whether it was taken (or withheld: the twin)."""

    name: str
    control: str
    at: float
    users: np.ndarray  # (m,) int user ids, ascending
    item: np.ndarray  # (m,) each user's target item
    topic: np.ndarray  # (m,) its topic
    creator: np.ndarray  # (m,) its creator
    taken: bool
    #: What the control is about, so what its prevented share counts: item, topic or creator
    level: str = "item"
    #: remove_from_history: how many log rows it deleted (or, in the twin, would have)
    deleted_rows: int = 0


def start_probes(
    env: Any,
    scenario: Scenario,
    log: EventLog,
    catalog: Any,
    n_users: int,
    generator: Any,
    records: list[ProbeRecord],
    publish: Any,
) -> None:
    """Schedule every probe of ``scenario``; each appends its :class:`ProbeRecord` to ``records``
    when it fires. ``catalog()`` gives the current :class:`CatalogView`; ``generator(name)`` a
    named random stream (the probe's users are drawn from their own, so the twins draw alike);
    ``publish(name, version, state)`` serves the snoozes."""
    snoozes = Snoozes(n_users)
    for index, probe in enumerate(scenario.probes):
        env.process(
            _take(
                env,
                probe,
                log,
                catalog,
                n_users,
                generator(f"probe:{index}"),
                not scenario.probes_withheld,
                records,
                lambda: publish(SNOOZE, len(records), snoozes),
                snoozes,
            )
        )


def _take(
    env: Any,
    probe: Probe,
    log: EventLog,
    catalog: Any,
    n_users: int,
    rng: np.random.Generator,
    taken: bool,
    records: list[ProbeRecord],
    publish: Any,
    snoozes: Snoozes,
) -> Any:
    yield env.timeout(probe.at)
    now = env.now
    view: CatalogView = catalog()
    # what the users were shown, deleted or not: the twins must choose alike
    recent = log.between(log.count_before(now - RECENTLY_SHOWN), log.count_before(now))
    shown = np.flatnonzero(recent.position >= 0)
    users, items = recent.user[shown].astype(np.int64), recent.item[shown].astype(np.int64)
    # users of an earlier probe are not drawn again: each user takes one control, so that one
    # probe's users show that control's effect alone
    earlier = [record.users for record in records]
    eligible = np.setdiff1d(np.unique(users), np.concatenate([np.empty(0, np.int64), *earlier]))
    count = min(probe.count(n_users), eligible.shape[0])
    chosen = np.sort(rng.choice(eligible, size=count, replace=False)) if count else eligible[:0]
    keep = np.isin(users, chosen)
    users, items, rows = users[keep], items[keep], shown[keep]
    if probe.target == "most_shown_item":
        within = np.ones(users.shape[0], bool)
    else:
        group = view.topic if probe.target == "most_shown_topic" else view.creator
        best_group = _most_shown(users, group[items].astype(np.int64), chosen)
        within = group[items] == best_group[np.searchsorted(chosen, users)]
    target = _most_shown(users[within], items[within], chosen)
    level = CONTROL_LEVEL.get(probe.control) or TARGET_LEVEL[probe.target]
    deleted = np.empty(0, np.int64)
    if probe.control == "remove_from_history":
        deleted = _rows_on_targets(log, now, chosen, target, level, view)
    record = ProbeRecord(
        name=probe.name,
        control=probe.control,
        at=now,
        users=chosen,
        item=target,
        topic=view.topic[target].astype(np.int64),
        creator=view.creator[target].astype(np.int64),
        taken=taken,
        level=level,
        deleted_rows=int(deleted.shape[0]),
    )
    records.append(record)
    if taken and probe.control == "remove_from_history":
        log.delete(now, deleted)
    elif taken and probe.control == "snooze":
        assert probe.duration is not None
        hidden = snoozes.topic if level == "topic" else snoozes.creator
        hidden[chosen] = record.topic if level == "topic" else record.creator
        snoozes.until[chosen] = now + probe.duration
        publish()
    elif taken and count:
        # each user's last row: their current session, and the versions that served them
        last = rows[np.searchsorted(users, chosen, side="right") - 1]
        kind, scope = CONTROL_EVENT[probe.control]
        log.append_controls(
            now,
            chosen,
            target,
            kind,
            scope,
            recent.session[last],
            {layer: column[last] for layer, column in recent.versions.items()},
        )


def _rows_on_targets(
    log: EventLog, now: float, users: np.ndarray, items: np.ndarray, level: str, view: CatalogView
) -> np.ndarray:
    """Log rows before ``now`` of each of ``users`` (ascending) on their own target: the item
    of ``items``, or its topic or creator (``level``)."""
    events = log.between(0, log.count_before(now))
    index = np.minimum(np.searchsorted(users, events.user), max(users.shape[0] - 1, 0))
    mine = (events.item >= 0) & (users.shape[0] > 0)
    if users.shape[0]:
        mine &= users[index] == events.user
    rows = np.flatnonzero(mine)
    seen, target = events.item[rows].astype(np.int64), items[index[rows]]
    if level == "topic":
        match = view.topic[seen] == view.topic[target]
    elif level == "creator":
        match = view.creator[seen] == view.creator[target]
    else:
        match = seen == target
    return rows[match]


def _most_shown(users: np.ndarray, values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Per user of ``among`` (ascending, each present in ``users``), the value in ``values`` most
    often paired with them (ties: the smallest value).

    >>> _most_shown(np.array([1, 1, 1, 4]), np.array([7, 3, 3, 9]), np.array([1, 4]))
    array([3, 9])
    """
    if not among.shape[0]:
        return np.empty(0, np.int64)
    pairs, counts = np.unique(np.stack([users, values]), axis=1, return_counts=True)
    # by user, then most shown first, then the smaller value
    order = np.lexsort((pairs[1], -counts, pairs[0]))
    pairs = pairs[:, order]
    first = np.flatnonzero(np.r_[True, pairs[0, 1:] != pairs[0, :-1]])
    best = dict(zip(pairs[0, first].tolist(), pairs[1, first].tolist(), strict=True))
    return np.array([best[user] for user in among.tolist()], np.int64)


# --- measuring ---------------------------------------------------------------------------------


def deletion_delays(records: list[ProbeRecord], layers: list[Any], end: float) -> dict[str, Any]:
    """Per remove_from_history probe taken and per layer, the time from the deletion until the
    layer's served state no longer depends on the deleted events: a batch layer's first version
    whose input was read after the deletion reached it going live for everyone; an incremental
    layer's update that took them out of its state (``None`` and a reason when that never
    happened before ``end``)."""
    out: dict[str, Any] = {}
    for record in records:
        if record.control != "remove_from_history" or not record.taken:
            continue
        delays: dict[str, Any] = {}
        for layer in layers:
            if layer.kind.incremental:
                honoured = [done for at, done in layer.deletions_honoured if at == record.at]
                if honoured and np.isfinite(honoured[0]):
                    delays[layer.name] = honoured[0] - record.at
                elif honoured:
                    delays[layer.name] = {
                        "missing": "its state was updated in place and cannot take events back"
                    }
                else:
                    delays[layer.name] = {
                        "missing": "no update reached the deletion before the end"
                    }
                continue
            live = [
                version.live_at
                for version in layer.history
                if version.cohort == "all" and version.horizon > record.at
            ]
            delays[layer.name] = (
                min(live) - record.at
                if live
                else {
                    "missing": f"no version trained after the deletion went live before the end "
                    f"({format_duration(end - record.at)} later)"
                }
            )
        out[record.name] = {"deleted_events": record.deleted_rows, "delay_seconds": delays}
    return out


EXPOSURE_SCHEMA = pa.schema(
    [
        ("probe", pa.string()),
        ("control", pa.string()),
        ("about", pa.string()),
        ("taken", pa.bool_()),
        ("users", pa.int64()),
        ("exposure_to", pa.string()),
        ("since_seconds", pa.float64()),
        ("bin_seconds", pa.float64()),
        ("exposures", pa.int64()),
        ("impressions", pa.int64()),
    ]
)


def exposure_table(
    records: list[ProbeRecord],
    events: Any,
    catalog: CatalogView,
    end: float,
    bin_seconds: float,
) -> pa.Table:
    """Per probe and bin of time since its control, the probe users' impressions of their own
    target item, of its topic and of its creator (summed over the users), and all their
    impressions; bins of ``bin_seconds`` up to the run's ``end`` (the last may be shorter)."""
    rows: dict[str, list[Any]] = {name: [] for name in EXPOSURE_SCHEMA.names}
    for record in records:
        start = int(np.searchsorted(events.time, record.at, side="left"))
        time, user = events.time[start:], events.user[start:]
        item, position = events.item[start:], events.position[start:]
        index = np.searchsorted(record.users, user)
        index = np.minimum(index, max(record.users.shape[0] - 1, 0))
        mine = (position >= 0) & (record.users.shape[0] > 0)
        if record.users.shape[0]:
            mine &= record.users[index] == user
        index, seen, when = index[mine], item[mine].astype(np.int64), time[mine]
        n_bins = max(1, int(np.ceil((end - record.at) / bin_seconds)))
        bins = np.minimum(((when - record.at) // bin_seconds).astype(np.int64), n_bins - 1)
        hits = {
            "item": seen == record.item[index],
            "topic": catalog.topic[seen] == record.topic[index],
            "creator": catalog.creator[seen] == record.creator[index],
        }
        impressions = np.bincount(bins, minlength=n_bins)
        for level, hit in hits.items():
            exposures = np.bincount(bins[hit], minlength=n_bins)
            for b in range(n_bins):
                rows["probe"].append(record.name)
                rows["control"].append(record.control)
                rows["about"].append(record.level)
                rows["taken"].append(record.taken)
                rows["users"].append(int(record.users.shape[0]))
                rows["exposure_to"].append(level)
                rows["since_seconds"].append(b * bin_seconds)
                rows["bin_seconds"].append(min(bin_seconds, end - record.at - b * bin_seconds))
                rows["exposures"].append(int(exposures[b]))
                rows["impressions"].append(int(impressions[b]))
    return pa.table(rows, schema=EXPOSURE_SCHEMA)


RESPONSIVENESS_SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("probe", pa.string()),
        ("control", pa.string()),
        ("exposure_to", pa.string()),
        ("measure", pa.string()),
        ("since_seconds", pa.float64()),
        ("with_control", pa.float64()),
        ("without_control", pa.float64()),
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n", pa.int64()),
        ("missing", pa.string()),
    ]
)


def responsiveness(
    tables: dict[tuple[str, int, bool], pa.Table], variants: list[str]
) -> tuple[pa.Table, dict[str, Any]]:
    """Pair each run's probe exposures with its twin's: per variant, probe and exposure level,
    the exposure per bin in both twins and their difference (with minus without), and the share
    of exposure prevented, ``1 - with / without`` of the exposures within each of
    :data:`HORIZONS` of the control; means with 95% intervals over replications.

    ``tables`` maps (variant, replication, taken) to a run's :func:`exposure_table`. Returns the
    ``responsiveness.parquet`` table and the summary's ``responsiveness`` (variant -> probe ->
    control, exposure level and prevented share per horizon).
    """
    out: dict[str, list[Any]] = {name: [] for name in RESPONSIVENESS_SCHEMA.names}
    summary: dict[str, Any] = {}

    def emit(**row: Any) -> None:
        for name in RESPONSIVENESS_SCHEMA.names:
            out[name].append(row.get(name))

    for variant in variants:
        replications = sorted(
            r for (v, r, taken) in tables if v == variant and taken and (v, r, False) in tables
        )
        if not replications:
            continue
        pairs = [
            (tables[(variant, r, True)].to_pydict(), tables[(variant, r, False)].to_pydict())
            for r in replications
        ]
        first = pairs[0][0]
        keys = list(
            dict.fromkeys(zip(first["probe"], first["control"], first["about"], strict=True))
        )
        summary[variant] = {}
        for probe, control, level_of in keys:
            entry: dict[str, Any] = {
                "control": control,
                "exposure_to": level_of,
                "users": None,
                "prevented_share": {},
            }
            for level in ("item", "topic", "creator"):
                curves = [
                    (_curve(taken, probe, level), _curve(withheld, probe, level))
                    for taken, withheld in pairs
                ]
                since, widths = curves[0][0][0], curves[0][0][2]
                if level == level_of:
                    # Users who took the control, per replication: fewer may be eligible in some.
                    users = [taken[3] for taken, _ in curves]
                    entry["users"] = min(users)
                    if max(users) != min(users):
                        entry["users_max"] = max(users)
                with_bins = np.array([c[0][1] for c in curves], np.float64)
                without_bins = np.array([c[1][1] for c in curves], np.float64)
                for b, start in enumerate(since):
                    mean, low, high = interval(list(with_bins[:, b] - without_bins[:, b]))
                    emit(
                        variant=variant,
                        probe=probe,
                        control=control,
                        exposure_to=level,
                        measure="exposure_difference",
                        since_seconds=start,
                        with_control=float(with_bins[:, b].mean()),
                        without_control=float(without_bins[:, b].mean()),
                        value=mean,
                        ci_low=low,
                        ci_high=high,
                        n=len(curves),
                    )
                remaining = float(since[-1] + widths[-1]) if since else 0.0
                for horizon, seconds in HORIZONS.items():
                    share = _prevented(with_bins, without_bins, since, seconds, remaining)
                    emit(
                        variant=variant,
                        probe=probe,
                        control=control,
                        exposure_to=level,
                        measure="prevented_share",
                        since_seconds=min(seconds, remaining),
                        **share,
                    )
                    if level == level_of:
                        entry["prevented_share"][horizon] = {
                            key: share.get(key)
                            for key in ("value", "ci_low", "ci_high", "n", "missing")
                            if share.get(key) is not None
                        }
            if not entry["users"] and "users_max" not in entry:
                entry["missing"] = (
                    "no user was eligible: none was shown anything in the hour before who had not "
                    "taken an earlier probe's control"
                )
            summary[variant][probe] = entry
    return pa.table(out, schema=RESPONSIVENESS_SCHEMA), summary


def _curve(
    table: dict[str, list[Any]], probe: str, level: str
) -> tuple[list[float], list[int], list[float], int]:
    """(bin starts, exposures, bin widths, users) of one probe and exposure level."""
    rows = [
        i
        for i, (name, to) in enumerate(zip(table["probe"], table["exposure_to"], strict=True))
        if name == probe and to == level
    ]
    return (
        [table["since_seconds"][i] for i in rows],
        [table["exposures"][i] for i in rows],
        [table["bin_seconds"][i] for i in rows],
        table["users"][rows[0]] if rows else 0,
    )


def _prevented(
    with_bins: np.ndarray,
    without_bins: np.ndarray,
    since: list[float],
    seconds: float,
    remaining: float,
) -> dict[str, Any]:
    """The share of exposure prevented within ``seconds`` of the control, per replication, its
    mean and interval (cut to at most 1: no control prevents more than everything)."""
    base = {
        "with_control": None,
        "without_control": None,
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "n": 0,
    }
    if np.isfinite(seconds) and seconds > remaining:
        return base | {
            "missing": f"the run ends {format_duration(remaining)} after the control, before "
            f"{format_duration(seconds)}"
        }
    # whole bins only: a horizon between bin starts counts the bins that start before it
    inside = np.asarray(since) < seconds
    with_sum, without_sum = with_bins[:, inside].sum(axis=1), without_bins[:, inside].sum(axis=1)
    measured = without_sum > 0
    if not measured.any():
        return base | {
            "with_control": float(with_sum.mean()),
            "without_control": 0.0,
            "missing": "no exposure to the target in the twin without the control",
        }
    shares = 1.0 - with_sum[measured] / without_sum[measured]
    mean, low, high = interval(list(shares), high=1.0)
    return base | {
        "with_control": float(with_sum.mean()),
        "without_control": float(without_sum.mean()),
        "value": mean,
        "ci_low": low,
        "ci_high": high,
        "n": int(measured.sum()),
    }
