"""``torch_ranker``: a factorization ranker trained with PyTorch, with the real-time features as
inputs.

Score of item i for user u: ``p_u . q_i + b_i + w . f(u, i) [+ a(age_i)]`` where ``f`` holds the
real-time features (decayed negatives and clicks of u on i's topic, i's decayed negative rate)
and, with ``example_age``, ``a`` is a learned bias by the item's age when the example was served
(YouTube's "example age" feature, evaluated at the item's current age when serving). With
``content_features``, ``q_i`` and ``b_i`` each add a learned term of the item's topic, which is
all an item that arrived after the fit has. Training
uses the examined impressions visible to the retrain layer (clicked or not), with each feature
recomputed as it stood when the impression was served, so that the learned weights ``w`` are the
ones serving applies to the live feature store: between retrains the weights stay frozen and only
the features move (the Tubi-style intra-day override).

With label delays (the scenario's ``logging``), ``delayed_feedback`` chooses what a retrain does
with impressions whose label has not arrived: leave them out (``arrived``, the default), wait
until examples are ``maturity`` old (``wait``), count them as negatives (``naive``), or count
them as negatives and correct the likelihood for the labels still to come (``corrected``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field

from policies.base import BasePolicy
from policies.builtin import serve_scores
from policies.exploration import Exploration, ExplorationParams, score_noise_field
from policies.signals import LowRankScores
from sim.domain import EVENT_COLUMNS, CatalogView, EventTable, Kind, Requests, TrainingData, View
from sim.scenario.spec import Duration, FeatureWeights
from sim.serving.layers.store import REJECTIONS

__all__ = [
    "TorchRanker",
    "TorchRankerModel",
    "decayed_prior_sums",
    "predict_clicks",
    "normalized_entropy",
]


class TorchRankerParams(ExplorationParams):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # its learned item biases make more of its score shared than the embedding's: less noise
    # gives the same spread of exposure
    score_noise: float = score_noise_field(1.0)
    dim: int = Field(16, ge=1, le=256, description="embedding dimension")
    epochs: int = Field(2, ge=1, le=50, description="passes over the training examples")
    batch_size: int = Field(4096, ge=16, le=1_000_000, description="examples per Adam step")
    learning_rate: float = Field(0.05, gt=0, le=10, description="Adam's learning rate")
    l2: float = Field(1e-5, ge=0, le=1, description="weight decay")
    max_examples: int = Field(300_000, ge=100, description="most recent examined impressions")
    holdout: float = Field(0.1, ge=0, lt=0.5, description="newest share kept for validation")
    incremental: bool = Field(False, description="start from the deployed model's weights")
    feature_half_life: Duration = Field(3600.0, gt=0, description="as the feature store's")
    negative_weight: float = Field(
        5.0, ge=0, description="loss weight of explicit negatives and short dwells as label 0"
    )
    example_age: bool = Field(
        False,
        description="learn a bias by the item's age at each example (under 1 h, 1-2 h, 2-4 h, "
        "... 32 days, older) jointly with the rest, and serve it at each item's current age: "
        "without it, an item's bias is its average over the training window, so the model keeps "
        "rating what was fresh when it was trained as fresh, and items that arrived since as "
        "unknown",
    )
    features: bool = Field(
        True, description="learn weights for the real-time features (off: trained without them)"
    )
    watched_dislikes: Literal["label", "ignore"] = Field(
        "label",
        description="a thumbs-down after watching (dwell > 0): 'label' trains it as a negative "
        "like any rejection (weighted negative_weight); 'ignore' counts the watch as a click, as "
        "a watch objective does, so dislikes reach the model only through the real-time features",
    )
    delayed_feedback: Literal["arrived", "wait", "naive", "corrected"] = Field(
        "arrived",
        description="impressions whose label has not arrived by the retrain's horizon (label "
        "delays, logging section): 'arrived' trains only on the labels that arrived (a late "
        "click's impression is left out, as without label delays); 'wait' trains only on "
        "examples at least `maturity` old, an impression with no label by then a negative; "
        "'naive' trains on every impression, one with no label yet a negative; 'corrected' does "
        "as naive but fits the probability that a click has been observed by each example's "
        "age, p(click) * F(age), with F the click label delay's distribution estimated from the "
        "clicks that arrived (a reverse-time product-limit estimate for right-truncated delays, "
        "Lagakos et al. 1988), so that the model predicts the click rate itself (Chapelle 2014's "
        "delayed-feedback model with the delay distribution estimated apart; in the spirit of "
        "Ktena et al. 2019's correction of fake negatives). Without label delays every label "
        "has arrived and each choice trains as 'arrived'",
    )
    maturity: Duration = Field(
        86400.0,
        gt=0,
        description="with delayed_feedback: wait, the age before which an example is not trained "
        "on (its label may still arrive)",
    )
    content_features: bool = Field(
        False,
        description="give each item its topic's learned vector and bias on top of its own (a "
        "content feature), so that items that arrived after the fit score by their topic; "
        "without it they score the global intercept",
    )


@dataclass(frozen=True)
class TorchRankerModel:
    """An immutable snapshot of the trained weights, as numpy arrays."""

    users: np.ndarray  # (n_users, dim)
    items_t: np.ndarray  # (dim + 1, n_items): item factors, then the item bias row
    feature_weights: FeatureWeights
    validation_log_loss: float | None  # on the held-out newest examples; None without holdout
    age_bias: np.ndarray | None = None  # with example_age: per bucket of AGE_EDGES
    intercept: float = 0.0  # the global bias, folded into every fitted item's bias row
    #: (dim + 1, n_topics): the columns of an item that arrived after the fit, by its topic (with
    #: content features its topic's vector and bias, else zeros and the intercept)
    topics_t: np.ndarray | None = None

    def unseen_columns(self, topics: np.ndarray) -> np.ndarray:
        """``items_t``'s columns for items of ``topics`` that arrived after the fit."""
        if self.topics_t is None:
            columns = np.zeros((self.items_t.shape[0], topics.shape[0]), np.float32)
            columns[-1] = self.intercept
            return columns
        return self.topics_t[:, topics]


