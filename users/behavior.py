"""How users respond to a slate: examination, utility, clicks, dwell and explicit negatives.

Pure functions of the ground truth and the request's pre-drawn randomness; the session-level
consequences (abandonment, churn) are kept by :class:`users.world.SimulatedWorld`.
"""

from __future__ import annotations

import numpy as np
import torch

from sim.domain import Kind, Scope
from sim.scenario.spec import Behavior

__all__ = [
    "utility",
    "freshness",
    "respond_to_slates",
    "click_probability",
    "expected_clicks",
    "impression_kinds",
    "EXPLICIT_ORDER",
]

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
    fresh: np.ndarray | float,
    noise: np.ndarray | float,
) -> np.ndarray:
    """True utility of each slate item for its user, shape ``(n, k)``.

    ``preferences`` is ``(n, d)``; ``vectors`` ``(n, k, d)``; the rest ``(n, k)``, with
    ``fresh`` from :func:`freshness` and ``noise`` standard normal (0 for the expected utility).
    """
    affinity = np.einsum("nd,nkd->nk", preferences, vectors)
    return (
        spec.affinity_weight * affinity
        + spec.quality_weight * quality
        + spec.popularity_weight * appeal
        + fresh
        + spec.noise_sd * noise
    )


def freshness(spec: Behavior, age: np.ndarray) -> np.ndarray | float:
    """The utility users add for an item's newness, given its age in seconds (inf: old)."""
    if spec.freshness_weight == 0:
        return 0.0
    return spec.freshness_weight * np.exp2(-age / spec.freshness_half_life)


#: Quadrature for expectations over the utility noise: Gauss-Hermite nodes over N(0, 1), and
#: Gauss-Legendre nodes over the logistic's quantiles (see :func:`click_probability`).
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()
_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(96)
_LOGISTIC_QUANTILES = np.log((1 + _LEGENDRE_NODES) / (1 - _LEGENDRE_NODES))  # logit((1 + x) / 2)
_LEGENDRE_WEIGHTS = _LEGENDRE_WEIGHTS / _LEGENDRE_WEIGHTS.sum()


def click_probability(spec: Behavior, value: np.ndarray) -> np.ndarray:
    """Chance that an examined item of noise-free utility ``value`` is clicked, averaged over
    the utility noise: ``E[sigmoid((value + noise_sd * Z - click_at) / click_temperature)]``.

    The integrand is smooth in the noise when the temperature is at least a fifth of the
    noise's sd, and is integrated over the normal (Gauss-Hermite, 96 nodes); otherwise the same
    chance is written as ``E[Phi((value - click_at - click_temperature * L) / noise_sd)]`` over
    a standard logistic ``L``, smooth in ``L``, and integrated over its quantiles
    (Gauss-Legendre, 96 nodes). Either way the error is below 1e-5 (checked against adaptive
    quadrature in the tests).
    """
    margin = np.asarray(value, np.float64) - spec.click_at
    sd, temperature = spec.noise_sd, spec.click_temperature
    if sd == 0:
        return 0.5 + 0.5 * np.tanh(margin / (2 * temperature))
    if temperature >= 0.2 * sd:
        noisy = margin[..., None] + sd * _HERMITE_NODES
        return (0.5 + 0.5 * np.tanh(noisy / (2 * temperature))) @ _HERMITE_WEIGHTS
    shifted = torch.from_numpy((margin[..., None] - temperature * _LOGISTIC_QUANTILES) / sd)
    return torch.special.ndtr(shifted).numpy() @ _LEGENDRE_WEIGHTS


def expected_clicks(spec: Behavior, value: np.ndarray) -> np.ndarray:
    """Expected clicks on each slate, ``(n,)``, given its items' noise-free utilities ``(n, k)``
    in slate order: the chance of examining each position times :func:`click_probability`."""
    k = value.shape[1]
    examined = spec.examine_decay ** np.arange(k, dtype=np.float64)
    return click_probability(spec, value) @ examined


def respond_to_slates(
    spec: Behavior,
    value: np.ndarray,
    slot_uniform: np.ndarray,
    dwell_noise: np.ndarray,
    hype: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kind, scope and dwell of every impression, given utilities ``value`` ``(n, k)`` of which
    ``hype`` is the popularity term (what drew a click but is not delivered by the item).

    ``slot_uniform[..., 0:4]`` drive examination, click, explicit action (before a click, or a
    letdown after one) and its kind.
    """
    k = value.shape[1]
    examined = slot_uniform[..., 0] < spec.examine_decay ** np.arange(k, dtype=np.float32)
    # The logistic function written with tanh, which cannot overflow.
    click_probability = 0.5 + 0.5 * np.tanh((value - spec.click_at) / (2 * spec.click_temperature))
    clicked = examined & (slot_uniform[..., 1] < click_probability)
    log_dwell = (
        np.log(spec.dwell_median) + spec.dwell_utility_slope * value + spec.dwell_sd * dwell_noise
    )
    dwell = np.where(clicked, np.exp(log_dwell), 0.0).astype(np.float32)
    explicit = (
        examined
        & ~clicked
        & (value < spec.explicit_at)
        & (slot_uniform[..., 2] < spec.explicit_prob)
    )
    kind, scope = impression_kinds(spec, examined, clicked, dwell, explicit, slot_uniform[..., 3])
    if spec.letdown_prob > 0:  # watched, then disliked: the dwell stays
        letdown = (
            clicked & (value - hype < spec.letdown_at) & (slot_uniform[..., 2] < spec.letdown_prob)
        )
        kind[letdown] = Kind.THUMBS_DOWN
        scope[letdown] = Scope.ITEM
    return kind, scope, dwell


def impression_kinds(
    spec: Behavior,
    examined: np.ndarray,
    clicked: np.ndarray,
    dwell: np.ndarray,
    explicit: np.ndarray,
    which_uniform: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Kind and scope of every impression ``(n, k)`` from what the user did with it: not
    examined (an impression), examined (a skip), clicked (a click, or a short dwell under
    ``spec.short_dwell``), or an explicit negative, whose kind ``which_uniform`` draws by
    ``spec.explicit_kinds``."""
    n, k = examined.shape
    short = clicked & (dwell < spec.short_dwell)
    weights = np.array([getattr(spec.explicit_kinds, name) for name, _, _ in EXPLICIT_ORDER])
    cumulative = np.cumsum(weights) / weights.sum()
    which = np.minimum(np.searchsorted(cumulative, which_uniform, side="right"), 3)

    kind = np.full((n, k), Kind.IMPRESSION, np.int8)
    kind[examined] = Kind.SKIP
    kind[clicked] = Kind.CLICK
    kind[short] = Kind.SHORT_DWELL
    kind[explicit] = _EXPLICIT_KIND[which[explicit]]
    scope = np.zeros((n, k), np.int8)
    scope[examined & ~clicked | short] = Scope.ITEM
    scope[explicit] = _EXPLICIT_SCOPE[which[explicit]]
    return kind, scope
