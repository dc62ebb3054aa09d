"""How users respond to a slate: examination, utility, clicks, dwell and explicit negatives.

Pure functions of the ground truth and the request's pre-drawn randomness; the session-level
consequences (abandonment, churn) are kept by :class:`users.world.SimulatedWorld`.
"""

from __future__ import annotations

import numpy as np

from sim.domain import Kind, Scope
from sim.spec import Behavior

__all__ = ["utility", "respond_to_slates", "EXPLICIT_ORDER"]

#: Explicit negative kinds in the order of ``Behavior.explicit_kinds``, with their scopes.
EXPLICIT_ORDER = (
    ("dismiss", Kind.DISMISS, Scope.ITEM),
    ("not_interested", Kind.NOT_INTERESTED, Scope.TOPIC),
    ("thumbs_down", Kind.THUMBS_DOWN, Scope.ITEM),
    ("block_creator", Kind.BLOCK_CREATOR, Scope.CREATOR),
)
_EXPLICIT_KIND = np.array([kind for _, kind, _ in EXPLICIT_ORDER], np.int8)
_EXPLICIT_SCOPE = np.array([scope for _, _, scope in EXPLICIT_ORDER], np.int8)


def utility(
    spec: Behavior,
    preferences: np.ndarray,
    vectors: np.ndarray,
    quality: np.ndarray,
    appeal: np.ndarray,
    noise: np.ndarray,
) -> np.ndarray:
    """True utility of each slate item for its user, shape ``(n, k)``.

    ``preferences`` is ``(n, d)``; ``vectors`` ``(n, k, d)``; the rest ``(n, k)``.
    """
    affinity = np.einsum("nd,nkd->nk", preferences, vectors)
    return (
        spec.affinity_weight * affinity
        + spec.quality_weight * quality
        + spec.popularity_weight * appeal
        + spec.noise_sd * noise
    )


def respond_to_slates(
    spec: Behavior, value: np.ndarray, slot_uniform: np.ndarray, dwell_noise: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kind, scope and dwell of every impression, given utilities ``value`` ``(n, k)``.

    ``slot_uniform[..., 0:4]`` drive examination, click, explicit action and its kind.
    """
    n, k = value.shape
    examined = slot_uniform[..., 0] < spec.examine_decay ** np.arange(k, dtype=np.float32)
    # The logistic function written with tanh, which cannot overflow.
    click_probability = 0.5 + 0.5 * np.tanh((value - spec.click_at) / (2 * spec.click_temperature))
    clicked = examined & (slot_uniform[..., 1] < click_probability)
    log_dwell = (
        np.log(spec.dwell_median) + spec.dwell_utility_slope * value + spec.dwell_sd * dwell_noise
    )
    dwell = np.where(clicked, np.exp(log_dwell), 0.0).astype(np.float32)
    short = clicked & (dwell < spec.short_dwell)
    explicit = (
        examined
        & ~clicked
        & (value < spec.explicit_at)
        & (slot_uniform[..., 2] < spec.explicit_prob)
    )
    weights = np.array([getattr(spec.explicit_kinds, name) for name, _, _ in EXPLICIT_ORDER])
    cumulative = np.cumsum(weights) / weights.sum()
    which = np.minimum(np.searchsorted(cumulative, slot_uniform[..., 3], side="right"), 3)

    kind = np.full((n, k), Kind.IMPRESSION, np.int8)
    kind[examined] = Kind.SKIP
    kind[clicked] = Kind.CLICK
    kind[short] = Kind.SHORT_DWELL
    kind[explicit] = _EXPLICIT_KIND[which[explicit]]
    scope = np.zeros((n, k), np.int8)
    scope[examined & ~clicked | short] = Scope.ITEM
    scope[explicit] = _EXPLICIT_SCOPE[which[explicit]]
    return kind, scope, dwell
