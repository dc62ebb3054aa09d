"""The columnar event log: one row per impression (and per abandoned session), in time order.

Rows are buffered in growing numpy columns and become a table once, at the end; layers read the
prefix visible to them without copying.

A log kept on disk stores each column in an anonymous temporary file (created and unlinked at
once, so nothing is left behind, even by a killed process) mapped into memory: its pages belong to
the operating system's file cache, written back and dropped under memory pressure, so a long run's
memory stays bounded while reads stay array reads. Growing a disk column extends its file and maps
it again, without copying.

With label delays (the scenario's ``logging`` section, see :mod:`sim.serving.labels`) the log also
keeps each event's arrival time: an event is visible to a read with horizon ``h`` when it arrived
before ``h``, so what a layer sees is no longer a prefix of the log. Without them arrival is
the event's time, no column is kept, and every read is the prefix found by one binary search.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from sim.domain import EVENT_COLUMNS, EventTable, Kind, Requests, Responses, Scope, readonly
from sim.errors import RecloopError
from sim.serving.labels import LabelPipeline

__all__ = ["EventLog", "row_chunks", "CHUNK_ROWS"]

#: Rows of a finished log that one pass over it (the run's summary, the metrics) holds working
#: arrays for at a time. A longer log (a week of a million users logs about 900M rows) is read in
#: chunks of consecutive rows, or in shards of users, so that measuring it needs memory for this
#: many rows, not for the whole log; the figures are the same.
CHUNK_ROWS = 1 << 24

#: Storage type of each core column (same order as ``EVENT_COLUMNS``).
CORE_COLUMNS: dict[str, type] = dict(
    zip(
        EVENT_COLUMNS,
        (np.float64, np.int32, np.int32, np.int16, np.int8, np.int8, np.float32, np.int64),
        strict=True,
    )
)


class EventLog:
    """Append-only event log with a version column per layer.

    ``on_disk`` keeps the columns in temporary files under ``directory`` (the system's temporary
    directory when None) instead of process memory. ``labels`` delays or loses events by kind,
    drawing for served slates from ``rng`` and for controls from ``control_rng``: the log then
    keeps each row's arrival time.
    """

    def __init__(
        self,
        layers: Iterable[str] = (),
        capacity: int = 1 << 16,
        on_disk: bool = False,
        directory: str | Path | None = None,
        labels: LabelPipeline | None = None,
        rng: np.random.Generator | None = None,
        control_rng: np.random.Generator | None = None,
    ):
        self.layers = tuple(layers)
        self.on_disk = on_disk
        self.labels = labels
        #: Whether rows arrive later than their time (or never): reads then mask on arrival.
        self.delayed = labels is not None
        if labels is not None and (rng is None or control_rng is None):
            raise ValueError("a log with label delays needs the generators they are drawn from")
        self._rng = rng
        # Controls outside slates (probes) draw from their own generator: a probe's twin, which
        # logs none, keeps drawing the same delays for every later event.
        self._control_rng = control_rng
        self._dtypes = dict(CORE_COLUMNS)
        self._dtypes.update({_version_column(layer): np.int32 for layer in self.layers})
        self._dtypes[DELETED] = np.float64
        if self.delayed:
            self._dtypes[ARRIVAL] = np.float64
        #: Rows waiting for their session to end (``session_end`` delays), and their sessions.
        self._pending_rows = np.zeros(0, np.int64)
        self._pending_sessions = np.zeros(0, np.int64)
        self._files: dict[str, IO[bytes]] = {}
        self._directory = str(directory or tempfile.gettempdir())
        if on_disk:
            self._files = {
                name: tempfile.TemporaryFile(prefix=f"recloop-{name}-", dir=directory)
                for name in self._dtypes
            }
        self._columns: dict[str, np.ndarray] = {
            name: self._allocate(name, capacity) for name in self._dtypes
        }
        self._size = 0
        #: Every deletion so far: its time and the log rows it deleted (ascending).
        self.deletions: list[tuple[float, np.ndarray]] = []

    def _allocate(self, name: str, capacity: int) -> np.ndarray:
        """A column of ``capacity`` rows; on disk, the same file mapped again (rows kept).

        On disk the file's blocks are reserved first: a mapping over a sparse file on a full
        disk kills the process with SIGBUS at the first write, where a reservation fails with
        a message."""
        if not self.on_disk:
            return np.empty(capacity, self._dtypes[name])
        file = self._files[name]
        size = capacity * np.dtype(self._dtypes[name]).itemsize
        try:
            os.posix_fallocate(file.fileno(), 0, size)
        except OSError as error:
            raise RecloopError(
                f"output.event_log: cannot reserve {size / 2**20:,.1f} MiB for the event log on "
                f"disk in {self._directory} "
                f"({error.strerror}); free some space, or keep the log in memory "
                "(output.event_log: memory)"
            ) from None
        return np.memmap(file, self._dtypes[name], mode="r+", shape=(capacity,))

    def __len__(self) -> int:
        return self._size

    def append_slates(
        self,
        requests: Requests,
        slates: np.ndarray,
        responses: Responses,
        versions: dict[str, Any],
        ended: np.ndarray | None = None,
    ) -> None:
        """Log every impression of a served batch, then an ``ABANDON`` row per abandoned session.

        ``versions`` gives, per layer, the version that served the batch (an int) or each request
        (an ``(n,)`` array, when cohorts saw different versions). ``ended`` marks the requests
        after which their session ended (its last request, or abandoned): the labels that wait
        for their session's end arrive then.
        """
        n, k = slates.shape
        rows = {
            "time": np.repeat(requests.times, k),
            "user": np.repeat(requests.users, k),
            "item": slates.ravel(),
            "position": np.tile(np.arange(k, dtype=np.int16), n),
            "kind": responses.kind.ravel(),
            "scope": responses.scope.ravel(),
            "dwell": responses.dwell.ravel(),
            "session": np.repeat(requests.sessions, k),
        }
        left = np.flatnonzero(responses.abandoned)
        if left.shape[0]:
            abandon = {
                "time": requests.times[left],
                "user": requests.users[left],
                "item": np.full(left.shape[0], -1),
                "position": np.full(left.shape[0], -1),
                "kind": np.full(left.shape[0], Kind.ABANDON),
                "scope": np.full(left.shape[0], Scope.SESSION),
                "dwell": np.zeros(left.shape[0]),
                "session": requests.sessions[left],
            }
            # Stable on time: each abandon row follows its own request's impressions.
            order = np.argsort(np.concatenate([rows["time"], abandon["time"]]), kind="stable")
            rows = {name: np.concatenate([rows[name], abandon[name]])[order] for name in rows}
        count = rows["time"].shape[0]
        for layer in self.layers:
            served = np.asarray(versions[layer])  # one version, or one per request
            if served.ndim:
                served = np.repeat(served, k)
                if left.shape[0]:
                    served = np.concatenate([served, np.asarray(versions[layer])[left]])[order]
            rows[_version_column(layer)] = np.broadcast_to(served, (count,))
        rows[DELETED] = np.full(count, np.inf)
        self._append(rows, count)
        if ended is not None and self._pending_rows.shape[0] and ended.any():
            self._end_sessions(requests.sessions[ended], requests.times[ended])

    def append_controls(
        self,
        time: float,
        users: np.ndarray,
        items: np.ndarray,
        kind: Kind,
        scope: Scope,
        sessions: np.ndarray,
        versions: dict[str, np.ndarray],
    ) -> None:
        """Log a control each of ``users`` took at ``time`` on their item of ``items``, outside
        any slate (position -1), in their session of ``sessions``, attributed to the layer
        ``versions`` given per user."""
        count = users.shape[0]
        rows = {
            "time": np.full(count, time),
            "user": users,
            "item": items,
            "position": np.full(count, -1),
            "kind": np.full(count, kind),
            "scope": np.full(count, scope),
            "dwell": np.zeros(count),
            "session": sessions,
        }
        rows.update({_version_column(layer): versions[layer] for layer in self.layers})
        rows[DELETED] = np.full(count, np.inf)
        self._append(rows, count, self._control_rng)

    def delete(self, time: float, rows: np.ndarray) -> None:
        """Delete the log ``rows`` (earlier than ``time``) at ``time``: a read whose horizon is
        past ``time`` (the deletion has reached it) no longer returns them."""
        rows = np.unique(rows)
        self._columns[DELETED][rows] = np.minimum(self._columns[DELETED][rows], time)
        self.deletions.append((time, rows))

    def _append(
        self, rows: dict[str, np.ndarray], count: int, rng: np.random.Generator | None = None
    ) -> None:
        if self._size and count and rows["time"][0] < self._columns["time"][self._size - 1]:
            raise ValueError("events must be appended in time order")
        if self.labels is not None:
            rng = rng or self._rng
            assert rng is not None
            arrival = self.labels.arrivals(rows["time"], rows["kind"], rng)
            rows[ARRIVAL] = arrival
            waiting = np.flatnonzero(np.isnan(arrival))
            if waiting.shape[0]:
                self._pending_rows = np.concatenate([self._pending_rows, self._size + waiting])
                self._pending_sessions = np.concatenate(
                    [self._pending_sessions, np.asarray(rows["session"])[waiting]]
                )
        needed = self._size + count
        capacity = self._columns["time"].shape[0]
        if needed > capacity:
            capacity = max(needed, 2 * capacity)
            for name, column in self._columns.items():
                grown = self._allocate(name, capacity)
                if not self.on_disk:
                    grown[: self._size] = column[: self._size]
                self._columns[name] = grown
        for name, column in self._columns.items():
            column[self._size : needed] = rows[name]
        self._size = needed

    def _end_sessions(self, sessions: np.ndarray, times: np.ndarray) -> None:
        """The rows waiting for one of ``sessions`` to end arrive at its end time of ``times``."""
        order = np.argsort(sessions)
        sessions, times = sessions[order], times[order]
        at = np.minimum(np.searchsorted(sessions, self._pending_sessions), sessions.shape[0] - 1)
        done = sessions[at] == self._pending_sessions
        if done.any():
            self._columns[ARRIVAL][self._pending_rows[done]] = times[at[done]]
            self._pending_rows = self._pending_rows[~done]
            self._pending_sessions = self._pending_sessions[~done]

    def count_before(self, before: float) -> int:
        """How many events have ``time < before`` (arrived or not)."""
        return int(np.searchsorted(self._columns["time"][: self._size], before, side="left"))

    def count_visible(self, before: float) -> int:
        """How many events arrived before ``before`` (deleted or not)."""
        stop = self.count_before(before)
        if not self.delayed:
            return stop
        return int(np.count_nonzero(self._columns[ARRIVAL][:stop] < before))

    def arrival(self, rows: np.ndarray | slice) -> np.ndarray:
        """Arrival times of the log ``rows`` (their times without label delays; ``inf``: lost,
        ``nan``: waiting for their session to end)."""
        column = ARRIVAL if self.delayed else "time"
        return np.asarray(self._columns[column][: self._size][rows])

    def arrived(self, rows: np.ndarray, before: float) -> tuple[np.ndarray, np.ndarray]:
        """Of the log ``rows`` (ascending), those arrived and not deleted before ``before``, and
        those that may still arrive (not yet arrived, not lost, not deleted)."""
        arrival = self.arrival(rows)
        deleted = self._columns[DELETED][rows] < before
        here = (arrival < before) & ~deleted
        later = ~here & ~deleted & ~np.isposinf(arrival)
        return rows[here], rows[later]

    def visible(self, before: float, since: float | None = None) -> EventTable:
        """Events with ``since <= time < before`` that arrived before ``before``, as read-only
        views, without those deleted before ``before`` (a reader sees a deletion as it sees an
        event: once past its time)."""
        start = 0 if since is None else self.count_before(since)
        stop = self.count_before(before)
        kept = self.kept(start, stop, before)
        table = self._table(start, stop)
        return table if kept is None else table.take(kept - start)

    def between(self, start: int, stop: int) -> EventTable:
        """Events by position, ``start <= index < stop`` (deleted or not)."""
        return self._table(start, stop)

    def kept(self, start: int, stop: int, before: float) -> np.ndarray | None:
        """Positions in ``start:stop`` of the rows arrived and not deleted before ``before``;
        None when all were (the common case: no copy)."""
        if self.delayed:
            here = self._columns[ARRIVAL][start:stop] < before
            if self.deletions:
                here &= self._columns[DELETED][start:stop] >= before
            return None if here.all() else start + np.flatnonzero(here)
        if not self.deletions:
            return None
        deleted = self._columns[DELETED][start:stop] < before
        if not deleted.any():
            return None
        return start + np.flatnonzero(~deleted)

    def unlabelled(self, before: float, since: float | None = None) -> EventTable | None:
        """The impressions served with ``since <= time < before`` whose label had not arrived
        by ``before`` (late, lost, or waiting for their session), as a learner sees them: kind
        ``IMPRESSION``, no scope, no dwell, no arrival. None for a log without label delays."""
        if not self.delayed:
            return None
        start = 0 if since is None else self.count_before(since)
        stop = self.count_before(before)
        waiting = ~(self._columns[ARRIVAL][start:stop] < before)
        waiting &= self._columns[DELETED][start:stop] >= before
        rows = start + np.flatnonzero(waiting)
        table = self._table(start, stop).take(rows - start)
        hidden = rows.shape[0]
        return replace(
            table,
            kind=readonly(np.full(hidden, Kind.IMPRESSION, np.int8)),
            scope=readonly(np.full(hidden, Scope.NONE, np.int8)),
            dwell=readonly(np.zeros(hidden, np.float32)),
            arrival=None,
        )

    def table(self) -> EventTable:
        """Every event logged so far."""
        return self._table(0, self._size)

    def _table(self, start: int, stop: int) -> EventTable:
        # np.asarray: plain arrays, not memmap views, whatever the storage
        column = {
            name: readonly(np.asarray(values[start:stop])) for name, values in self._columns.items()
        }
        return EventTable(
            **{name: column[name] for name in CORE_COLUMNS},
            versions={layer: column[_version_column(layer)] for layer in self.layers},
            arrival=column.get(ARRIVAL),
        )


#: The column holding when each row was deleted (inf: never); not part of the event table.
DELETED = "deleted_at"
#: The column holding when each row arrived in the logs (label-delayed logs only).
ARRIVAL = "arrival"


def _version_column(layer: str) -> str:
    return f"v_{layer}"


def row_chunks(times: np.ndarray, edges: np.ndarray | None = None) -> list[slice]:
    """Consecutive ranges of a time-ordered log's rows, about ``CHUNK_ROWS`` each (one range for
    a shorter log), cut only between different times, so that every row of a request lies in one
    range, and with ``edges`` (ascending bin starts) only at bin starts, so that every bin does.

    >>> row_chunks(np.array([0.0, 1.0, 1.0, 2.0]))
    [slice(0, 4, None)]
    """
    n = times.shape[0]
    cuts = None if edges is None else np.searchsorted(times, edges, "left")
    chunks, start = [], 0
    while n - start > CHUNK_ROWS:
        target = start + CHUNK_ROWS
        if cuts is None:
            cut = int(np.searchsorted(times, times[target], "left"))
            if cut <= start:  # more rows at one time than a chunk holds: keep them together
                cut = int(np.searchsorted(times, times[target], "right"))
        else:
            below = cuts[(cuts > start) & (cuts <= target)]
            later = cuts[cuts > start]
            cut = int(below[-1]) if below.shape[0] else int(later[0]) if later.shape[0] else n
        chunks.append(slice(start, cut))
        start = cut
    chunks.append(slice(start, n))
    return chunks