#: Item-age buckets of ``example_age`` (seconds): under an hour, 1-2 h, 2-4 h, ... doubling to
#: 32 days, and older (the catalogue the run starts with is older than any).
AGE_EDGES = 3600.0 * 2.0 ** np.arange(0, 10)


def age_buckets(ages: np.ndarray) -> np.ndarray:
    """The ``example_age`` bucket of each item age in seconds."""
    return np.searchsorted(AGE_EDGES, ages, side="right")


class _Net(torch.nn.Module):
    def __init__(
        self, n_users: int, n_items: int, dim: int, topics: CatalogView | None = None
    ) -> None:
        """With ``topics``, each item's topic adds a learned vector and bias (of every topic of
        the catalogue, so that items arriving later in a topic with none yet have them)."""
        super().__init__()
        self.users = torch.nn.Embedding(n_users, dim)
        self.items = torch.nn.Embedding(n_items, dim)
        self.bias = torch.nn.Embedding(n_items, 1)
        self.ages = torch.nn.Embedding(AGE_EDGES.shape[0] + 1, 1)
        self.features = torch.nn.Linear(3, 1)
        for table in (self.users, self.items):
            torch.nn.init.normal_(table.weight, std=0.1)
        torch.nn.init.zeros_(self.bias.weight)
        torch.nn.init.zeros_(self.ages.weight)
        self.item_topic = None
        if topics is not None:  # created only when used: their draws would shift the seed
            self.item_topic = torch.from_numpy(topics.topic.astype(np.int64))
            self.topics = torch.nn.Embedding(topics.n_topics, dim)
            self.topic_bias = torch.nn.Embedding(topics.n_topics, 1)
            torch.nn.init.zeros_(self.topics.weight)
            torch.nn.init.zeros_(self.topic_bias.weight)

    def forward(self, users, items, features, ages=None):
        vectors, bias = self.items(items), self.bias(items).squeeze(1)
        if self.item_topic is not None:
            topics = self.item_topic[items]
            vectors = vectors + self.topics(topics)
            bias = bias + self.topic_bias(topics).squeeze(1)
        dot = (self.users(users) * vectors).sum(dim=1)
        logit = dot + bias + self.features(features).squeeze(1)
        return logit if ages is None else logit + self.ages(ages).squeeze(1)


