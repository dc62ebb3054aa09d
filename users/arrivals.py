"""Session and request arrivals, drawn vectorized in blocks of simulated time.

Sessions start as a non-homogeneous Poisson process per user (rate x diurnal profile, drawn by
thinning); each session has a geometric number of requests separated by browse gaps of at least
``gap_min``. A user never has two sessions at once: a session that would start before the user's
previous planned session (plus ``gap_min``) has ended is dropped, so any two requests of one user
are at least ``gap_min`` apart, the bound the engine's serving window relies on.

Each request carries its own pre-drawn response randomness, so what a user does with the item at
slot p of request r is driven by the same numbers in every variant (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.scenario.spec import TrafficSpike
from sim.scenario.spec import Users as UsersSpec

__all__ = ["Arrivals", "RequestBlock", "SLOT_UNIFORMS", "SLOT_NORMALS", "REQUEST_UNIFORMS"]

DAY = 86400.0
#: Per slot: examine, click, explicit, explicit-kind.
SLOT_UNIFORMS = 4
#: Per slot: utility noise, dwell noise.
SLOT_NORMALS = 2
#: Per request: abandon, churn.
REQUEST_UNIFORMS = 2
#: Target number of requests drawn per block (bounds memory; large enough to amortize).
REQUESTS_PER_BLOCK = 100_000


@dataclass
class RequestBlock:
    """Requests in time order with their session bookkeeping and response draws."""

    time: np.ndarray  # (n,) float64
    user: np.ndarray  # (n,) int32
    session: np.ndarray  # (n,) int64
    first: np.ndarray  # (n,) bool, first request of its session
    last: np.ndarray  # (n,) bool, last planned request of its session
    slot_uniform: np.ndarray  # (n, k, SLOT_UNIFORMS) float32
    slot_normal: np.ndarray  # (n, k, SLOT_NORMALS) float32
    request_uniform: np.ndarray  # (n, REQUEST_UNIFORMS) float32

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def take(self, index: np.ndarray | slice) -> RequestBlock:
        return RequestBlock(**{name: getattr(self, name)[index] for name in _FIELDS})


_FIELDS = tuple(RequestBlock.__dataclass_fields__)


class Arrivals:
    """Due requests on demand: :meth:`take` returns those before a time, drawing blocks lazily."""

    def __init__(
        self,
        spec: UsersSpec,
        sessions_per_day: np.ndarray,
        slate_size: int,
        end: float,
        session_rng: np.random.Generator,
        response_rng: np.random.Generator,
        spikes: list[TrafficSpike] | tuple[TrafficSpike, ...] = (),
    ):
        self.spec = spec
        self.spikes = tuple(
            (spike.at, spike.at + spike.duration, spike.multiplier) for spike in spikes
        )
        self.slate_size = slate_size
        self.end = end
        self._rate = sessions_per_day / DAY  # sessions per second, before the diurnal profile
        self._session_rng = session_rng
        self._response_rng = response_rng
        self._planned_end = np.full(self._rate.shape[0], -np.inf)
        self._next_session = 0
        peak = (1.0 + spec.diurnal.amplitude) * max(float(self._rate.sum()), 1e-12)
        self.block_length = float(
            np.clip(REQUESTS_PER_BLOCK / (peak * spec.session.requests_mean), 60.0, DAY)
        )
        self._drawn_until = 0.0
        self._pending = self._empty()
        self._cursor = 0

    def diurnal(self, times: np.ndarray) -> np.ndarray:
        """Rate multiplier at ``times`` (seconds since midnight of day 0); averages 1 over a day."""
        profile = self.spec.diurnal
        hours = times / 3600.0
        return 1.0 + profile.amplitude * np.cos(2 * np.pi * (hours - profile.peak_hour) / 24.0)

    def multiplier(self, times: np.ndarray) -> np.ndarray:
        """Traffic-spike multiplier of the session rate at ``times`` (1 outside spikes)."""
        factor = np.ones_like(times)
        for start, stop, multiplier in self.spikes:
            factor[(times >= start) & (times < stop)] *= multiplier
        return factor

    def _peak_multiplier(self, start: float, stop: float) -> float:
        return float(
            np.prod([m for begin, end, m in self.spikes if begin < stop and end > start] or [1.0])
        )

    def next_time(self) -> float:
        """Time of the next pending request (``inf`` when none remains before the end)."""
        while self._cursor >= len(self._pending) and self._drawn_until < self.end:
            self._draw_block()
        if self._cursor < len(self._pending):
            return float(self._pending.time[self._cursor])
        return np.inf

    def take(self, until: float) -> RequestBlock:
        """Remove and return every request with ``time < until``."""
        while self._drawn_until < min(until, self.end):
            self._draw_block()
        stop = int(np.searchsorted(self._pending.time, until, side="left"))
        stop = max(stop, self._cursor)
        block = self._pending.take(slice(self._cursor, stop))
        self._cursor = stop
        return block

    # --- drawing ---------------------------------------------------------------------------

    def _empty(self) -> RequestBlock:
        k = self.slate_size
        return RequestBlock(
            time=np.empty(0),
            user=np.empty(0, np.int32),
            session=np.empty(0, np.int64),
            first=np.empty(0, bool),
            last=np.empty(0, bool),
            slot_uniform=np.empty((0, k, SLOT_UNIFORMS), np.float32),
            slot_normal=np.empty((0, k, SLOT_NORMALS), np.float32),
            request_uniform=np.empty((0, REQUEST_UNIFORMS), np.float32),
        )

    def _draw_block(self) -> None:
        start = self._drawn_until
        stop = min(start + self.block_length, self.end)
        self._drawn_until = stop
        new = self._draw_sessions(start, stop)
        rest = self._pending.take(slice(self._cursor, None))
        order = np.argsort(np.concatenate([rest.time, new.time]), kind="stable")
        # Field by field: one field's concatenation at a time, not a whole merged copy (tens of
        # MB a block at a million users).
        self._pending = RequestBlock(
            **{
                name: np.concatenate([getattr(rest, name), getattr(new, name)])[order]
                for name in _FIELDS
            }
        )
        self._cursor = 0

    def _draw_sessions(self, start: float, stop: float) -> RequestBlock:
        rng = self._session_rng
        session_spec = self.spec.session
        amplitude = self.spec.diurnal.amplitude
        # Thinning: candidates at the peak rate, kept with probability rate(t) / peak.
        peak = (1.0 + amplitude) * self._peak_multiplier(start, stop)
        counts = rng.poisson(self._rate * peak * (stop - start))
        users = np.repeat(np.arange(counts.shape[0], dtype=np.int32), counts)
        starts = rng.uniform(start, stop, users.shape[0])
        keep = rng.random(users.shape[0]) * peak < self.diurnal(starts) * self.multiplier(starts)
        users, starts = users[keep], starts[keep]
        order = np.lexsort((starts, users))
        users, starts = users[order], starts[order]

        n_requests = rng.geometric(1.0 / session_spec.requests_mean, users.shape[0])
        total = int(n_requests.sum())
        gaps = session_spec.gap_min + rng.exponential(session_spec.gap_mean or 0.0, total)
        offsets = np.cumsum(n_requests) - n_requests  # index of each session's first request
        gaps[offsets] = 0.0
        elapsed = np.cumsum(gaps)
        elapsed -= np.repeat(elapsed[offsets], n_requests)  # time since the session's start
        planned_end = starts + elapsed[offsets + n_requests - 1]

        keep = self._no_overlap(users, starts, planned_end)
        np.maximum.at(self._planned_end, users[keep], planned_end[keep])
        request_keep = np.repeat(keep, n_requests)
        session_ids = self._next_session + np.cumsum(keep) - 1
        self._next_session += int(keep.sum())

        n_kept = int(request_keep.sum())
        within = np.arange(total) - np.repeat(offsets, n_requests)
        times = (np.repeat(starts, n_requests) + elapsed)[request_keep]
        k = self.slate_size
        response = self._response_rng
        return RequestBlock(
            time=times,
            user=np.repeat(users, n_requests)[request_keep],
            session=np.repeat(session_ids, n_requests)[request_keep].astype(np.int64),
            first=(within == 0)[request_keep],
            last=(within == np.repeat(n_requests - 1, n_requests))[request_keep],
            slot_uniform=response.random((n_kept, k, SLOT_UNIFORMS), dtype=np.float32),
            slot_normal=response.standard_normal((n_kept, k, SLOT_NORMALS), dtype=np.float32),
            request_uniform=response.random((n_kept, REQUEST_UNIFORMS), dtype=np.float32),
        )

    def _no_overlap(self, users: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Sessions (sorted by user, start) that start after every earlier one of the user ended.

        Compared against every earlier candidate, kept or not, which is conservative: a kept
        session never overlaps another kept one.
        """
        if users.shape[0] == 0:
            return np.zeros(0, bool)
        gap = self.spec.session.gap_min
        # Running max of planned ends within each user: shift users apart so one accumulate works.
        span = max(self.end, float(ends.max())) + 2 * gap + 1.0
        shifted = ends + users.astype(np.float64) * span
        running = np.maximum.accumulate(shifted) - users.astype(np.float64) * span
        previous = np.empty_like(running)
        previous[0] = -np.inf
        previous[1:] = running[:-1]
        new_user = np.empty(users.shape[0], bool)
        new_user[0] = True
        new_user[1:] = users[1:] != users[:-1]
        previous[new_user] = -np.inf
        previous = np.maximum(previous, self._planned_end[users])  # sessions of earlier blocks
        return starts >= previous + gap
