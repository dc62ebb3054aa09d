"""What the probes prevented: per run, the probe users' exposure to what they said no to
(:func:`exposure_table`), and over a probe run and its twin (the same run without the controls,
see :mod:`sim.serving.probes`), the share of that exposure the control prevented
(:func:`responsiveness`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sim.domain import CatalogView
from sim.measuring.compare import interval
from sim.scenario.durations import format_duration
from sim.serving.probes import ProbeRecord

__all__ = ["PROBE_BIN", "HORIZONS", "exposure_table", "responsiveness"]

#: Longest bin of the probe exposure curves: the first horizon is one hour.
PROBE_BIN = 3600.0

#: Horizons of the prevented share, in seconds after the control (``end``: the run's end).
HORIZONS: dict[str, float] = {"1h": 3600.0, "1d": 86400.0, "end": np.inf}


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
