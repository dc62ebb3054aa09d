"""Offline evaluation of ``torch_ranker`` models on logged impressions, as He et al. (2014)
measured data freshness at Facebook: train a model once, score each following day, and compare
retraining every day with keeping one model.

    curve = model_age_curve(events, catalog, n_users, params, trained_at=3 * DAY, days=7)
    curve.normalized_entropy  # the kept model on day 0, 1, ... after its training
    curve.daily_gain          # relative NE improvement of daily retraining over keeping it

Normalized entropy (NE) is log loss over the entropy of the observed click rate: 1 for
predicting the average rate, lower is better. Every model trains on the ``window`` before its
training time, and features are computed as serving computed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.torch_ranker import TorchRanker, normalized_entropy, predict_clicks
from sim.domain import CatalogView, EventTable, TrainingData

__all__ = ["ModelAgeCurve", "model_age_curve", "DAY"]

DAY = 86400.0


@dataclass(frozen=True)
class ModelAgeCurve:
    """NE of one model by its age in days, and of daily retraining over the same days."""

    normalized_entropy: list[float]  # the model trained at ``trained_at``, day by day
    kept: float  # that model over all the days
    daily: float  # each day scored by a model trained at the day's start

    @property
    def daily_gain(self) -> float:
        """Relative NE improvement of retraining daily over keeping the first model."""
        return (self.kept - self.daily) / self.kept


def model_age_curve(
    events: EventTable,
    catalog: CatalogView,
    n_users: int,
    params: dict[str, Any],
    trained_at: float,
    days: int,
    window: float = 3 * DAY,
    seed: int = 0,
) -> ModelAgeCurve:
    """Train at ``trained_at`` and at the start of each of the ``days`` that follow (on the
    ``window`` before), and score the examined impressions of each day."""
    policy = TorchRanker(params, seed=seed)
    half_life = policy.params.feature_half_life

    def fit(at: float):
        start, stop = np.searchsorted(events.time, [at - window, at])
        data = TrainingData(
            events=events.slice(int(start), int(stop)),
            catalog=catalog,
            n_users=n_users,
            now=at,
            horizon=at,
        )
        return policy.fit(data)

    kept = fit(trained_at)
    times, kept_predictions, clicked = predict_clicks(kept, events, catalog, half_life)
    day_of = np.floor((times - trained_at) / DAY).astype(np.int64)
    by_age, daily_predictions, measured = [], [], []
    for day in range(days):
        rows = np.flatnonzero(day_of == day)
        by_age.append(normalized_entropy(kept_predictions[rows], clicked[rows]))
        model = kept if day == 0 else fit(trained_at + day * DAY)
        daily_predictions.append(predict_clicks(model, events, catalog, half_life, rows)[1])
        measured.append(rows)
    rows = np.concatenate(measured)
    return ModelAgeCurve(
        normalized_entropy=by_age,
        kept=normalized_entropy(kept_predictions[rows], clicked[rows]),
        daily=normalized_entropy(np.concatenate(daily_predictions), clicked[rows]),
    )
