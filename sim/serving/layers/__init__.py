"""Update layers: when, and from which events, served state changes.

The shared runtime (:mod:`sim.serving.layers.runtime`: trigger, latency, compute time, rollout,
cost, drift watch, versions) runs every layer alike; a layer supplies the math, one file each:
:mod:`~sim.serving.layers.retrain`, :mod:`~sim.serving.layers.nearline_embeddings`,
:mod:`~sim.serving.layers.realtime_features`, :mod:`~sim.serving.layers.session_context`,
:mod:`~sim.serving.layers.profile_memory`, and, where their policy adapters live,
:mod:`policies.bandit` and :mod:`policies.online`. A layer of your own is a plug-in
(:mod:`sim.serving.layers.base`), found by :mod:`sim.serving.layers.registry` from a
``module:Class`` target or the ``recloop.layers`` entry point, and checked by
:func:`sim.serving.layers.checks.check_layer`.
"""

from __future__ import annotations

from sim.serving.layers.base import Adjustment, BaseLayer, LayerContext
from sim.serving.layers.nearline_embeddings import PolicyRefresh
from sim.serving.layers.retrain import PolicyFit
from sim.serving.layers.runtime import (
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
