"""The columnar event log: one row per impression (and per abandoned session), in time order.

Rows are buffered in growing numpy columns and become a table once, at the end; layers read the
prefix visible to them without copying.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sim.domain import EventTable, Kind, Requests, Responses, Scope, readonly

__all__ = ["EventLog"]

CORE_COLUMNS: dict[str, type] = {
    "time": np.float64,
    "user": np.int32,
    "item": np.int32,
    "position": np.int16,
    "kind": np.int8,
    "scope": np.int8,
    "dwell": np.float32,
    "session": np.int64,
}


class EventLog:
    """Append-only event log with a version column per layer."""

    def __init__(self, layers: Iterable[str] = (), capacity: int = 1 << 16):
        self.layers = tuple(layers)
        self._dtypes = dict(CORE_COLUMNS)
        self._dtypes.update({_version_column(layer): np.int32 for layer in self.layers})
        self._columns: dict[str, np.ndarray] = {
            name: np.empty(capacity, dtype) for name, dtype in self._dtypes.items()
        }
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append_slates(
        self,
        requests: Requests,
        slates: np.ndarray,
        responses: Responses,
        versions: dict[str, int],
    ) -> None:
        """Log every impression of a served batch, then an ``ABANDON`` row per abandoned session."""
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
            rows[_version_column(layer)] = np.full(count, versions[layer])
        self._append(rows, count)

    def _append(self, rows: dict[str, np.ndarray], count: int) -> None:
        if self._size and count and rows["time"][0] < self._columns["time"][self._size - 1]:
            raise ValueError("events must be appended in time order")
        needed = self._size + count
        capacity = self._columns["time"].shape[0]
        if needed > capacity:
            capacity = max(needed, 2 * capacity)
            for name, column in self._columns.items():
                grown = np.empty(capacity, column.dtype)
                grown[: self._size] = column[: self._size]
                self._columns[name] = grown
        for name, column in self._columns.items():
            column[self._size : needed] = rows[name]
        self._size = needed

    def visible(self, before: float) -> EventTable:
        """Events with ``time < before``, as read-only views."""
        stop = int(np.searchsorted(self._columns["time"][: self._size], before, side="left"))
        return self._table(stop)

    def table(self) -> EventTable:
        """Every event logged so far."""
        return self._table(self._size)

    def _table(self, stop: int) -> EventTable:
        column = {name: readonly(values[:stop]) for name, values in self._columns.items()}
        return EventTable(
            **{name: column[name] for name in CORE_COLUMNS},
            versions={layer: column[_version_column(layer)] for layer in self.layers},
        )


def _version_column(layer: str) -> str:
    return f"v_{layer}"
