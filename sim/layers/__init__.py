"""Update layers: when, and from which events, served state changes.

The shared runtime (:mod:`sim.layers.runtime`: trigger, latency, compute time, rollout, cost,
drift watch, versions) runs every layer alike; a layer supplies the math, one file each:
:mod:`~sim.layers.retrain`, :mod:`~sim.layers.nearline_embeddings`,
:mod:`~sim.layers.realtime_features`, :mod:`~sim.layers.session_context`,
:mod:`~sim.layers.profile_memory`, and, where their policy adapters live,
:mod:`policies.bandit` and :mod:`policies.online`. A layer of your own is a plug-in
(:mod:`sim.layers.base`), found by :mod:`sim.layers.registry` from a ``module:Class`` target or
the ``recloop.layers`` entry point, and checked by :func:`sim.layers.checks.check_layer`.
"""

from __future__ import annotations

from sim.layers.base import Adjustment, BaseLayer, LayerContext
from sim.layers.nearline_embeddings import PolicyRefresh
from sim.layers.retrain import PolicyFit
from sim.layers.runtime import (
    EVERYONE,
    LABELLED_NEGATIVES,
    Absorption,
    Effect,
    LayerKind,
    LayerRuntime,
    Reads,
    Version,
    canary_cohort,
    changed_rows,
    nobody,
)

__all__ = [
    "Version",
    "Effect",
    "EVERYONE",
    "nobody",
    "Reads",
    "Absorption",
    "LayerKind",
    "LayerRuntime",
    "PolicyFit",
    "PolicyRefresh",
    "canary_cohort",
    "changed_rows",
    "LABELLED_NEGATIVES",
    "BaseLayer",
    "LayerContext",
    "Adjustment",
]