class TorchRanker(BasePolicy):
    """Matrix factorization plus learned real-time feature weights, trained with Adam."""

    name = "torch_ranker"
    Params = TorchRankerParams
    params: TorchRankerParams

    def __init__(self, params=None, *, seed: int = 0):
        super().__init__(params, seed=seed)
        self._live: tuple[TorchRankerModel, int, np.ndarray] | None = None
        self._exploration = Exploration(self.params, self.seed)

    def fit(self, data: TrainingData) -> TorchRankerModel:
        p = self.params
        events, pending = data.events, None
        strategy = p.delayed_feedback if data.unlabelled is not None else "arrived"
        if strategy != "arrived":
            events, pending = _with_unlabelled(events, data.unlabelled)
        users, items, features, labels, rejected, times = _examples(
            events, data.catalog.topic, p.feature_half_life, p.watched_dislikes == "ignore", pending
        )
        if not p.features:
            features[:] = 0.0
        weights = np.where(rejected, p.negative_weight, 1.0).astype(np.float32)
        ages = age_buckets(times - data.catalog.created_at[items])
        observed = np.ones(users.shape[0], np.float32)  # P(a click is observed by then)
        if strategy == "wait":
            mature = times < data.horizon - p.maturity
            users, items, features = users[mature], items[mature], features[mature]
            labels, weights, ages = labels[mature], weights[mature], ages[mature]
            observed = observed[mature]
            if not mature.any() and isinstance(data.previous, TorchRankerModel):
                return data.previous  # nothing old enough yet: the model served stays
        elif strategy == "corrected":
            observed = _observed_share(events, data.horizon, times)
        if users.shape[0] > p.max_examples:
            keep = slice(users.shape[0] - p.max_examples, None)
            users, items, features = users[keep], items[keep], features[keep]
            labels, weights, ages = labels[keep], weights[keep], ages[keep]
            observed = observed[keep]
        split = users.shape[0] - int(round(p.holdout * users.shape[0]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            catalog = data.catalog
            net = _Net(
                data.n_users, catalog.n_items, p.dim, catalog if p.content_features else None
            )
            if p.incremental and isinstance(data.previous, TorchRankerModel):
                _warm_start(net, data.previous)
            columns = (users, items, features, labels, weights, ages)
            train = [torch.from_numpy(a[:split]) for a in columns]
            # the corrected likelihood only: the plain loss stays bit for bit as it was
            shares = torch.from_numpy(observed) if strategy == "corrected" else None
            optimizer = torch.optim.Adam(net.parameters(), lr=p.learning_rate, weight_decay=p.l2)
            for _ in range(p.epochs):
                for batch in torch.randperm(split).split(p.batch_size):
                    optimizer.zero_grad()
                    u, i, f, y, w, a = (tensor[batch] for tensor in train)
                    logits = net(u, i, f, a if p.example_age else None)
                    share = None if shares is None else shares[:split][batch]
                    _loss(logits, y, w, share).backward()
                    optimizer.step()
            validation = None
            if split < users.shape[0]:
                with torch.no_grad():
                    u, i, f, y, w, a = (torch.from_numpy(x[split:]) for x in columns)
                    share = None if shares is None else shares[split:]
                    logits = net(u, i, f, a if p.example_age else None)
                    validation = float(_loss(logits, y, w, share))
        with torch.no_grad():
            weights = net.features.weight[0].numpy().astype(float) * p.features
            intercept = float(net.features.bias)
            items_t = np.vstack([net.items.weight.numpy().T, net.bias.weight.numpy().T + intercept])
            topics_t = None
            if net.item_topic is not None:
                topics_t = np.vstack(
                    [net.topics.weight.numpy().T, net.topic_bias.weight.numpy().T + intercept]
                ).astype(np.float32)
                item_topic = net.item_topic.numpy()
                items_t[:-1] += topics_t[:-1, item_topic]
                items_t[-1] += net.topic_bias.weight.numpy()[item_topic, 0]
            return TorchRankerModel(
                users=np.hstack([net.users.weight.numpy(), np.ones((data.n_users, 1), np.float32)]),
                items_t=np.ascontiguousarray(items_t, np.float32),
                feature_weights=FeatureWeights(
                    user_topic_negative=weights[0],
                    user_topic_positive=weights[1],
                    item_negative_rate=weights[2],
                ),
                validation_log_loss=validation,
                age_bias=net.ages.weight[:, 0].numpy().copy() if p.example_age else None,
                intercept=intercept,
                topics_t=topics_t,
            )

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        model = view.model
        if model is None:
            return serve_scores(self._rng, None, requests, view)
        offset = None
        if model.age_bias is not None:  # every live item at its age now
            ages = age_buckets(requests.times[0] - view.catalog.created_at)
            offset = model.age_bias[ages].astype(np.float32)
        users = model.users[requests.users]
        draws = self._exploration.draws(self._rng, len(requests), requests.k)
        scores = LowRankScores(users, self._live_items(model, view.catalog), offset)
        scores = self._exploration.perturb(scores, model.users, model, draws)
        slates = serve_scores(
            self._rng, scores, requests, view, feature_weights=model.feature_weights
        )
        return self._exploration.fill(slates, draws, requests, view)

    def _live_items(self, model: TorchRankerModel, catalog: CatalogView) -> np.ndarray:
        """The model's columns of every live item, those that arrived after the fit by their
        topic (cached per model and catalogue size)."""
        cached = self._live
        if cached is None or cached[0] is not model or cached[1] != catalog.n_items:
            shown = min(model.items_t.shape[1], catalog.n_items)
            columns = model.items_t[:, :shown]
            if shown < catalog.n_items:  # items that arrived after the fit
                unseen = model.unseen_columns(catalog.topic[shown:])
                columns = np.concatenate([columns, unseen], axis=1)
            self._live = cached = (model, catalog.n_items, columns)
        return cached[2]


def predict_clicks(
    model: TorchRankerModel,
    events: EventTable,
    catalog: CatalogView,
    half_life: float,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's click probability for examined impressions, as serving would compute it:
    ``(times, probabilities, clicked)``, optionally only for examined impressions at ``rows`` of
    the examples (for offline evaluation on logs, as in He et al. 2014). Items that arrived
    after the fit score as serving scores them (:meth:`TorchRankerModel.unseen_columns`)."""
    users, items, features, clicked, _, times = _examples(events, catalog.topic, half_life)
    if rows is not None:
        users, items, features, clicked, times = (
            column[rows] for column in (users, items, features, clicked, times)
        )
    known = items < model.items_t.shape[1]
    logits = np.empty(users.shape[0])
    logits[known] = np.einsum("nd,dn->n", model.users[users[known]], model.items_t[:, items[known]])
    unseen = model.unseen_columns(catalog.topic[items[~known]])
    logits[~known] = np.einsum("nd,dn->n", model.users[users[~known]], unseen)
    weights = model.feature_weights
    logits += features @ np.array(
        [weights.user_topic_negative, weights.user_topic_positive, weights.item_negative_rate]
    )
    if model.age_bias is not None:
        logits += model.age_bias[age_buckets(times - catalog.created_at[items])]
    return times, 0.5 + 0.5 * np.tanh(logits / 2), clicked  # the logistic, without overflow


def normalized_entropy(probabilities: np.ndarray, clicked: np.ndarray) -> float:
    """Log loss over the entropy of the observed click rate (He et al. 2014): 1 for predicting
    the average, lower is better; NaN when every example has the same label (no entropy)."""
    rate = float(np.mean(clicked)) if clicked.shape[0] else 0.0
    if not 0.0 < rate < 1.0:
        return float("nan")
    p = np.clip(probabilities, 1e-12, 1 - 1e-12)
    loss = -np.mean(clicked * np.log(p) + (1 - clicked) * np.log(1 - p))
    return float(loss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def _loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    observed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted log loss of the click labels; with ``observed`` (the probability that a click
    would have been observed by each example's age), of the observed labels under
    ``p(click) * observed``."""
    if observed is None:
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels, reduction="none"
        )
    else:
        seen = (torch.sigmoid(logits) * observed).clamp(1e-7, 1 - 1e-7)
        losses = torch.nn.functional.binary_cross_entropy(seen, labels, reduction="none")
    return (losses * weights).sum() / weights.sum()


def _with_unlabelled(
    events: EventTable, unlabelled: EventTable | None
) -> tuple[EventTable, np.ndarray]:
    """The arrived events and the impressions still without a label, in time order, and which
    rows are the latter."""
    if unlabelled is None or not len(unlabelled):
        return events, np.zeros(len(events), bool)
    order = np.argsort(np.concatenate([events.time, unlabelled.time]), kind="stable")
    arrival = events.arrival if events.arrival is not None else events.time
    merged = EventTable(
        **{
            name: np.concatenate([getattr(events, name), getattr(unlabelled, name)])[order]
            for name in EVENT_COLUMNS
        },
        versions={
            layer: np.concatenate([column, unlabelled.versions[layer]])[order]
            for layer, column in events.versions.items()
            if layer in unlabelled.versions
        },
        arrival=np.concatenate([arrival, np.full(len(unlabelled), np.inf)])[order],
    )
    pending = np.concatenate([np.zeros(len(events), bool), np.ones(len(unlabelled), bool)])
    return merged, pending[order]


def _observed_share(events: EventTable, horizon: float, times: np.ndarray) -> np.ndarray:
    """For examples served at ``times``, the estimated probability that a click on them has
    arrived by ``horizon``: the click label delay's distribution function at their age, from
    the clicks in ``events`` that arrived (see :func:`click_delay_cdf`)."""
    if events.arrival is None:
        return np.ones(times.shape[0], np.float32)
    clicked = (events.kind == Kind.CLICK) & np.isfinite(events.arrival)
    delays = events.arrival[clicked] - events.time[clicked]
    limits = horizon - events.time[clicked]
    return click_delay_cdf(delays, limits, horizon - times).astype(np.float32)


def click_delay_cdf(delays: np.ndarray, limits: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The distribution function at ``at`` of delays observed only when shorter than their
    ``limits`` (right truncation: a label arrives in the data only before the horizon), by the
    reverse-time product-limit estimator (Lagakos, Barraj and De Gruttola 1988), relative to the
    longest delay observed: ``F(t) = prod over observed delays u > t of (1 - 1 / R(u))``, with
    ``R(u)`` the delays at most u whose limit is at least u. Without delays (every label at
    once) it is 1.

    >>> delays, limits = np.array([1.0, 2.0, 3.0]), np.array([9.0, 9.0, 9.0])
    >>> click_delay_cdf(delays, limits, np.array([0.5, 2.5, 5.0]))
    array([0.        , 0.66666667, 1.        ])
    >>> click_delay_cdf(np.array([2.0, 2.0]), np.array([9.0, 3.0]), np.array([1.0, 2.0]))
    array([0., 1.])
    """
    if not delays.shape[0] or not (delays > 0).any():
        return np.ones(np.shape(at))
    u, ties = np.unique(delays, return_counts=True)
    at_most = np.cumsum(ties)  # delays <= u_j
    short_limits = np.searchsorted(np.sort(limits), u, "left")  # limits below u_j
    risk = np.maximum(at_most - short_limits, ties)
    with np.errstate(divide="ignore"):
        terms = np.log1p(-ties / risk)
    # log F just below u_j: the sum of the terms of delays >= u_j
    tail = np.concatenate([np.cumsum(terms[::-1])[::-1], [0.0]])
    first_above = np.searchsorted(u, at, "right")
    return np.exp(tail[first_above])


def _warm_start(net: _Net, previous: TorchRankerModel) -> None:
    with torch.no_grad():
        dim = net.users.weight.shape[1]
        net.users.weight[:, :] = torch.from_numpy(previous.users[:, :dim])
        fitted = previous.items_t.shape[1]
        items_t = previous.items_t.copy()
        items_t[dim] -= previous.intercept  # folded into the bias row for serving
        if net.item_topic is not None and previous.topics_t is not None:  # split off the topics'
            topics_t = previous.topics_t.copy()
            topics_t[dim] -= previous.intercept
            net.topics.weight[:] = torch.from_numpy(topics_t[:dim].T.copy())
            net.topic_bias.weight[:, 0] = torch.from_numpy(topics_t[dim])
            items_t -= topics_t[:, net.item_topic[:fitted].numpy()]
        net.items.weight[:fitted] = torch.from_numpy(items_t[:dim].T.copy())
        net.bias.weight[:fitted, 0] = torch.from_numpy(items_t[dim])
        net.features.bias[0] = previous.intercept
        weights = previous.feature_weights
        net.features.weight[0] = torch.tensor(
            [weights.user_topic_negative, weights.user_topic_positive, weights.item_negative_rate]
        )


def _examples(
    events: EventTable,
    topic_of: np.ndarray,
    half_life: float,
    watches_dislikes: bool = False,
    pending: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Examined impressions in time order: users, items, features as served, click labels,
    whether each was a rejection (short dwell or explicit negative), and times. With
    ``watches_dislikes``, a thumbs-down after watching is labelled a click and not a rejection
    (the features still count it as a negative). The rows marked ``pending`` (impressions whose
    label has not arrived) are examples labelled 0, not rejections."""
    on_item = events.item >= 0
    user, item, time = events.user[on_item], events.item[on_item], events.time[on_item]
    kind = events.kind[on_item]
    topic = topic_of[item].astype(np.int64)
    negative = np.isin(kind, REJECTIONS).astype(np.float64)
    clicked = (kind == Kind.CLICK).astype(np.float64)
    watched = (kind == Kind.THUMBS_DOWN) & (events.dwell[on_item] > 0)
    user_topic = user.astype(np.int64) * (int(topic_of.max(initial=0)) + 1) + topic
    item_negative = decayed_prior_sums(item, time, negative, half_life)
    item_shown = decayed_prior_sums(item, time, np.ones_like(negative), half_life)
    features = np.stack(
        [
            decayed_prior_sums(user_topic, time, negative, half_life),
            decayed_prior_sums(user_topic, time, clicked, half_life),
            item_negative / (item_shown + 1.0),
        ],
        axis=1,
    ).astype(np.float32)
    examined = kind != Kind.IMPRESSION
    if pending is not None:
        examined |= pending[on_item]
    rejected = negative > 0
    if watches_dislikes:
        clicked[watched] = 1.0
        rejected &= ~watched
    return (
        user[examined].astype(np.int64),
        item[examined].astype(np.int64),
        features[examined],
        clicked[examined].astype(np.float32),
        rejected[examined],
        time[examined],
    )


def decayed_prior_sums(
    group: np.ndarray, time: np.ndarray, value: np.ndarray, half_life: float
) -> np.ndarray:
    """For each row, the sum of ``value`` over earlier rows of its group, each decayed by
    ``2 ** (-(t_row - t_earlier) / half_life)``; rows at the same time do not count each other.

    >>> decayed_prior_sums(np.array([0, 0, 0, 1]), np.array([0.0, 1.0, 1.0, 1.0]),
    ...                    np.array([1.0, 1.0, 1.0, 1.0]), 1.0)
    array([0. , 0.5, 0.5, 0. ])
    """
    n = group.shape[0]
    if not n:
        return np.zeros(0)
    order = np.lexsort((time, group))
    g, t, v = group[order], time[order], value[order]
    index = np.arange(n)
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, index, 0))
    exponent = (t - t[group_start]) / half_life
    scaled = v * np.exp2(exponent)  # relative to the group's first time: no overflow for < 1000
    before = np.cumsum(scaled) - scaled  # strictly earlier rows, any group
    new_time = new_group | np.r_[True, t[1:] != t[:-1]]
    tie_start = np.maximum.accumulate(np.where(new_time, index, 0))
    prior = (before[tie_start] - before[group_start]) * np.exp2(-exponent)
    result = np.empty(n)
    result[order] = prior
    return result
