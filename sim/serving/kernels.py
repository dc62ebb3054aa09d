"""Compiled loops for the layers' per-event bookkeeping (numba, cached on disk like
:mod:`policies.kernels`).

A real-time feature store absorbs every serving window's few thousand events. In numpy that is a
dozen whole-array passes (unique, masks, gathers, ``ufunc.at``), each paying its call; one loop
over the events does the same arithmetic in event order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["absorb_decayed_counts"]


@njit(cache=True, nogil=True)
def absorb_decayed_counts(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    negative: np.ndarray,
    positive: np.ndarray,
    topic_of: np.ndarray,
    reference: float,
    user_negative: np.ndarray,
    user_positive: np.ndarray,
    user_time: np.ndarray,
    half_life: float,
    item_negative: np.ndarray,
    item_shown: np.ndarray,
    item_time: np.ndarray,
    item_half_life: float,
) -> None:
    """Decay, then count, events on items into per-user-topic and per-item decayed counts.

    Every user with a click or negative and every item shown is first decayed from its last
    update to ``reference`` (once) and stamped with it; then each event adds its own weight,
    ``2 ** -((reference - time) / half_life)``, in event order. User counts are float32 (their
    factors rounded to float32 first), item counts float64.
    """
    for i in range(users.shape[0]):
        if negative[i] or positive[i]:
            user = users[i]
            if user_time[user] != reference:
                factor = np.float32(np.exp2(-max(reference - user_time[user], 0.0) / half_life))
                user_negative[user, :] *= factor
                user_positive[user, :] *= factor
                user_time[user] = reference
        item = items[i]
        if item_time[item] != reference:
            factor64 = np.exp2(-max(reference - item_time[item], 0.0) / item_half_life)
            item_negative[item] *= factor64
            item_shown[item] *= factor64
            item_time[item] = reference
    for i in range(users.shape[0]):
        elapsed = max(reference - times[i], 0.0)
        if negative[i] or positive[i]:
            weight = np.float32(np.exp2(-elapsed / half_life))
            topic = topic_of[items[i]]
            if negative[i]:
                user_negative[users[i], topic] += weight
            else:
                user_positive[users[i], topic] += weight
        item_weight = np.exp2(-elapsed / item_half_life)
        item_shown[items[i]] += item_weight
        if negative[i]:
            item_negative[items[i]] += item_weight
