"""Estimating a run's peak memory before it starts, to refuse what cannot fit.

The estimate is deliberately simple and conservative: the event log dominates (one row per
impression: 32 bytes of core columns plus 4 per layer, kept while the log grows by doubling and
again while metrics index it), then per-user state (preferences, feature stores, embeddings,
profiles), then the catalogue. A test checks it against the measured peak of real runs.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
from dataclasses import dataclass

from sim.scenario.spec import Scenario
from sim.serving.eventlog import CHUNK_ROWS

__all__ = [
    "MemoryEstimate",
    "estimate_run",
    "available_bytes",
    "expected_requests",
    "event_log_on_disk",
    "return_freed_arrays",
    "PeakMemory",
]

#: Core event-log bytes per row (time 8, user 4, item 4, position 2, kind 1, scope 1, dwell 4,
#: session 8), and per layer version column.
ROW_BYTES = 32
VERSION_BYTES = 4
#: Copies of an in-memory log alive at its peak: the growing log's old and new buffers, and the
#: written table.
LOG_COPIES = 3.0
#: Working bytes per row of the metrics' largest pass (the residual-exposure index of a shard of
#: users: keys, times, sort order and codes; measured ~70-90). The metrics and the run's summary
#: read at most ``CHUNK_ROWS`` rows at a time, so this does not grow with a longer log.
METRIC_BYTES_PER_ROW = 100
#: Bytes per event in the retrain's window that its input holds at its peak (the sparse
#: interaction matrix of one entry per event and chunk; measured ~8 over weeks of 100,000 and a
#: million users). Without a ``window`` the last retrain reads everything logged.
RETRAIN_BYTES_PER_ROW = 10
#: ``output.event_log: auto`` keeps a log expected to be bigger than this on disk.
DISK_LOG_ABOVE_BYTES = 2**30
#: Anonymous memory of Python, numpy, torch, numba, FAISS and the simulator's code before any
#: data, with the allocator's and thread pools' slack (a run of 100 users peaks at ~340 MiB).
#: Shared libraries' pages are not counted: they are file-backed, shared between concurrent runs
#: and reclaimable, and how many are resident varies by machine (libtorch alone maps 434 MB).
BASELINE_BYTES = 512 * 2**20
DAY = 86400.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one run, and its parts."""

    requests: float
    #: the event log if it is kept in memory, the retrain's input and the metrics' working arrays
    event_log: float
    users: float
    items: float

    @property
    def total(self) -> float:
        return BASELINE_BYTES + self.event_log + self.users + self.items


def expected_requests(scenario: Scenario) -> float:
    """Expected requests over the whole run (warm-up included)."""
    users = scenario.world.users
    activity = users.sessions_per_day
    per_user = activity.median * (
        math.exp(activity.sigma**2 / 2) if activity.distribution == "lognormal" else 1.0
    )
    spikes = sum(
        (event.multiplier - 1.0) * event.duration
        for event in scenario.interventions
        if event.kind == "traffic_spike"
    )
    seconds = scenario.end + spikes
    return users.count * per_user * users.session.requests_mean * seconds / DAY


def _event_log_rows(scenario: Scenario) -> float:
    """Expected rows of the run's event log: a slate's impressions, plus abandon rows."""
    return expected_requests(scenario) * (scenario.stack.slate_size + 0.2)


def _event_log_bytes(scenario: Scenario) -> float:
    """Expected size of one copy of the run's event log."""
    row = ROW_BYTES + VERSION_BYTES * len(scenario.stack.layers.active())
    if scenario.logging is not None and scenario.logging.active:
        row += 8  # each row's arrival time (float64)
    return _event_log_rows(scenario) * row


def event_log_on_disk(scenario: Scenario) -> bool:
    """Whether the run keeps its event log in temporary files rather than process memory."""
    setting = scenario.output.event_log
    if setting == "auto":
        return _event_log_bytes(scenario) > DISK_LOG_ABOVE_BYTES
    return setting == "disk"


def estimate_run(scenario: Scenario) -> MemoryEstimate:
    """Peak memory of one run of ``scenario``."""
    requests = expected_requests(scenario)
    layers = scenario.stack.layers.active()
    rows = _event_log_rows(scenario)
    event_log = min(rows, CHUNK_ROWS) * METRIC_BYTES_PER_ROW
    if not event_log_on_disk(scenario):
        event_log += _event_log_bytes(scenario) * LOG_COPIES
    retrain = layers.get("retrain")
    if retrain is not None:  # its input: the events in its window, or everything logged
        window = getattr(retrain, "window", None) or scenario.end
        event_log += rows * min(1.0, window / scenario.end) * RETRAIN_BYTES_PER_ROW
    world = scenario.world
    n, dim, topics = world.users.count, world.catalog.dim, world.catalog.topics
    per_user = dim * 4 * 2 + topics * 4 + 64  # preferences (+ drift copy), mixture, bookkeeping
    if "realtime_features" in layers or "online_learning" in layers:
        per_user += topics * 4 * 4
    if "nearline_embeddings" in layers or "retrain" in layers:
        per_user += (dim + 1) * 4 * 4 + dim * 8  # model and near-line snapshots, fold-in sums
    if "profile_memory" in layers:
        spec = layers["profile_memory"]
        per_user += (topics + 2 * getattr(spec, "slots", 16)) * 4 * 3
    items = (world.catalog.items + world.catalog.new_items_per_day * scenario.end / DAY) * (
        dim * 4 * 3 + 64
    )
    return MemoryEstimate(requests=requests, event_log=event_log, users=n * per_user, items=items)


def available_bytes() -> float | None:
    """Memory available to new processes now (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


#: ``mallopt`` parameter number of glibc's mmap threshold.
_M_MMAP_THRESHOLD = -3


def return_freed_arrays(threshold: int = 1 << 20) -> None:
    """Have glibc map every allocation of ``threshold`` bytes or more on its own (Linux only).

    glibc raises its mmap threshold each time a big block is freed, and then serves later big
    arrays from the heap, which it rarely gives back: a run's temporary arrays (a retrain's window,
    a metric's index) left memory growing with simulated time although nothing was kept. Measured
    on 20,000 users, hourly retrain on a one-day window: resident memory grew 324 -> 431 MiB from
    day 1 to day 7 by default, 290 -> 303 MiB with this (same wall time).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        pass


class PeakMemory:
    """The peak of this process's anonymous resident memory while the block runs (Linux).

    Anonymous memory is what the process itself holds; file-backed pages (an on-disk event log,
    libraries) belong to the operating system's cache and are dropped under pressure. Sampled
    every ``interval`` seconds by a thread, so a peak shorter than that can be missed.

    >>> with PeakMemory() as peak:
    ...     block = bytearray(50 * 2**20)
    >>> peak.anon_bytes is None or peak.anon_bytes > 50 * 2**20
    True
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.anon_bytes: int | None = None
        self.file_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        if _resident() is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._take()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def _take(self) -> None:
        now = _resident()
        if now is not None:
            self.anon_bytes = max(self.anon_bytes or 0, now[0])
            self.file_bytes = max(self.file_bytes or 0, now[1])


def _resident() -> tuple[int, int] | None:
    """(anonymous, file-backed) resident bytes of this process, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith("Rss"))
        return int(fields["RssAnon"].split()[0]) * 1024, int(fields["RssFile"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
