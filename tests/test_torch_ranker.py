"""The torch retrain model: deterministic, learns the real-time feature weights, warm-starts."""

from __future__ import annotations

import numpy as np
import pytest

from policies import make_policy
from policies.torch_ranker import TorchRankerModel, decayed_prior_sums
from sim.domain import CatalogView, EventTable, Kind, TrainingData

N_USERS, N_ITEMS, N_TOPICS = 60, 40, 4


def synthetic(seed=0) -> TrainingData:
    """Every user has a disliked topic: its items are dismissed or skipped, never clicked, and
    the user's negatives on that topic pile up; other topics are clicked half the time."""
    rng = np.random.default_rng(seed)
    topic = (np.arange(N_ITEMS) % N_TOPICS).astype(np.int16)
    disliked = rng.integers(0, N_TOPICS, N_USERS)
    rows = []
    for step in range(120):
        users = rng.integers(0, N_USERS, 30)
        items = rng.integers(0, N_ITEMS, 30)
        bad = topic[items] == disliked[users]
        kind = np.where(
            bad,
            np.where(rng.random(30) < 0.5, Kind.DISMISS, Kind.SKIP),
            np.where(rng.random(30) < 0.5, Kind.CLICK, Kind.SKIP),
        )
        rows.append((np.full(30, step * 60.0), users, items, kind))
    time, user, item, kind = (np.concatenate(column) for column in zip(*rows, strict=True))
    n = time.shape[0]
    events = EventTable(
        time=time,
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        position=np.zeros(n, np.int16),
        kind=kind.astype(np.int8),
        scope=np.zeros(n, np.int8),
        dwell=np.zeros(n, np.float32),
        session=np.zeros(n, np.int64),
    )
    catalog = CatalogView(
        n_items=N_ITEMS,
        n_topics=N_TOPICS,
        n_creators=1,
        topic=topic,
        creator=np.zeros(N_ITEMS, np.int32),
        created_at=np.zeros(N_ITEMS),
    )
    return TrainingData(events=events, catalog=catalog, n_users=N_USERS, now=7200.0, horizon=7200.0)


PARAMS = {"epochs": 20, "batch_size": 256, "feature_half_life": "1h", "dim": 4}


def test_fit_is_deterministic_under_the_seed():
    a = make_policy("torch_ranker", PARAMS, seed=4).fit(synthetic())
    b = make_policy("torch_ranker", PARAMS, seed=4).fit(synthetic())
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items_t, b.items_t)
    assert a.feature_weights == b.feature_weights


def test_learns_that_negatives_on_a_topic_predict_no_click():
    model = make_policy("torch_ranker", PARAMS, seed=0).fit(synthetic())
    assert isinstance(model, TorchRankerModel)
    assert model.feature_weights.user_topic_negative < -0.5
    assert model.validation_log_loss is not None and model.validation_log_loss < 0.6


def test_incremental_fit_starts_from_the_deployed_model():
    data = synthetic()
    first = make_policy("torch_ranker", PARAMS, seed=0).fit(data)
    params = dict(PARAMS, epochs=1, learning_rate=1e-6)  # barely moves from where it starts
    warm = make_policy("torch_ranker", {**params, "incremental": True}, seed=1)
    cold = make_policy("torch_ranker", params, seed=1)
    warm_model = warm.fit(TrainingData(**{**data.__dict__, "previous": first}))
    cold_model = cold.fit(data)
    assert np.abs(warm_model.users - first.users).max() < 1e-3
    assert np.abs(cold_model.users - first.users).max() > 1e-2


def test_prior_sums_match_a_direct_computation():
    rng = np.random.default_rng(1)
    group = rng.integers(0, 5, 300)
    time = np.round(rng.uniform(0, 5000, 300), 0)
    value = rng.random(300)
    fast = decayed_prior_sums(group, time, value, 900.0)
    slow = [
        sum(
            value[j] * 2 ** (-(time[i] - time[j]) / 900.0)
            for j in range(300)
            if group[j] == group[i] and time[j] < time[i]
        )
        for i in range(300)
    ]
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)


def logged_world(freshness: float):
    """Two days of random slates in a world where users value newness ``freshness`` (new
    items every hour), and the catalogue the policy would see."""
    from sim.serving.runner import run_scenario
    from tests.conftest import tiny

    result = run_scenario(
        tiny(
            "duration=2d",
            "warmup=1d",
            "stack.policy.name=random",
            "stack.policy.params={}",
            "stack.layers={}",
            "world.catalog.new_items_per_day=200",
            f"world.behavior.freshness_weight={freshness}",
        )  # fmt: skip
    )
    catalog = result.catalog()
    return result, catalog


