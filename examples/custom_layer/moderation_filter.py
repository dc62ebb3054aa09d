"""A moderation filter as a recloop layer: an item that enough users report is removed from what
every user is served, once the moderation job has run and its review latency has passed.

The shared runtime does the rest: the trigger (``every: 10m``), the review delay (``latency``:
a report is seen by a job triggered at least that long after it), the job's own time
(``compute_time``), its rollout and its cost are written beside ``name`` in the scenario, and
every removal is recorded as a version with the reports it covers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.domain import Kind, TrainingData
from sim.serving.layers import EVERYONE, Adjustment, BaseLayer, Effect, Reads, nobody

__all__ = ["ModerationFilter", "Removed"]


class Removed:
    """Which items are removed (a boolean per item that existed when the job ran); serving
    reads it through ``adjust``, so every scoring policy leaves them out."""

    def __init__(self, items: np.ndarray):
        self.items = items

    def adjust(self, requests, view) -> Adjustment:
        return Adjustment(removed=self.items)


class ModerationFilter(BaseLayer):
    """Removes an item once ``reports`` distinct users have reported it (a thumbs-down or a
    dismiss, by default), for everyone."""

    name = "moderation"
    incremental = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        reports: int = Field(3, ge=1, description="distinct users' reports that remove an item")
        kinds: list[Literal["thumbs_down", "dismiss", "not_interested"]] = Field(
            default_factory=lambda: ["thumbs_down", "dismiss"],
            min_length=1,
            description="event kinds that count as a report",
        )

    def __init__(self, params: Params, context):
        super().__init__(params, context)
        self.kinds = tuple(Kind[kind.upper()] for kind in params.kinds)
        #: What its versions reflect, for the propagation metrics: reports on items.
        self.reads = Reads(kinds=self.kinds, on_item=True)

    def compute(self, data: TrainingData) -> Removed:
        events = data.events
        reported = np.isin(events.kind, self.kinds) & (events.item >= 0)
        pairs = np.unique(np.stack([events.item[reported], events.user[reported]]), axis=1)
        counts = np.bincount(pairs[0], minlength=data.catalog.n_items)
        return Removed(counts >= self.params.reports)

    def effect(self, previous: Removed | None, new: Removed) -> Effect:
        """Removing an item changes every user's scores; the same removals change nothing."""
        before = np.zeros(0, bool) if previous is None else previous.items
        grown = np.zeros(new.items.shape[0], bool)
        grown[: before.shape[0]] = before
        if np.array_equal(grown, new.items):
            return nobody("no item reached the report count")
        return EVERYONE
