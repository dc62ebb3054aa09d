"""Reading a table world's data files: the item table and the optional user-segment table.

Parquet or CSV, read with pyarrow. Every problem is one line naming the file, the row (the
first data row is row 1; a CSV's line is the row plus one, for its header) and the column, so
that a team can fix a file it exported without guessing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sim.errors import ScenarioError
from sim.scenario.spec import Scenario

__all__ = ["ItemTable", "SegmentTable", "read_items", "read_segments", "ITEM_COLUMNS"]

#: The item table's columns: what each is, and whether it is required.
ITEM_COLUMNS = {
    "item": "item id: 0 to n-1, one row each",
    "click_prob": "chance that an examined item is clicked",
    "negative_prob": "chance that an examined, unclicked item draws an explicit negative",
    "topic": "topic id, below world.catalog.topics",
    "creator": "creator id, below world.catalog.creators",
    "quality": "true quality (parametric behaviour only: without click_prob)",
    "created_at": "seconds from the run's start; after 0: the item arrives then",
}
SEGMENT_COLUMNS = {
    "segment": "a label",
    "share": "share of users in the segment; shares sum to 1",
    "click_scale": "multiplies every item's click_prob for the segment's users",
}
#: How far the segment shares may sum from 1 (rounding in an exported file).
SHARE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ItemTable:
    """The items of a table world, in id order; ``None`` for a column the file does not have.

    Items ``0 .. n_start - 1`` are live from the start; the rest arrive at ``created_at``, in
    id order.
    """

    path: str
    n_items: int
    n_start: int
    click_prob: np.ndarray | None
    negative_prob: np.ndarray | None
    topic: np.ndarray | None
    creator: np.ndarray | None
    quality: np.ndarray | None
    created_at: np.ndarray | None


@dataclass(frozen=True)
class SegmentTable:
    """User segments: their labels, shares (summing to 1) and click-probability scales."""

    path: str
    labels: list[Any]
    share: np.ndarray
    click_scale: np.ndarray


def read_items(path: str, scenario: Scenario) -> ItemTable:
    """The item table at ``path``, checked against ``scenario`` (topics, creators, slate size,
    and the interventions a table world can apply)."""
    table, where = _read(path, "world.catalog.table", ITEM_COLUMNS)
    if "item" not in table.column_names:
        raise ScenarioError(f"{where}: no column 'item' (columns: {', '.join(table.column_names)})")
    n = table.num_rows
    if n == 0:
        raise ScenarioError(f"{where}: no rows; a catalogue needs items")
    item = _numbers(table, "item", where, integer=True)
    order = np.argsort(item, kind="stable")
    repeated = np.flatnonzero(item[order][1:] == item[order][:-1])
    if repeated.shape[0]:
        first, again = order[repeated[0]], order[repeated[0] + 1]
        raise ScenarioError(
            f"{_at(where, again, 'item')}: item {item[again]} appears again (first in row "
            f"{first + 1}); each item has one row"
        )
    outside = np.flatnonzero((item < 0) | (item >= n))
    if outside.shape[0]:
        row = outside[0]
        raise ScenarioError(
            f"{_at(where, row, 'item')}: {item[row]} is not an item id of this table: ids are "
            f"0 to {n - 1}, one per row"
        )
    catalog = scenario.world.catalog
    columns: dict[str, np.ndarray | None] = {}
    for name, low, high in (
        ("click_prob", 0.0, 1.0),
        ("negative_prob", 0.0, 1.0),
        ("topic", 0, catalog.topics - 1),
        ("creator", 0, catalog.creators - 1),
        ("quality", None, None),
        ("created_at", None, None),
    ):
        if name not in table.column_names:
            columns[name] = None
            continue
        integer = name in ("topic", "creator")
        values = _numbers(table, name, where, integer=integer)
        _within(values, low, high, where, name, scenario)
        columns[name] = values[order]
    if columns["negative_prob"] is not None and columns["click_prob"] is None:
        raise ScenarioError(
            f"{where}: column negative_prob: it needs click_prob (without it, negatives follow "
            "the parametric behaviour's utilities)"
        )
    created = columns["created_at"]
    n_start = n
    if created is not None:
        n_start = _arrivals(created, order, where, scenario)
    if n_start < scenario.stack.slate_size:
        raise ScenarioError(
            f"{where}: {n_start} items are live at the start, fewer than stack.slate_size "
            f"({scenario.stack.slate_size})"
        )
    _refuse_interventions(scenario, where, given_clicks=columns["click_prob"] is not None)
    return ItemTable(
        path=path,
        n_items=n,
        n_start=n_start,
        click_prob=columns["click_prob"],
        negative_prob=columns["negative_prob"],
        topic=None if columns["topic"] is None else columns["topic"].astype(np.int16),
        creator=None if columns["creator"] is None else columns["creator"].astype(np.int32),
        quality=None if columns["quality"] is None else columns["quality"].astype(np.float32),
        created_at=created,
    )


def read_segments(path: str, items: ItemTable) -> SegmentTable:
    """The segment table at ``path``; every scaled click probability must stay a probability."""
    table, where = _read(path, "world.users.segments", SEGMENT_COLUMNS)
    missing = [name for name in SEGMENT_COLUMNS if name not in table.column_names]
    if missing:
        raise ScenarioError(
            f"{where}: no column {', '.join(repr(m) for m in missing)} (columns: "
            f"{', '.join(table.column_names)})"
        )
    if table.num_rows == 0:
        raise ScenarioError(f"{where}: no rows; give at least one segment")
    if items.click_prob is None:
        raise ScenarioError(f"{where}: segments scale click_prob, which {items.path} does not have")
    labels = table.column("segment").to_pylist()
    for row, label in enumerate(labels):
        if label is None:
            raise ScenarioError(f"{_at(where, row, 'segment')}: missing value")
        if labels.index(label) != row:
            raise ScenarioError(
                f"{_at(where, row, 'segment')}: segment {label!r} appears again (first in row "
                f"{labels.index(label) + 1})"
            )
    share = _numbers(table, "share", where, integer=False)
    _within(share, 0.0, 1.0, where, "share", None)
    if (share == 0).any():
        row = int(np.flatnonzero(share == 0)[0])
        raise ScenarioError(f"{_at(where, row, 'share')}: 0; a segment needs users")
    if abs(float(share.sum()) - 1.0) > SHARE_TOLERANCE:
        raise ScenarioError(f"{where}: column share sums to {float(share.sum()):.6g}, not 1")
    scale = _numbers(table, "click_scale", where, integer=False)
    _within(scale, 0.0, None, where, "click_scale", None)
    top = int(np.argmax(items.click_prob))
    highest = float(items.click_prob[top])
    over = np.flatnonzero(scale * highest > 1.0)
    if over.shape[0]:
        row = int(over[0])
        raise ScenarioError(
            f"{_at(where, row, 'click_scale')}: {scale[row]:g} times item {top}'s click_prob "
            f"{highest:g} is {scale[row] * highest:.4g}, not a probability"
        )
    return SegmentTable(path=path, labels=labels, share=share / share.sum(), click_scale=scale)


# --- reading -----------------------------------------------------------------------------------


def _read(path: str, field: str, known: dict[str, str]) -> tuple[pa.Table, str]:
    """The table at ``path`` and how errors name it; unknown columns are refused."""
    file = Path(path)
    where = _shown(file)
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "no such file"
        raise ScenarioError(f"{field}: {where}: {what}")
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(file)
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(file)
        else:
            raise ScenarioError(
                f"{field}: {where}: a table is a .parquet or .csv file, not {suffix or 'no suffix'}"
            )
    except (pa.ArrowException, OSError) as error:
        message = " ".join(str(error).split())
        raise ScenarioError(f"{where}: cannot read: {message}") from None
    for name in table.column_names:
        if name not in known:
            match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{match[0]}'?" if match else ""
            raise ScenarioError(
                f"{where}: column {name!r}: unknown column{hint} (columns: {', '.join(known)})"
            )
    return table, where


def _shown(file: Path) -> str:
    """``file`` as errors show it: relative to the current directory when inside it."""
    try:
        return str(file.relative_to(Path.cwd()))
    except ValueError:
        return str(file)


def _at(where: str, row: int | np.integer, column: str) -> str:
    line = f" (line {int(row) + 2})" if where.lower().endswith(".csv") else ""
    return f"{where}: row {int(row) + 1}{line}, column {column}"


def _numbers(table: pa.Table, name: str, where: str, integer: bool) -> np.ndarray:
    """Column ``name`` as float64 (int64 with ``integer``): no missing values, numbers only."""
    column = table.column(name).combine_chunks()
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ScenarioError(f"{_at(where, row, name)}: missing value")
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        for row, value in enumerate(column.to_pylist()):
            try:
                float(value)
            except (TypeError, ValueError):
                raise ScenarioError(f"{_at(where, row, name)}: {value!r} is not a number") from None
        values = np.array([float(value) for value in column.to_pylist()])
    else:
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.shape[0]:
        raise ScenarioError(f"{_at(where, bad[0], name)}: {values[bad[0]]} is not a finite number")
    if integer:
        fraction = np.flatnonzero(values != np.round(values))
        if fraction.shape[0]:
            row = fraction[0]
            raise ScenarioError(f"{_at(where, row, name)}: {values[row]:g} is not a whole number")
        return values.astype(np.int64)
    return values


def _within(
    values: np.ndarray,
    low: float | None,
    high: float | None,
    where: str,
    name: str,
    scenario: Scenario | None,
) -> None:
    outside = np.zeros(values.shape[0], bool)
    if low is not None:
        outside |= values < low
    if high is not None:
        outside |= values > high
    if not outside.any():
        return
    row = int(np.flatnonzero(outside)[0])
    value = values[row]
    if name in ("click_prob", "negative_prob", "share"):
        reason = "is not a probability (0 to 1)"
    elif name in ("topic", "creator"):
        count = high + 1 if high is not None else 0
        plural = "topics" if name == "topic" else "creators"
        reason = (
            f"does not exist (world.catalog.{plural} is {count}; raise it, or number them from "
            f"0 to {count - 1})"
        )
    else:
        reason = "must not be negative"
    raise ScenarioError(f"{_at(where, row, name)}: {value:g} {reason}")


def _arrivals(created: np.ndarray, order: np.ndarray, where: str, scenario: Scenario) -> int:
    """How many items are live at the start; the rest must have the highest ids, in order of
    arrival (live items are a prefix of the ids, as in every recloop catalogue)."""
    later = created > 0
    n_start = int((~later).sum())
    if later[:n_start].any():
        item = int(np.flatnonzero(later[:n_start])[0])
        live = n_start + int(np.flatnonzero(~later[n_start:])[0])
        raise ScenarioError(
            f"{_at(where, order[item], 'created_at')}: item {item} arrives during the run (at "
            f"{created[item]:g} s) but item {live} (row {order[live] + 1}) is live from the "
            "start: items arriving later need the highest ids, in order of arrival"
        )
    arriving = created[n_start:]
    back = np.flatnonzero(np.diff(arriving) < 0)
    if back.shape[0]:
        item = n_start + int(back[0]) + 1
        raise ScenarioError(
            f"{_at(where, order[item], 'created_at')}: item {item} arrives at {created[item]:g} "
            f"s, before item {item - 1} ({created[item - 1]:g} s): items arriving later are "
            "numbered in order of arrival"
        )
    return n_start


#: Interventions that change utilities, which a world of given click probabilities has not.
UTILITY_INTERVENTIONS = ("topic_aversion", "item_turns_bad", "preference_shift")


def _refuse_interventions(scenario: Scenario, where: str, given_clicks: bool) -> None:
    for index, event in enumerate(scenario.interventions):
        if event.kind == "catalog_burst":
            raise ScenarioError(
                f"interventions.{index}: a catalog_burst draws new items, but {where} is the "
                "whole catalogue: give arriving items a created_at after 0 instead"
            )
        if given_clicks and event.kind in UTILITY_INTERVENTIONS:
            raise ScenarioError(
                f"interventions.{index}: {event.kind} changes utilities, which a world of given "
                f"click probabilities ({where}) does not have; a traffic_spike applies"
            )
