from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sim.domain import Kind, Requests, Responses, Scope
from sim.serving.eventlog import EventLog


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


@pytest.fixture(params=[False, True], ids=["memory", "disk"])
def on_disk(request):
    return request.param


def test_rows_per_impression_with_versions(on_disk, tmp_path):
    log = EventLog(layers=("retrain",), capacity=2, on_disk=on_disk, directory=tmp_path)
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
    assert table.position[2] == -1  # outside the slate


def test_a_batch_keeps_its_requests_order_with_each_abandon_after_its_own_slate():
    log = EventLog()
    log.append_slates(*batch([float(t) for t in range(10)], k=3, abandoned=[0, 4, 9]), versions={})
    table = log.table()
    users = [u for u in range(10) for _ in range(4 if u in (0, 4, 9) else 3)]
    positions = [p for u in range(10) for p in ([0, 1, 2, -1] if u in (0, 4, 9) else [0, 1, 2])]
    assert table.user.tolist() == users and table.position.tolist() == positions


def test_visible_is_the_strict_time_prefix_and_read_only(on_disk, tmp_path):
    log = EventLog(capacity=1, on_disk=on_disk, directory=tmp_path)
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


def test_disk_log_keeps_earlier_views_across_growth_and_leaves_no_file(tmp_path):
    log = EventLog(layers=("retrain",), capacity=1, on_disk=True, directory=tmp_path)
    log.append_slates(*batch([1.0]), versions={"retrain": 1})
    early = log.table()
    for start in range(2, 40):  # grows the mapped files several times
        log.append_slates(*batch([float(start)]), versions={"retrain": start})
    np.testing.assert_array_equal(early.time, [1.0, 1.0, 1.0])
    table = log.table()
    assert len(table) == 117 and type(table.time) is np.ndarray
    np.testing.assert_array_equal(table.versions["retrain"][-3:], 39)
    assert list(tmp_path.iterdir()) == []  # unlinked at creation: nothing to clean up


def test_disk_and_memory_logs_hold_the_same_rows(tmp_path):
    tables = []
    for on_disk in (False, True):
        log = EventLog(layers=("bandit",), capacity=2, on_disk=on_disk, directory=tmp_path)
        for start in range(10):
            log.append_slates(*batch([start, start + 0.5], abandoned=[1]), versions={"bandit": 2})
        tables.append(log.table())
    for name in ("time", "user", "item", "position", "kind", "scope", "dwell", "session"):
        np.testing.assert_array_equal(getattr(tables[0], name), getattr(tables[1], name))
        assert getattr(tables[0], name).dtype == getattr(tables[1], name).dtype, name
    assert tables[1].versions["bandit"].dtype == np.int32


def test_a_control_row_is_kept_until_it_is_deleted_then_hidden_once_past_the_deletion():
    log = EventLog(layers=("retrain",))
    log.append_slates(*batch([1.0]), versions={"retrain": 0})
    one = np.array([0])
    log.append_controls(2.0, one, one + 5, Kind.DISMISS, Scope.ITEM, one + 100, {"retrain": one})
    assert len(log.visible(2.5)) == 4  # 3 impressions and the control, never deleted
    log.delete(3.0, np.array([3]))
    assert len(log.visible(3.0)) == 4  # the deletion at 3.0 has not reached a read at 3.0
    hidden = log.visible(3.5)
    assert len(hidden) == 3 and (hidden.position >= 0).all()


def test_a_window_reads_from_since_to_before_without_the_deleted_rows(on_disk, tmp_path):
    log = EventLog(capacity=2, on_disk=on_disk, directory=tmp_path)
    for start in range(5):
        log.append_slates(*batch([float(start)], k=2), versions={})
    window = log.visible(3.0, since=1.0)
    assert window.time.tolist() == [1.0, 1.0, 2.0, 2.0] and window.item.tolist() == [0, 1, 0, 1]
    log.delete(2.5, np.array([2, 5]))  # one row at time 1, one at time 2
    window = log.visible(3.0, since=1.0)
    assert window.time.tolist() == [1.0, 2.0] and window.position.tolist() == [1, 0]


def test_a_log_is_in_memory_unless_asked_and_a_full_disk_names_its_directory(tmp_path, monkeypatch):
    import errno
    import tempfile

    import sim.serving.eventlog
    from sim.errors import RecloopError

    assert EventLog().on_disk is False and EventLog(on_disk=True).on_disk is True

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sim.serving.eventlog.os, "posix_fallocate", full)
    for directory, named in [(tmp_path, str(tmp_path)), (None, tempfile.gettempdir())]:
        with pytest.raises(RecloopError, match="No space left on device") as error:
            EventLog(on_disk=True, directory=directory)
        assert str(error.value) == (
            "output.event_log: cannot reserve 0.5 MiB for the event log on disk in "  # 2**16 times
            f"{named} (No space left on device); free some space, or keep the log in memory "
            "(output.event_log: memory)"
        )


def test_a_log_on_disk_reserves_each_columns_bytes_from_the_start_of_its_file(monkeypatch):
    import sim.serving.eventlog

    reserved = []
    real = sim.serving.eventlog.os.posix_fallocate

    def record(fd, offset, length):
        reserved.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(sim.serving.eventlog.os, "posix_fallocate", record)
    EventLog(layers=("retrain",), capacity=1000, on_disk=True)
    # time, user, item, position, kind, scope, dwell, session, the retrain version, deleted_at
    widths = [8, 4, 4, 2, 1, 1, 4, 8, 4, 8]
    assert reserved == [(0, 1000 * width) for width in widths]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_log_on_disk_keeps_its_columns_in_the_directory_given(tmp_path):
    log = EventLog(on_disk=True, directory=tmp_path)
    for file in log._files.values():
        assert os.readlink(f"/proc/self/fd/{file.fileno()}").startswith(str(tmp_path))


def test_row_chunks_cut_at_the_last_bin_edge_within_a_chunk_or_else_the_next(monkeypatch):
    import sim.serving.eventlog

    monkeypatch.setattr(sim.serving.eventlog, "CHUNK_ROWS", 4)
    times = np.arange(8.0)
    cut = sim.serving.eventlog.row_chunks(times, np.array([0.0, 2.0, 4.0, 6.0]))
    assert [(c.start, c.stop) for c in cut] == [(0, 4), (4, 8)]  # the edge at 4, not at 2
    monkeypatch.setattr(sim.serving.eventlog, "CHUNK_ROWS", 3)
    # no edge after the first
    cut = sim.serving.eventlog.row_chunks(np.arange(10.0), np.array([0.0]))
    assert [(c.start, c.stop) for c in cut if c.stop > c.start] == [(0, 10)]  # one bin, whole


def test_versions_given_per_request_follow_each_request_and_its_abandon():
    log = EventLog(layers=("retrain",))
    log.append_slates(*batch([1.0, 2.0], k=2, abandoned=[0]), versions={"retrain": [3, 4]})
    table = log.table()
    assert table.position.tolist() == [0, 1, -1, 0, 1]
    assert table.versions["retrain"].tolist() == [3, 3, 3, 4, 4]  # canary and full-rollout cohorts


def test_an_event_earlier_than_the_last_one_logged_is_refused():
    log = EventLog()
    log.append_slates(*batch([1.0], k=1), versions={})
    log.append_slates(*batch([2.0], k=1), versions={})
    with pytest.raises(ValueError, match="^events must be appended in time order$"):
        log.append_slates(*batch([1.5], k=1), versions={})
