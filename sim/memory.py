"""Estimating a run's peak memory before it starts, to refuse what cannot fit.

The estimate is deliberately simple and conservative: the event log dominates (one row per
impression: 32 bytes of core columns plus 4 per layer, kept while the log grows by doubling and
again while metrics index it), then per-user state (preferences, feature stores, embeddings,
profiles), then the catalogue. A test checks it against the measured peak of real runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from sim.spec import Scenario

__all__ = ["MemoryEstimate", "estimate_run", "available_bytes", "expected_requests"]

#: Core event-log bytes per row (time 8, user 4, item 4, position 2, kind 1, scope 1, dwell 4,
#: session 8), and per layer version column.
ROW_BYTES = 32
VERSION_BYTES = 4
#: Copies of the log alive at the peak: the growing log's old and new buffers, the metrics'
#: sort keys and indexes (int64 per row, a few of them), the written table.
LOG_COPIES = 6.0
#: Python, numpy, torch and the simulator's code before any data (measured, rounded up).
BASELINE_BYTES = 700 * 2**20
DAY = 86400.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one run, and its parts."""

    requests: float
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


def estimate_run(scenario: Scenario) -> MemoryEstimate:
    """Peak memory of one run of ``scenario``."""
    requests = expected_requests(scenario)
    layers = scenario.stack.layers.active()
    rows = requests * (scenario.stack.slate_size + 0.2)  # plus abandon rows
    event_log = rows * (ROW_BYTES + VERSION_BYTES * len(layers)) * LOG_COPIES
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
