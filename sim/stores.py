"""The stores of the built-in layers, where imports written before :mod:`sim.layers` look for
them; each now lives in its layer's own file."""

from __future__ import annotations

from sim.layers.profile_memory import ActiveProfiles, ProfileMemoryKind, ProfileSnapshot
from sim.layers.realtime_features import FeatureStore
from sim.layers.session_context import SessionContextStore
from sim.layers.store import REJECTIONS, StoreKind

__all__ = [
    "StoreKind",
    "FeatureStore",
    "SessionContextStore",
    "ProfileSnapshot",
    "ActiveProfiles",
    "ProfileMemoryKind",
    "REJECTIONS",
]
