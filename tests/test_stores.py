"""The serving-side stores against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.signals import signal_scores
from sim.domain import CatalogView, EventTable, Kind, Requests, Scope, View
from sim.scenario.spec import RealtimeFeatures, SessionContext
from sim.serving.layers.realtime_features import FeatureStore
from sim.serving.layers.session_context import SessionContextStore
from sim.serving.layers.store import REJECTIONS

TOPIC_OF = np.array([0, 0, 1, 1, 2, 2], np.int16)


def events(rows):
    """rows: (time, user, item, kind, session)"""
    time, user, item, kind, session = (np.array(column) for column in zip(*rows, strict=True))
    n = len(rows)
    return EventTable(
        time=time.astype(float),
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        position=np.zeros(n, np.int16),
        kind=kind.astype(np.int8),
        scope=np.full(n, Scope.ITEM, np.int8),
        dwell=np.zeros(n, np.float32),
        session=session.astype(np.int64),
    )


def test_feature_store_counts_decay_with_their_half_life():
    store = FeatureStore(RealtimeFeatures(half_life="1h", item_half_life="1h"), 3, 3)
    store.absorb(
        events(
            [
                (0.0, 1, 2, Kind.DISMISS, 5),
                (0.0, 1, 0, Kind.CLICK, 5),
                (3600.0, 1, 3, Kind.THUMBS_DOWN, 6),
            ]
        ),
        TOPIC_OF,
    )
    negative, positive = store.user_topics(np.array([1, 0]), now=7200.0)
    # topic 1: one negative two hours old (1/4) and one an hour old (1/2)
    np.testing.assert_allclose(negative[0], [0, 0.75, 0], rtol=1e-6)
    np.testing.assert_allclose(positive[0], [0.25, 0, 0], rtol=1e-6)
    assert not negative[1].any()
    rate = store.item_negative_rate(6, now=3600.0)
    assert rate[3] == pytest.approx(1 / 2)  # one negative in one impression, +1 prior
    assert rate[0] == 0


def absorb_with_numpy(store: FeatureStore, table: EventTable, topic_of: np.ndarray) -> None:
    """The feature store's decayed counts as whole-array numpy passes (unique, ``ufunc.at``): the
    reference for its compiled loop."""
    on_item = table.item >= 0
    users, items, times = table.user[on_item], table.item[on_item], table.time[on_item]
    negative = np.isin(table.kind[on_item], REJECTIONS)
    positive = table.kind[on_item] == Kind.CLICK
    if not times.shape[0]:
        return
    reference = float(times.max())
    touched = np.unique(users[negative | positive])
    elapsed = reference - store._user_time[touched]
    factor = np.exp2(-np.maximum(elapsed, 0.0) / store.half_life).astype(np.float32)
    store._negative[touched] *= factor[:, None]
    store._positive[touched] *= factor[:, None]
    store._user_time[touched] = reference
    weight = np.exp2(-np.maximum(reference - times, 0.0) / store.half_life).astype(np.float32)
    topics = topic_of[items]
    np.add.at(store._negative, (users[negative], topics[negative]), weight[negative])
    np.add.at(store._positive, (users[positive], topics[positive]), weight[positive])
    shown = np.unique(items)
    elapsed = reference - store._item_time[shown]
    item_factor = np.exp2(-np.maximum(elapsed, 0.0) / store.item_half_life)
    store._item_negative[shown] *= item_factor
    store._item_shown[shown] *= item_factor
    store._item_time[shown] = reference
    item_weight = np.exp2(-np.maximum(reference - times, 0.0) / store.item_half_life)
    np.add.at(store._item_shown, items, item_weight)
    np.add.at(store._item_negative, items[negative], item_weight[negative])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_feature_store_counts_equal_whole_array_numpy_passes(seed):
    """Random slices of events (repeated users and items, every kind, items outside the catalogue
    grown into) give the same counts as the numpy passes; float32 user counts exactly, float64
    item counts to rounding (numba's and numpy's exp2 may differ in the last bit)."""
    rng = np.random.default_rng(seed)
    spec = RealtimeFeatures(half_life="20m", item_half_life="45m")
    compiled, reference = FeatureStore(spec, 7, 3), FeatureStore(spec, 7, 3)
    start = 0.0
    for _ in range(4):
        n = int(rng.integers(1, 60))
        times = np.sort(start + rng.uniform(0, 900, n))
        start = float(times[-1]) + 1
        table = events(
            list(
                zip(
                    times,
                    rng.integers(0, 7, n),
                    rng.integers(-1, 6, n),
                    rng.integers(0, len(Kind), n),
                    rng.integers(0, 3, n),
                    strict=True,
                )
            )
        )
        compiled.absorb(table, TOPIC_OF)
        size = compiled._item_shown.shape[0]  # the store grew its item arrays to the new ids
        for name in ("_item_negative", "_item_shown", "_item_time"):
            setattr(reference, name, _grown(getattr(reference, name), size))
        absorb_with_numpy(reference, table, TOPIC_OF)
        np.testing.assert_array_equal(compiled._negative, reference._negative)
        np.testing.assert_array_equal(compiled._positive, reference._positive)
        np.testing.assert_array_equal(compiled._user_time, reference._user_time)
        np.testing.assert_array_equal(compiled._item_time, reference._item_time)
        np.testing.assert_allclose(compiled._item_shown, reference._item_shown, rtol=1e-14)
        np.testing.assert_allclose(compiled._item_negative, reference._item_negative, rtol=1e-14)
    assert compiled._negative.any() and compiled._item_shown.any()


def _grown(values: np.ndarray, size: int) -> np.ndarray:
    grown = np.zeros(size)
    grown[: values.shape[0]] = values
    return grown


def test_session_context_is_per_session_and_keeps_the_last_items():
    store = SessionContextStore(SessionContext(), 2, 3)
    store.absorb(events([(1.0, 0, 2, Kind.DISMISS, 7), (2.0, 0, 4, Kind.SKIP, 7)]), TOPIC_OF)
    topics, items = store.context(np.array([0, 0]), np.array([7, 8]))
    np.testing.assert_array_equal(topics, [[0, 1, 0], [0, 0, 0]])  # skips excluded by default
    assert set(items[0]) == {2, -1} and set(items[1]) == {-1}
    store.absorb(events([(3.0, 0, 5, Kind.NOT_INTERESTED, 8)]), TOPIC_OF)  # a new session
    topics, items = store.context(np.array([0]), np.array([8]))
    np.testing.assert_array_equal(topics, [[0, 0, 1]])
    assert set(items[0]) == {5, -1}
    # One slice with two sessions of user 0 (only the later one counts) and one of user 1.
    store.absorb(
        events(
            [
                (4.0, 0, 1, Kind.DISMISS, 8),
                (4.0, 1, 3, Kind.DISMISS, 4),
                (5.0, 0, 2, Kind.DISMISS, 9),
            ]
        ),
        TOPIC_OF,
    )
    topics, items = store.context(np.array([0, 0, 1]), np.array([9, 8, 4]))
    np.testing.assert_array_equal(topics, [[0, 1, 0], [0, 0, 0], [0, 1, 0]])
    assert set(items[0]) == {2, -1} and set(items[1]) == {-1} and set(items[2]) == {3, -1}


def test_signal_scores_demote_rejected_items_and_topics():
    store = SessionContextStore(SessionContext(item_demotion=10, topic_demotion=1), 2, 3)
    store.absorb(events([(1.0, 1, 2, Kind.DISMISS, 3)]), TOPIC_OF)
    catalog = CatalogView(
        n_items=6,
        n_topics=3,
        n_creators=1,
        topic=TOPIC_OF,
        creator=np.zeros(6, np.int32),
        created_at=np.zeros(6),
    )
    requests = Requests(
        times=np.array([5.0, 5.0]), users=np.array([0, 1], np.int32), sessions=np.array([9, 3]), k=2
    )
    view = View(
        now=5.0,
        model=None,
        states={"session_context": store},
        catalog=catalog,
        n_users=2,
        versions={},
    )
    scores = signal_scores(requests, view)
    np.testing.assert_array_equal(scores[0], 0)
    np.testing.assert_array_equal(scores[1], [0, 0, -11, -1, 0, 0])
    assert (
        signal_scores(
            requests, View(now=5.0, model=None, states={}, catalog=catalog, n_users=2, versions={})
        )
        is None
    )


def test_feature_store_forgets_deleted_events_exactly():
    rows = [
        (0.0, 1, 2, Kind.DISMISS, 5),
        (600.0, 1, 0, Kind.CLICK, 5),
        (1800.0, 1, 3, Kind.THUMBS_DOWN, 5),
        (3600.0, 2, 3, Kind.SKIP, 6),
    ]
    spec = RealtimeFeatures(half_life="1h", item_half_life="1h")
    forgetting, never = FeatureStore(spec, 3, 3), FeatureStore(spec, 3, 3)
    forgetting.absorb(events(rows), TOPIC_OF)
    forgetting.forget(events([rows[0], rows[2]]), TOPIC_OF)  # user 1's negatives, deleted
    never.absorb(events([rows[1], rows[3]]), TOPIC_OF)
    for store in (forgetting, never):  # both at the same reference time
        store.absorb(events([(3600.0, 0, 5, Kind.IMPRESSION, 7)]), TOPIC_OF)
    for user in (1, 2):
        ours, theirs = forgetting.user_topics(np.array([user]), 7200.0)
        expected = never.user_topics(np.array([user]), 7200.0)
        np.testing.assert_allclose(ours, expected[0], atol=1e-6)
        np.testing.assert_allclose(theirs, expected[1], atol=1e-6)
    np.testing.assert_allclose(
        forgetting.item_negative_rate(6, 7200.0), never.item_negative_rate(6, 7200.0), atol=1e-9
    )


def test_session_context_forgets_deleted_rejections_of_the_current_session():
    store = SessionContextStore(SessionContext(), 2, 3)
    rows = [(0.0, 1, 2, Kind.DISMISS, 5), (10.0, 1, 4, Kind.DISMISS, 5)]
    store.absorb(events(rows), TOPIC_OF)
    store.forget(events(rows[:1]), TOPIC_OF)
    topics, items = store.context(np.array([1]), np.array([5]))
    assert topics[0].tolist() == [0, 0, 1] and sorted(items[0][items[0] >= 0].tolist()) == [4]


def test_a_profile_published_mid_session_is_served_from_the_users_next_session():
    from sim.scenario.spec import ProfileMemory
    from sim.serving.layers.profile_memory import ActiveProfiles, ProfileSnapshot

    active = ActiveProfiles(ProfileMemory(), n_users=2, n_topics=3)
    snapshot = ProfileSnapshot(
        topics=np.array([[0, 2, 0], [1, 0, 0]], np.uint16),
        items=np.full((2, active.items.shape[1]), -1, np.int32),
        creators=np.full((2, active.creators.shape[1]), -1, np.int32),
    )

    def serve(version, live, users, sessions):
        batch = Requests(np.ones(len(users)), np.array(users, np.int32), np.array(sessions), 5)
        profiles, versions = active.activate(version, live, batch)
        return versions.tolist(), profiles.topics[users].tolist()

    assert serve(0, None, [0, 1], [10, 20]) == ([0, 0], [[0, 0, 0], [0, 0, 0]])
    # version 1 goes live while both sessions go on: neither user sees it yet
    assert serve(1, snapshot, [0, 1], [10, 20]) == ([0, 0], [[0, 0, 0], [0, 0, 0]])
    # user 0 starts a new session: from it, user 0 is served version 1; user 1 is not yet
    assert serve(1, snapshot, [0, 1], [11, 20]) == ([1, 0], [[0, 2, 0], [0, 0, 0]])
