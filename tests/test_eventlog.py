from __future__ import annotations

import numpy as np
import pytest

from sim.domain import Kind, Requests, Responses, Scope
from sim.eventlog import EventLog


def batch(times, k=3, abandoned=()):
    n = len(times)
    requests = Requests(
        times=np.array(times, float),
        users=np.arange(n, dtype=np.int32),
        sessions=np.arange(n, dtype=np.int64) + 100,
        k=k,
    )
    slates = np.arange(n * k).reshape(n, k)
    flags = np.zeros(n, bool)
    flags[list(abandoned)] = True
    responses = Responses(
        kind=np.full((n, k), Kind.SKIP, np.int8),
        scope=np.full((n, k), Scope.ITEM, np.int8),
        dwell=np.zeros((n, k), np.float32),
        abandoned=flags,
    )
    return requests, slates, responses


def test_rows_per_impression_with_versions():
    log = EventLog(layers=("retrain",), capacity=2)
    log.append_slates(*batch([1.0, 2.0]), versions={"retrain": 4})
    table = log.table()
    assert len(table) == 6
    np.testing.assert_array_equal(table.position, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(table.versions["retrain"], 4)


def test_abandon_row_follows_its_own_request():
    log = EventLog()
    log.append_slates(*batch([1.0, 2.0], k=2, abandoned=[0]), versions={})
    table = log.table()
    np.testing.assert_array_equal(
        table.kind, [Kind.SKIP, Kind.SKIP, Kind.ABANDON, Kind.SKIP, Kind.SKIP]
    )
    assert table.item[2] == -1 and table.scope[2] == Scope.SESSION and table.session[2] == 100


def test_visible_is_the_strict_time_prefix_and_read_only():
    log = EventLog(capacity=1)
    for start in range(5):
        log.append_slates(*batch([float(start)]), versions={})
    visible = log.visible(3.0)
    assert len(visible) == 9 and visible.time.max() < 3.0
    with pytest.raises(ValueError):
        visible.time[0] = 99.0


def test_out_of_order_append_is_a_bug_caught_early():
    log = EventLog()
    log.append_slates(*batch([5.0]), versions={})
    with pytest.raises(ValueError, match="time order"):
        log.append_slates(*batch([4.0]), versions={})
