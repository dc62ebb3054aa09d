"""The item catalogue: latent vectors around topic centroids, creators, quality, popularity.

Ground truth (``vectors``, ``quality``, ``appeal``) stays here; only topic, creator and creation
time are published to the stack through :meth:`Catalog.view`.
"""

from __future__ import annotations

import numpy as np

from sim.domain import CatalogView, readonly
from sim.scenario.spec import Catalog as CatalogSpec
from sim.scenario.spec import CatalogBurst
from users.tables import ItemTable

__all__ = ["Catalog"]

DAY = 86400.0
#: Share of a creator's items that fall in the creator's home topic.
CREATOR_TOPIC_LOYALTY = 0.8


class Catalog:
    """Every item that will exist during the run, of which the first ``n_live`` are live.

    Items arriving later are drawn up front (their arrival times from a Poisson process) so that
    the catalogue, like the users, is identical across the variants of one replication. With an
    item ``table``, its rows are the items and its columns replace the drawn attributes (latent
    vectors are still drawn around each item's topic).
    """

    def __init__(
        self,
        spec: CatalogSpec,
        end: float,
        rng: np.random.Generator,
        bursts: list[CatalogBurst] | tuple[CatalogBurst, ...] = (),
        table: ItemTable | None = None,
    ):
        self.spec = spec
        self.centroids = _unit_rows(rng.standard_normal((spec.topics, spec.dim)))
        n_start = spec.items
        if table is None:
            expected = spec.new_items_per_day * end / DAY
            n_new = int(rng.poisson(expected)) if expected > 0 else 0
            arrivals = rng.uniform(0.0, end, n_new)
        else:  # the table's rows, of which those created after 0 arrive then (in id order)
            n_start = table.n_start
            n_new = table.n_items - n_start
            arrivals = np.empty(0) if table.created_at is None else table.created_at[n_start:]
        # Burst items join the arrivals (all at the burst's time), optionally of one topic.
        burst_times = [np.full(burst.items, burst.at) for burst in bursts]
        burst_topics = [
            np.full(burst.items, -1 if burst.topic is None else burst.topic) for burst in bursts
        ]
        times = np.concatenate([arrivals, *burst_times])
        forced_topic = np.concatenate([np.full(n_new, -1), *burst_topics]).astype(np.int64)
        order = np.argsort(times, kind="stable")
        self.arrival_times = times[order]
        forced_topic = forced_topic[order]
        n_new = self.arrival_times.shape[0]
        capacity = n_start + n_new

        creator_topic = rng.integers(0, spec.topics, spec.creators)
        self.creator = rng.integers(0, spec.creators, capacity).astype(np.int32)
        if table is not None and table.creator is not None:  # topics follow the given creators
            self.creator = table.creator.copy()
        loyal = rng.random(capacity) < CREATOR_TOPIC_LOYALTY
        self.topic = np.where(
            loyal, creator_topic[self.creator], rng.integers(0, spec.topics, capacity)
        ).astype(np.int16)
        forced = np.flatnonzero(forced_topic >= 0)
        self.topic[n_start + forced] = forced_topic[forced]
        if table is not None and table.topic is not None:
            self.topic = table.topic.copy()
        scatter = rng.standard_normal((capacity, spec.dim)) * (
            spec.topic_spread / np.sqrt(spec.dim)
        )
        self.vectors = (self.centroids[self.topic] + scatter).astype(np.float32)
        self.quality = (rng.standard_normal(capacity) * spec.quality_sd).astype(np.float32)
        if table is not None and table.quality is not None:
            self.quality = table.quality.copy()
        # Zipf-like prior: a random popularity rank per item, log(1/rank^s) centred and divided
        # by the sd of log(rank), not of s * log(rank), so that the exponent s scales the skew
        # (s = 1 gives the standardized log prior, bit for bit as before s took effect).
        ranks = rng.permutation(capacity) + 1.0
        log_rank = np.log(ranks)
        spread = log_rank.std()
        self.appeal = (
            spec.zipf_exponent * (log_rank.mean() - log_rank) / (spread if spread > 0 else 1.0)
        ).astype(np.float32)
        # The starting catalogue is old: its age is unknown and long (no freshness).
        self.created_at = np.concatenate([np.full(n_start, -np.inf), self.arrival_times])
        if table is not None and table.created_at is not None:
            self.created_at = table.created_at.copy()
        self.n_live = n_start
        self._view: CatalogView | None = None

    @property
    def capacity(self) -> int:
        """Items that exist by the end of the run."""
        return int(self.topic.shape[0])

    def add_arrived(self, count: int = 1) -> None:
        """Make the next ``count`` drawn items live."""
        self.n_live = min(self.n_live + count, self.capacity)
        self._view = None

    def view(self) -> CatalogView:
        """Observable metadata of the live items (cached until the catalogue changes)."""
        if self._view is None:
            n = self.n_live
            self._view = CatalogView(
                n_items=n,
                n_topics=self.spec.topics,
                n_creators=self.spec.creators,
                topic=readonly(self.topic[:n]),
                creator=readonly(self.creator[:n]),
                created_at=readonly(self.created_at[:n]),
            )
        return self._view


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
