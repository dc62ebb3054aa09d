"""The learned rankers' exploration share and score noise (policies.exploration)."""

from __future__ import annotations

import numpy as np
import pytest

from policies import make_policy
from policies.bandit import BanditState
from policies.exploration import Exploration, ExplorationParams, shared_spread
from policies.signals import LowRankScores
from sim.domain import CatalogView, EventTable, Kind, Requests, TrainingData, View
from sim.errors import ScenarioError
from sim.scenario.spec import Bandit
from sim.serving.stack import check_slates

N_ITEMS, N_USERS, TOPICS = 400, 300, 4
RANKERS = ["embedding", "torch_ranker"]
OFF = {"explore": 0.0, "score_noise": 0.0}


def catalog(n_items=N_ITEMS):
    return CatalogView(
        n_items=n_items,
        n_topics=TOPICS,
        n_creators=10,
        topic=(np.arange(n_items) % TOPICS).astype(np.int16),
        creator=(np.arange(n_items) % 10).astype(np.int32),
        created_at=np.zeros(n_items),
    )


def requests(n, k=10, first_user=0):
    users = (first_user + np.arange(n)) % N_USERS
    return Requests(
        times=np.full(n, 10.0),
        users=users.astype(np.int32),
        sessions=np.arange(n, dtype=np.int64),
        k=k,
    )


def view(model, n_items=N_ITEMS, **states):
    return View(
        now=10.0,
        model=model,
        states={"retrain": model, **states},
        catalog=catalog(n_items),
        n_users=N_USERS,
        versions={},
    )


