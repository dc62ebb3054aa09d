"""The ``online_learning`` layer: a River logistic regression updated per event.

It learns, one examined impression at a time, how the real-time features (the user's decayed
negatives and clicks on the item's topic, the item's negative rate) predict a click, and serving
applies its current weights to those features. No production system updates weights per event;
this layer shows what it would buy and, through its cost, what it would take.
"""

from __future__ import annotations

import numpy as np
from river import linear_model, optim

from sim.domain import EventTable, Kind
from sim.scenario.spec import FeatureWeights, OnlineLearning, RealtimeFeatures
from sim.serving.layers import Reads
from sim.serving.layers.realtime_features import FeatureStore
from sim.serving.layers.store import StoreLayer

__all__ = ["OnlineModel", "FEATURES"]

FEATURES = ("user_topic_negative", "user_topic_positive", "item_negative_rate")


class OnlineModel(StoreLayer):
    """A River model plus the feature store it reads; serving uses both like real-time features.

    Every examined impression updates the weights every user's scores use: the state is shared.
    """

    name = "online_learning"
    Params = OnlineLearning
    shared = True

    @staticmethod
    def reads_for(spec: OnlineLearning) -> Reads:
        return Reads(kinds=tuple(kind for kind in Kind if kind != Kind.IMPRESSION), on_item=True)

    def __init__(self, spec: OnlineLearning, n_users: int, n_topics: int):
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(spec.learning_rate))
        self.store = FeatureStore(
            RealtimeFeatures(half_life=spec.half_life, item_half_life=spec.half_life),
            n_users,
            n_topics,
        )
        self.updates = 0

    @property
    def weights(self) -> FeatureWeights:
        """The model's current weights, as feature weights for ranking."""
        learned = self.model.weights
        return FeatureWeights(**{name: float(learned.get(name, 0.0)) for name in FEATURES})

    def user_topics(self, users: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        return self.store.user_topics(users, now)

    def item_negative_rate(self, n_items: int, now: float) -> np.ndarray:
        return self.store.item_negative_rate(n_items, now)

    def negative_rate_of(self, items: np.ndarray, now: float) -> np.ndarray:
        return self.store.negative_rate_of(items, now)

    def absorb(self, events: EventTable, topic_of: np.ndarray) -> None:
        examined = (events.item >= 0) & (events.kind != Kind.IMPRESSION)
        items = events.item[examined]
        rows = self.store.features_at(
            events.user[examined], items, topic_of[items], events.time[examined]
        )
        labels = events.kind[examined] == Kind.CLICK
        learn_one = self.model.learn_one
        # NOTE: one update per event on purpose; that is what this layer measures.
        for row, label in zip(rows.tolist(), labels.tolist(), strict=True):
            learn_one(dict(zip(FEATURES, row, strict=True)), label)
        self.updates += len(labels)
        self.store.absorb(events, topic_of)