def test_example_age_learns_the_freshness_users_have_and_predicts_later_clicks_better():
    from policies.torch_ranker import AGE_EDGES, normalized_entropy, predict_clicks

    result, catalog = logged_world(freshness=1.5)
    day = 86400.0
    events = result.events
    train = events.slice(0, int(np.searchsorted(events.time, day)))  # day 2 is held out
    data = TrainingData(events=train, catalog=catalog, n_users=400, now=day, horizon=day)
    params = {"dim": 8, "epochs": 2, "batch_size": 1024, "l2": 1e-4, "negative_weight": 1.0}
    models = {
        age: make_policy("torch_ranker", {**params, "example_age": age}, seed=1).fit(data)
        for age in (False, True)
    }
    bias = models[True].age_bias
    assert bias is not None and models[False].age_bias is None
    under_a_day = int((AGE_EDGES < day).sum())
    assert bias[:under_a_day].mean() > bias[-1] + 0.5  # new items are clicked more
    half_life = 3600.0  # the default feature_half_life the models were trained with
    times, _, clicked = predict_clicks(models[False], events, catalog, half_life)
    later = np.flatnonzero(times >= day)
    entropy = {
        age: normalized_entropy(
            predict_clicks(model, events, catalog, half_life, rows=later)[1], clicked[later]
        )
        for age, model in models.items()
    }
    assert entropy[True] < entropy[False] < 1.0  # measured 0.969 and 0.976 on the next day


def test_without_freshness_example_age_learns_no_age_effect():
    from policies.torch_ranker import age_buckets

    result, catalog = logged_world(freshness=0.0)
    day = 86400.0
    train = result.events.slice(0, int(np.searchsorted(result.events.time, day)))
    data = TrainingData(events=train, catalog=catalog, n_users=400, now=day, horizon=day)
    params = {"dim": 8, "epochs": 2, "batch_size": 1024, "l2": 1e-4, "example_age": True}
    bias = make_policy("torch_ranker", params, seed=1).fit(data).age_bias
    assert bias is not None
    # the buckets share an offset with the intercept: only differences between them mean age
    seen = np.unique(age_buckets(train.time - catalog.created_at[np.maximum(train.item, 0)]))
    assert np.ptp(bias[seen]) < 0.3


def test_content_features_score_items_that_arrived_after_the_fit_by_their_topic():
    rng = np.random.default_rng(0)
    disliked = rng.integers(0, N_TOPICS, N_USERS)  # as synthetic() draws them first
    data = synthetic()
    new_topics = np.arange(2 * N_TOPICS) % N_TOPICS  # two new items per topic, never logged
    params = dict(PARAMS, content_features=True)
    model = make_policy("torch_ranker", params, seed=0).fit(data)
    columns = model.unseen_columns(new_topics)
    assert model.topics_t is not None
    np.testing.assert_array_equal(columns, model.topics_t[:, new_topics])
    scores = model.users @ columns  # (users, new items)
    own = scores[np.arange(N_USERS), disliked]  # each user's new item of their disliked topic
    others = np.where(new_topics[None, :] == disliked[:, None], np.nan, scores)
    assert (own < np.nanmean(others, axis=1)).mean() > 0.9
    # a topic with no item at fit time still gets columns, for uploads that arrive in it later
    catalog = CatalogView(**{**data.catalog.__dict__, "n_topics": N_TOPICS + 1})
    wider = make_policy("torch_ranker", params, seed=0).fit(
        TrainingData(**{**data.__dict__, "catalog": catalog})
    )
    assert wider.unseen_columns(np.array([N_TOPICS])).shape == (PARAMS["dim"] + 1, 1)
    plain = make_policy("torch_ranker", PARAMS, seed=0).fit(data)
    assert plain.topics_t is None
    np.testing.assert_array_equal(plain.users @ plain.unseen_columns(new_topics), plain.intercept)


@pytest.mark.parametrize("content", [False, True])
def test_incremental_fit_restarts_from_the_same_scores(content):
    data = synthetic()
    params = dict(PARAMS, content_features=content)
    first = make_policy("torch_ranker", params, seed=0).fit(data)
    still = dict(params, epochs=1, learning_rate=1e-7, incremental=True)
    again = make_policy("torch_ranker", still, seed=1).fit(
        TrainingData(**{**data.__dict__, "previous": first})
    )
    np.testing.assert_allclose(again.items_t, first.items_t, atol=1e-4)  # bias row included
    assert abs(again.intercept - first.intercept) < 1e-4
    if content:
        assert again.topics_t is not None and first.topics_t is not None
        np.testing.assert_allclose(again.topics_t, first.topics_t, atol=1e-4)


def test_watched_dislikes_are_a_negative_label_or_a_watch_and_features_can_be_left_out():
    from policies.torch_ranker import _examples

    data = synthetic()
    events = data.events
    watched = np.flatnonzero(events.kind == Kind.DISMISS)[:5]
    kind, dwell = events.kind.copy(), events.dwell.copy()
    kind[watched], dwell[watched] = Kind.THUMBS_DOWN, 30.0
    logged = EventTable(**{**events.__dict__, "kind": kind, "dwell": dwell})
    rows = np.searchsorted(np.flatnonzero(kind != Kind.IMPRESSION), watched)
    for ignore, label in ((False, 0.0), (True, 1.0)):
        _, _, features, labels, rejected, _ = _examples(logged, data.catalog.topic, 3600.0, ignore)
        assert (labels[rows] == label).all() and (rejected[rows] != ignore).all()
    model = make_policy("torch_ranker", dict(PARAMS, features=False), seed=0).fit(data)
    assert model.feature_weights.user_topic_negative == 0.0