def logged(shared=1.0, seed=0, n=60_000):
    """Random impressions: users click items of their own topic, and every user clicks the
    first tenth of the catalogue more (a taste everyone shares, of weight ``shared``)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, N_USERS, n)
    item = rng.integers(0, N_ITEMS, n)
    chance = 0.02 + 0.5 * (item % TOPICS == user % TOPICS) + 0.4 * shared * (item < N_ITEMS // 10)
    kind = np.where(rng.random(n) < chance, Kind.CLICK, Kind.SKIP)
    return EventTable(
        time=np.sort(rng.random(n)) * 10.0,
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        position=np.zeros(n, np.int16),
        kind=kind.astype(np.int8),
        scope=np.zeros(n, np.int8),
        dwell=np.zeros(n, np.float32),
        session=np.zeros(n, np.int64),
    )


def fitted(name, params, events=None):
    policy = make_policy(name, params, seed=3)
    data = TrainingData(
        events=logged() if events is None else events,
        catalog=catalog(),
        n_users=N_USERS,
        now=10.0,
        horizon=10.0,
    )
    return policy, policy.fit(data)


@pytest.mark.parametrize("name", RANKERS)
def test_the_exploration_share_is_what_it_claims(name):
    _, model = fitted(name, OFF)
    plain = make_policy(name, OFF, seed=3).rank(requests(4000), view(model))
    explored = make_policy(name, {"explore": 0.1, "score_noise": 0.0}, seed=3)
    slates = explored.rank(requests(4000), view(model))
    check_slates(slates, 4000, 10, N_ITEMS, name, 10.0)
    outside = np.array([~np.isin(s, p) for s, p in zip(slates, plain, strict=True)])
    assert abs(outside.mean() - 0.1) < 0.01  # binomial sd 0.0015
    # the ranker's own items keep their order, its last ones make room
    for row, p, out in zip(slates, plain, outside, strict=True):
        np.testing.assert_array_equal(row[~out], p[: (~out).sum()])
    # explored items are uniform over the items not in the slate
    counts = np.bincount(slates[outside], minlength=N_ITEMS)
    assert counts.min() > 0 and counts.max() < 4 * outside.sum() / N_ITEMS


@pytest.mark.parametrize("name", RANKERS)
@pytest.mark.parametrize("n_items", [11, 12, N_ITEMS])
def test_slates_stay_distinct_live_items(name, n_items):
    policy, model = fitted(name, {"explore": 0.5, "score_noise": 3.0})
    for live in (n_items, n_items + 5):  # and items that arrived after the fit
        slates = policy.rank(requests(200), view(model, live))
        check_slates(slates, 200, 10, live, name, 10.0)
    check_slates(policy.rank(requests(50), view(None, n_items)), 50, 10, n_items, name, 10.0)


@pytest.mark.parametrize("name", RANKERS)
def test_the_bandit_slot_is_untouched(name):
    _, model = fitted(name, OFF)

    def bandit():
        spec = Bandit(learning_policy="epsilon_greedy", epsilon=1.0, position=2)
        return BanditState(spec, TOPICS, seed=4)

    plain = make_policy(name, OFF, seed=3).rank(requests(500), view(model, bandit=bandit()))
    policy = make_policy(name, {"explore": 1.0, "score_noise": 0.0}, seed=3)
    slates = policy.rank(requests(500), view(model, bandit=bandit()))
    np.testing.assert_array_equal(slates[:, 2], plain[:, 2])
    others = np.delete(slates, 2, axis=1)
    assert not any(np.isin(row, p).any() for row, p in zip(others, plain, strict=True))


@pytest.mark.parametrize("name", RANKERS)
def test_slates_do_not_depend_on_how_requests_are_batched(name):
    _, model = fitted(name, OFF)
    whole = make_policy(name, {}, seed=9).rank(requests(60), view(model))
    halves = make_policy(name, {}, seed=9)
    first = halves.rank(requests(25), view(model))
    second = halves.rank(requests(35, first_user=25), view(model))
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))


def test_knobs_off_draw_nothing_and_give_the_deterministic_top_k():
    policy, model = fitted("embedding", OFF)
    before = policy._rng.bit_generator.state
    slates = policy.rank(requests(100), view(model))
    assert policy._rng.bit_generator.state == before
    scores = model.users[requests(100).users] @ model.items_t
    np.testing.assert_array_equal(slates, np.argsort(-scores, axis=1, kind="stable")[:, :10])


def test_score_noise_has_the_stated_sd_in_units_of_the_shared_spread():
    _, model = fitted("embedding", OFF)
    exploration = Exploration(ExplorationParams(explore=0, score_noise=2.0), seed=1)
    rng = np.random.default_rng(0)
    users = model.users[rng.integers(0, N_USERS, 20_000)]
    draws = exploration.draws(rng, users.shape[0], 10)
    noisy = exploration.perturb(LowRankScores(users, model.items_t), model.users, model, draws)
    noise = noisy.users @ noisy.items - users @ model.items_t
    stated = 2.0 * shared_spread(model.users, model.items_t)
    assert stated > 0
    np.testing.assert_allclose(noise.std(axis=0), stated, rtol=0.05)  # per item, over requests
    assert np.abs(noise.mean(axis=0)).max() < 0.05 * stated
    # two items' noises are correlated by the cosine of their fixed random directions
    directions = exploration._directions_for(N_ITEMS)[:, :50]
    np.testing.assert_allclose(np.corrcoef(noise[:, :50].T), directions.T @ directions, atol=0.05)


def test_score_noise_spreads_a_consensus_and_keeps_personal_taste():
    # every user prefers the first tenth of the items: deterministic slates are nearly one list
    _, model = fitted("embedding", OFF, logged(shared=1.0))
    plain = make_policy("embedding", OFF, seed=3).rank(requests(N_USERS), view(model))
    noisy = make_policy("embedding", {"explore": 0.0}, seed=3).rank(requests(N_USERS), view(model))
    assert np.unique(noisy).shape[0] > 2 * np.unique(plain).shape[0]
    # users who disagree (only their own topic) keep it: the shared spread is small
    _, model = fitted("embedding", OFF, logged(shared=0.0))
    slates = make_policy("embedding", {"explore": 0.0}, seed=3).rank(requests(N_USERS), view(model))
    own_topic = slates % TOPICS == (np.arange(N_USERS) % TOPICS)[:, None]
    assert own_topic.mean() > 0.9


def test_an_items_noise_direction_does_not_depend_on_the_catalogue_size():
    grown = Exploration(ExplorationParams(), seed=5)
    grown._directions_for(100)
    later = grown._directions_for(9000)
    fresh = Exploration(ExplorationParams(), seed=5)._directions_for(9000)
    np.testing.assert_array_equal(later, fresh)
    np.testing.assert_allclose(np.linalg.norm(fresh, axis=0), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", RANKERS)
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"explore": 1.5}, "explore"),
        ({"explore": -0.1}, "explore"),
        ({"score_noise": -1}, "score_noise"),
    ],
)
def test_out_of_range_knobs_are_refused(name, params, field):
    with pytest.raises(ScenarioError, match=field):
        make_policy(name, params, seed=0)


class Profile:
    """A profile memory state: topic 0 is not of interest to anyone, creator 1 is blocked,
    items 5-9 are remembered as disliked."""

    item_demotion, creator_demotion, topic_demotion = 10.0, 5.0, 2.0

    def __init__(self):
        self.topics = np.zeros((N_USERS, TOPICS), np.uint16)
        self.topics[:, 0] = 1
        self.items = np.tile(np.arange(5, 10, dtype=np.int32), (N_USERS, 1))
        self.creators = np.full((N_USERS, 2), -1, np.int32)
        self.creators[:, 0] = 1


@pytest.mark.parametrize("name", RANKERS)
def test_exploration_never_shows_what_the_user_ruled_out(name):
    _, model = fitted(name, OFF)
    plain = make_policy(name, OFF, seed=3).rank(
        requests(2000), view(model, profile_memory=Profile())
    )
    policy = make_policy(name, {"explore": 0.5, "score_noise": 0.0}, seed=3)
    slates = policy.rank(requests(2000), view(model, profile_memory=Profile()))
    check_slates(slates, 2000, 10, N_ITEMS, name, 10.0)
    explored = slates[~np.array([np.isin(s, p) for s, p in zip(slates, plain, strict=True)])]
    assert explored.shape[0] > 0.3 * slates.size  # about 1/2 of slots, less the vetoed ones
    assert not (explored % TOPICS == 0).any()  # topic 0 ruled out
    assert not (explored % 10 == 1).any()  # creator 1 blocked
    assert not np.isin(explored, np.arange(5, 10)).any()
