"""The table world: the catalogue is a team's item table; with ``click_prob``, clicks are too.

A logged-bandit dataset says "item i is clicked with probability p_i". With a ``click_prob``
column, an examined item is clicked with exactly that probability (times the user's segment's
``click_scale`` when ``world.users.segments`` is given); examination still falls with position
(``behavior.examine_decay``). Without it, the table gives only the items' attributes (topic,
creator, quality, creation time) and users respond as in the parametric world.

What a table of click probabilities does not say, and what this world does about it:

* **Negatives.** An examined item that is not clicked is a skip. An explicit negative (kind drawn
  from ``behavior.explicit_kinds``) needs a ``negative_prob`` column: the chance that an examined,
  unclicked item draws one. Without it there are none; there is no utility to fall under
  ``behavior.explicit_at``, and no let-down after a click.
* **Dwell.** A click's dwell is lognormal around ``behavior.dwell_median`` with
  ``behavior.dwell_sd`` (no utility to lengthen it); a click shorter than ``behavior.short_dwell``
  is logged as a short-dwell negative, as in the parametric world, so that ``click_prob`` is the
  chance of a click of either kind (``short_dwell: 0`` logs every click as a click).
* **Sessions and churn** follow ``behavior`` as in the parametric world (they count clicks and
  explicit negatives, not utilities).
* **Interventions** that change utilities (``topic_aversion``, ``item_turns_bad``,
  ``preference_shift``) are refused in a world of given click probabilities; a
  ``catalog_burst`` is refused with any table (the table is the whole catalogue: give arriving
  items a ``created_at`` after 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.errors import ScenarioError
from sim.scenario.spec import Scenario
from sim.serving.rng import Streams
from users.arrivals import RequestBlock
from users.behavior import impression_kinds
from users.catalog import Catalog
from users.tables import ItemTable, SegmentTable, read_items, read_segments
from users.world import SimulatedWorld

__all__ = ["TableWorld"]


class TableWorld(SimulatedWorld):
    """Items from a table; with its click_prob, each examined item's exact click chance.

    The items are ``world.catalog.table``'s rows; with its ``click_prob`` column an examined item
    is clicked with exactly that probability (times the user's segment's ``click_scale`` with
    ``world.users.segments``), else users respond as in the parametric world.
    """

    name = "table"

    def __init__(self, scenario: Scenario, streams: Streams, params: Any = None):
        self.table, self.segments = _tables(scenario)
        super().__init__(scenario, streams, params)
        n = self.population.count
        if self.segments is None:
            self.segment = np.zeros(n, np.int64)
            self.click_scale = np.ones(1)
        else:
            rng = streams.generator("segments")
            self.segment = rng.choice(self.segments.share.shape[0], n, p=self.segments.share)
            self.click_scale = self.segments.click_scale

    @classmethod
    def check(cls, scenario: Scenario) -> list[str]:
        """Reads and checks the tables (one line per problem, naming file, row and column)."""
        table, segments = _tables(scenario)
        given = "no click_prob: parametric behaviour"
        if table.click_prob is not None:
            given = "click_prob given" + (
                ""
                if table.negative_prob is not None
                else ", no negative_prob: no explicit negatives"
            )
        arriving = table.n_items - table.n_start
        later = f", {arriving} arriving later" if arriving else ""
        by = f", {len(segments.labels)} user segments" if segments is not None else ""
        return [f"table world: {table.n_start} items at the start{later} ({given}){by}"]

    def build_catalog(self, scenario: Scenario, rng: np.random.Generator) -> Catalog:
        return Catalog(scenario.world.catalog, scenario.end, rng, table=self.table)

    # --- behaviour ---------------------------------------------------------------------------

    def chance(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Click probability of examined ``items`` ``(n, m)`` for ``users`` ``(n,)``."""
        assert self.table.click_prob is not None
        return self.table.click_prob[items] * self.click_scale[self.segment[users]][:, None]

    def react(
        self, block: RequestBlock, slates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table, spec = self.table, self.behavior
        if table.click_prob is None:
            return super().react(block, slates)
        uniform = block.slot_uniform
        k = slates.shape[1]
        examined = uniform[..., 0] < spec.examine_decay ** np.arange(k, dtype=np.float32)
        clicked = examined & (uniform[..., 1] < self.chance(block.user, slates))
        log_dwell = np.log(spec.dwell_median) + spec.dwell_sd * block.slot_normal[..., 1]
        dwell = np.where(clicked, np.exp(log_dwell), 0.0).astype(np.float32)
        if table.negative_prob is None:
            explicit = np.zeros_like(examined)
        else:
            explicit = examined & ~clicked & (uniform[..., 2] < table.negative_prob[slates])
        kind, scope = impression_kinds(spec, examined, clicked, dwell, explicit, uniform[..., 3])
        return kind, scope, dwell

    def utility(self, users: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """For an oracle: each user's click probability of every live item (with click_prob),
        else the parametric utility."""
        if self.table.click_prob is None:
            return super().utility(users, times)
        return self.chance(users, np.arange(self.catalog.n_live))

    def expected_slate_clicks(
        self, block: RequestBlock, slates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.table.click_prob is None:
            return super().expected_slate_clicks(block, slates)
        k = slates.shape[1]
        examined = self.behavior.examine_decay ** np.arange(k, dtype=np.float64)
        served = self.chance(block.user, slates) @ examined
        top = -np.partition(-self.utility(block.user), k - 1, axis=1)[:, :k]
        return served, -np.sort(-top, axis=1) @ examined


def _tables(scenario: Scenario) -> tuple[ItemTable, SegmentTable | None]:
    world = scenario.world
    if world.catalog.table is None:
        raise ScenarioError(
            f"world.model: {world.model.name!r} reads its items from world.catalog.table, which "
            "is not given"
        )
    table = read_items(world.catalog.table, scenario)
    segments = None
    if world.users.segments is not None:
        segments = read_segments(world.users.segments, table)
    return table, segments
