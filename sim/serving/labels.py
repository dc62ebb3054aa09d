"""When each logged event reaches the logs the layers read: label delays and losses.

The scenario's ``logging`` section gives, per event kind, a label delay (a constant, a
distribution, or the end of the user's session) and a share of events that never arrive. Each
event's arrival time is drawn once, when it is logged, from the run's ``label_delays`` stream, in
log order; a lost event arrives never (``inf``); an event waiting for its session to end has no
arrival time yet (``nan``) until the session's last request or abandon is logged.

>>> from sim.scenario.spec import Logging
>>> pipeline = LabelPipeline(Logging(delay={"click": "2s"}, loss={"skip": 1.0}))
>>> kinds = np.array([Kind.CLICK, Kind.SKIP, Kind.IMPRESSION], np.int8)
>>> pipeline.arrivals(np.array([1.0, 1.0, 1.0]), kinds, np.random.default_rng(0))
array([ 3., inf,  1.])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.domain import Kind
from sim.scenario.spec import EmpiricalDelay, ExponentialDelay, Logging, LognormalDelay

__all__ = ["LabelPipeline", "delay_cdf", "PENDING", "LOST"]

#: Arrival of an event that waits for its session to end.
PENDING = np.nan
#: Arrival of an event that is never logged.
LOST = np.inf


class LabelPipeline:
    """Draws each event's arrival time from its kind's label delay and loss."""

    def __init__(self, spec: Logging):
        self.spec = spec
        delays: dict[str, Any] = {str(kind): delay for kind, delay in spec.delay.items()}
        losses = {str(kind): share for kind, share in spec.loss.items()}
        #: Per kind code: its delay spec (None: at once).
        self.delays = [delays.get(kind.name.lower()) for kind in Kind]
        self.loss = np.array([losses.get(kind.name.lower(), 0.0) for kind in Kind])
        drawn = [d for d in self.delays if d is not None and d != "session_end"]
        # Which draws every batch takes, one per row whatever its kind, so that the stream's
        # position depends on the rows logged and not on how many were of each kind.
        self._uniform = any(isinstance(d, (ExponentialDelay, EmpiricalDelay)) for d in drawn)
        self._normal = any(isinstance(d, LognormalDelay) for d in drawn)

    def arrivals(
        self, times: np.ndarray, kinds: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Arrival time of each event (``inf``: lost; ``nan``: when its session ends)."""
        n = times.shape[0]
        uniform = rng.random((n,)) if self._uniform else None
        normal = rng.standard_normal((n,)) if self._normal else None
        lost = rng.random(n) < self.loss[kinds] if self.loss.any() else None
        arrival = times.astype(np.float64, copy=True)
        for code, delay in enumerate(self.delays):
            if delay is None:
                continue
            rows = np.flatnonzero(kinds == code)
            if not rows.shape[0]:
                continue
            if delay == "session_end":
                arrival[rows] = PENDING
            else:
                draws = normal if isinstance(delay, LognormalDelay) else uniform
                arrival[rows] += delays_from(delay, None if draws is None else draws[rows])
        if lost is not None:
            arrival[lost] = LOST
        return arrival


def delays_from(delay: object, draws: np.ndarray | None) -> np.ndarray:
    """Label delays in seconds from one kind's delay spec (not ``session_end``), one per draw:
    uniform on [0, 1) for the exponential and empirical, standard normal for the lognormal;
    a constant needs none (``draws`` None) but is given one per row all the same."""
    if isinstance(delay, ExponentialDelay):
        assert draws is not None
        return -delay.mean * np.log1p(-draws)
    if isinstance(delay, LognormalDelay):
        assert draws is not None
        return delay.median * np.exp(delay.sigma * draws)
    if isinstance(delay, EmpiricalDelay):
        assert draws is not None
        probabilities, delays = _knots(delay)
        return np.interp(draws, probabilities, delays)
    return np.full(() if draws is None else draws.shape, float(delay))  # type: ignore[arg-type]


def draw_delays(delay: object, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` label delays in seconds from one kind's delay spec (not ``session_end``)."""
    if isinstance(delay, LognormalDelay):
        return delays_from(delay, rng.standard_normal(n))
    return delays_from(delay, rng.random(n))


def delay_cdf(delay: object, seconds: np.ndarray) -> np.ndarray:
    """P(label delay <= ``seconds``) under one kind's delay spec (not ``session_end``)."""
    seconds = np.asarray(seconds, np.float64)
    if isinstance(delay, ExponentialDelay):
        return np.where(seconds < 0, 0.0, -np.expm1(-np.maximum(seconds, 0.0) / delay.mean))
    if isinstance(delay, LognormalDelay):
        with np.errstate(divide="ignore"):
            z = np.log(np.maximum(seconds, 0.0) / delay.median) / (delay.sigma * math.sqrt(2.0))
        normal = 0.5 * (1.0 + _erf(z).astype(np.float64))
        return np.where(seconds <= 0, 0.0, normal)
    if isinstance(delay, EmpiricalDelay):
        probabilities, delays = _knots(delay)
        # the inverse of the piecewise-linear quantile function (flat steps: the highest)
        return np.interp(seconds, delays, probabilities, left=0.0, right=1.0)
    return (seconds >= float(delay)).astype(np.float64)  # type: ignore[arg-type]


_erf = np.frompyfunc(math.erf, 1, 1)


def _knots(delay: EmpiricalDelay) -> tuple[np.ndarray, np.ndarray]:
    points = sorted(delay.quantiles.items())
    probabilities = np.array([0.0, *(p for p, _ in points)])
    delays = np.array([0.0, *(d for _, d in points)])
    return probabilities, delays
