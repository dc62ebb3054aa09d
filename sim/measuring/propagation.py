"""Exact propagation accounting from a layer's version history.

An event at time ``t`` is covered by every version whose event-time horizon is later than ``t``;
its delay is the earliest ``live_at`` among them minus ``t``. Nothing is sampled or estimated.
This is the bound for a layer whose every version reflects every event and changes everyone;
:func:`sim.measuring.metrics.layer_delays` counts only versions that reflected the event and
changed what its user is served.

>>> absorption_delays(np.array([5.0, 15.0, 40.0]), np.array([10.0, 30.0]), np.array([12.0, 35.0]))
array([ 7., 20., inf])
"""

from __future__ import annotations

import numpy as np

__all__ = ["absorption_delays"]


def absorption_delays(times: np.ndarray, horizons: np.ndarray, live_at: np.ndarray) -> np.ndarray:
    """Delay from each event to the earliest live time of any version covering it (``inf`` if
    none did). Versions may be given in any order (canary and full-rollout rows mixed)."""
    if horizons.shape[0] == 0:
        return np.full(times.shape[0], np.inf)
    order = np.argsort(horizons, kind="stable")
    horizons = horizons[order]
    # every version with a horizon above t covers t: the earliest of their live times counts
    earliest = np.minimum.accumulate(live_at[order][::-1])[::-1]
    first = np.searchsorted(horizons, times, side="right")
    covered = first < horizons.shape[0]
    delays = np.full(times.shape[0], np.inf)
    delays[covered] = earliest[first[covered]] - times[covered]
    return delays
