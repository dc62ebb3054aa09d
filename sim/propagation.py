"""Exact propagation accounting from a layer's version history.

An event at time ``t`` is absorbed by the first version whose event-time horizon is later than
``t``; its absorption delay is that version's ``live_at - t``. Nothing is sampled or estimated.

>>> absorption_delays(np.array([5.0, 15.0, 40.0]), np.array([10.0, 30.0]), np.array([12.0, 35.0]))
array([ 7., 20., inf])
"""

from __future__ import annotations

import numpy as np

__all__ = ["absorption_delays"]


def absorption_delays(times: np.ndarray, horizons: np.ndarray, live_at: np.ndarray) -> np.ndarray:
    """Delay from each event to the first live version covering it (``inf`` if none did).

    ``horizons`` must be increasing, and so must ``live_at`` (versions go live in order).
    """
    if horizons.shape[0] == 0:
        return np.full(times.shape[0], np.inf)
    first = np.searchsorted(horizons, times, side="right")
    covered = first < horizons.shape[0]
    delays = np.full(times.shape[0], np.inf)
    delays[covered] = live_at[first[covered]] - times[covered]
    return delays
