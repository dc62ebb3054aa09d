"""Built-in policies and the slate check at the serving boundary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import available, make_policy, top_k
from policies.kernels import best_member, uniform_fill
from sim.domain import CatalogView, EventTable, Kind, Requests, TrainingData, View
from sim.errors import PolicyError
from sim.serving.stack import check_slates

N_ITEMS, N_USERS = 60, 30


def catalog(n_items=N_ITEMS):
    return CatalogView(
        n_items=n_items,
        n_topics=2,
        n_creators=3,
        topic=(np.arange(n_items) % 2).astype(np.int16),
        creator=(np.arange(n_items) % 3).astype(np.int32),
        created_at=np.zeros(n_items),
    )


def requests(n=8, k=5):
    return Requests(
        times=np.linspace(0, 1, n),
        users=np.arange(n, dtype=np.int32),
        sessions=np.arange(n, dtype=np.int64),
        k=k,
    )


def events(user, item, kind, time=None):
    n = len(user)
    return EventTable(
        time=np.zeros(n) if time is None else np.asarray(time, float),
        user=np.asarray(user, np.int32),
        item=np.asarray(item, np.int32),
        position=np.zeros(n, np.int16),
        kind=np.asarray(kind, np.int8),
        scope=np.zeros(n, np.int8),
        dwell=np.zeros(n, np.float32),
        session=np.zeros(n, np.int64),
    )


def view(model=None, n_items=N_ITEMS, **states):
    return View(
        now=10.0,
        model=model,
        states={"retrain": model, **states},
        catalog=catalog(n_items),
        n_users=N_USERS,
        versions={},
    )


def fit(policy, table):
    return policy.fit(
        TrainingData(events=table, catalog=catalog(), n_users=N_USERS, now=10.0, horizon=10.0)
    )


@pytest.mark.parametrize("name", ["random", "popular", "embedding", "torch_ranker"])
def test_builtins_return_distinct_live_items_with_and_without_a_model(name):
    policy = make_policy(name, {}, seed=1)
    slates = policy.rank(requests(), view())
    check_slates(slates, 8, 5, N_ITEMS, name, 0.0)
    if hasattr(policy, "fit"):
        model = fit(policy, events([0, 1, 2], [3, 4, 5], [Kind.CLICK] * 3))
        check_slates(policy.rank(requests(), view(model)), 8, 5, N_ITEMS, name, 0.0)
        # items that arrived after the fit are live and rankable
        check_slates(
            policy.rank(requests(), view(model, N_ITEMS + 7)), 8, 5, N_ITEMS + 7, name, 0.0
        )


def test_popular_ranks_by_recent_clicks():
    policy = make_policy("popular", {"half_life": "1h"}, seed=0)
    clicks = events(user=[0] * 6, item=[7, 7, 7, 9, 9, 2], kind=[Kind.CLICK] * 6)
    slates = policy.rank(requests(k=3), view(fit(policy, clicks)))
    np.testing.assert_array_equal(slates[0], [7, 9, 2])


def test_popular_discounts_old_clicks():
    policy = make_policy("popular", {"half_life": "1s"}, seed=0)
    table = events(user=[0, 0, 0], item=[4, 4, 5], kind=[Kind.CLICK] * 3, time=[0.0, 0.0, 9.9])
    assert policy.rank(requests(k=1), view(fit(policy, table)))[0, 0] == 5


def test_embedding_learns_who_likes_which_topic():
    rng = np.random.default_rng(0)
    users = rng.integers(0, N_USERS, 3000)
    items = rng.integers(0, N_ITEMS, 3000)
    likes = (items % 2) == (users % 2)  # even users like even items
    kind = np.where(likes, Kind.CLICK, Kind.DISMISS)
    policy = make_policy("embedding", {"dim": 4}, seed=0)
    model = fit(policy, events(users, items, kind))
    slates = policy.rank(requests(n=N_USERS, k=10), view(model))
    match = (slates % 2) == (np.arange(N_USERS)[:, None] % 2)
    assert match.mean() > 0.95


def test_registry_lists_builtins():
    assert {"random", "popular", "embedding"} <= set(available())


def test_top_k_orders_best_first():
    np.testing.assert_array_equal(top_k(np.array([[1.0, 5.0, 3.0, 4.0]]), 3), [[1, 3, 2]])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 4),
    items=st.integers(1, 3000),
    k=st.integers(1, 40),
    levels=st.sampled_from([2, 7, 1000, 0]),  # 0: continuous scores; else that many values
    seed=st.integers(0, 2**32 - 1),
)
def test_top_k_equals_a_stable_full_sort(rows, items, k, levels, seed):
    """Exact with and without the block prefilter (thousands of items, or fewer than 4k blocks),
    with ties (equal scores keep column order), -inf and a ragged tail after the last block."""
    rng = np.random.default_rng(seed)
    k = min(k, items)
    if levels:
        scores = rng.integers(0, levels, (rows, items)).astype(np.float32)
    else:
        scores = rng.standard_normal((rows, items)).astype(np.float32)
    scores[:, rng.integers(0, items, 3)] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k(scores, k), expected)


def test_top_k_refuses_nan_in_any_block_or_the_tail():
    for column in (0, 64 * 50 + 3):  # inside a block; in the ragged tail
        scores = np.zeros((2, 64 * 50 + 10), np.float32)
        scores[1, column] = np.nan
        with pytest.raises(ValueError, match="scores hold NaN for 1 request"):
            top_k(scores, 10)


def splitmix64(seed: int, count: int) -> list[int]:
    """The reference generator in plain Python integers (Steele, Lea and Flood 2014)."""
    mask, state, out = 2**64 - 1, seed, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_uniform_fill_is_splitmix64_and_uniform():
    small = np.empty((3, 4), np.float32)
    uniform_fill(small, 2**63 + 5)
    expected = np.array([z >> 40 for z in splitmix64(2**63 + 5, 12)]) / 2**24
    np.testing.assert_array_equal(small.ravel(), expected.astype(np.float32))

    values = np.empty((1000, 1000), np.float32)
    uniform_fill(values, 7)
    ordered = np.sort(values.ravel().astype(np.float64))
    n = ordered.shape[0]
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - ordered, ordered - np.arange(n) / n))
    assert ks < 1.95 / np.sqrt(n)  # Kolmogorov-Smirnov against U(0, 1) at the 0.1% level
    other = np.empty_like(values)
    uniform_fill(other, 8)
    assert abs(np.corrcoef(values.ravel(), other.ravel())[0, 1]) < 0.005  # 5 sd at n = 1e6
    again = np.empty_like(values)
    uniform_fill(again, 7)
    np.testing.assert_array_equal(values, again)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), levels=st.sampled_from([3, 0]))
def test_best_member_is_the_first_best_item_of_the_chosen_group(seed, levels):
    rng = np.random.default_rng(seed)
    n, m, groups = 20, 50, 6
    scores = (rng.integers(0, levels, (n, m)) if levels else rng.standard_normal((n, m))).astype(
        np.float32
    )
    members = np.full((groups, 20), -1, np.int64)
    for group in range(groups - 1):  # the last group has no member
        ids = np.sort(rng.choice(m, rng.integers(1, 21), replace=False))
        members[group, : ids.shape[0]] = ids
    chosen = rng.integers(0, groups, n)
    expected = []
    for row, group in enumerate(chosen):
        ids = members[group][members[group] >= 0]
        expected.append(ids[np.argmax(scores[row, ids])] if ids.shape[0] else -1)
    np.testing.assert_array_equal(best_member(scores, members, chosen), expected)


@pytest.mark.parametrize(
    ("slates", "message"),
    [
        (np.zeros((2, 3), np.int64), "returned shape (2, 3), expected (2, 2)"),
        (np.array([[0.0, 1.0], [2.0, 3.0]]), "returned dtype float64"),
        (np.array([[0, 10], [1, 2]]), "returned item id 10, live ids are 0..9"),
        (np.array([[0, 1], [-1, 2]]), "returned item id -1"),
        (np.array([[0, 1], [3, 3]]), "slate 1 repeats an item: [3, 3]"),
    ],
)
def test_slate_check_names_policy_time_and_problem(slates, message):
    with pytest.raises(PolicyError) as caught:
        check_slates(slates, 2, 2, 10, "mine", 3600.0)
    assert "policy 'mine' rank at simulated time 60m" in str(caught.value)
    assert message in str(caught.value)


def test_sample_distinct_is_uniform_without_replacement():
    from policies.builtin import sample_distinct

    uniforms = np.random.default_rng(0).random((40_000, 4))
    picks = sample_distinct(uniforms, 7)
    assert (np.sort(picks, axis=1)[:, 1:] != np.sort(picks, axis=1)[:, :-1]).all()
    assert picks.min() == 0 and picks.max() == 6
    for column in picks.T:  # every position is uniform over the 7 ids
        np.testing.assert_allclose(np.bincount(column, minlength=7) / len(column), 1 / 7, atol=0.01)


def test_retrain_and_refresh_in_chunks_equal_one_pass(monkeypatch):
    """The per-event passes run CHUNK_EVENTS at a time to bound memory; the results do not
    depend on the chunk size (up to float summation order in the retrain's pair sums)."""
    import policies.builtin as builtin
    from sim.domain import RefreshData

    rng = np.random.default_rng(3)
    n = 5000
    table = events(
        rng.integers(0, N_USERS, n),
        rng.integers(0, N_ITEMS, n),
        rng.choice([Kind.CLICK, Kind.SKIP, Kind.DISMISS, Kind.IMPRESSION], n),
        time=np.sort(rng.uniform(0, 10 * 86400, n)),
    )

    def refresh(model):
        data = RefreshData(
            events=table,
            catalog=catalog(),
            n_users=N_USERS,
            now=10 * 86400.0,
            horizon=10 * 86400.0,
            model=model,
            windows=((7 * 86400.0, 0.7), (30 * 86400.0, 0.3)),
            negative_weight=1.0,
        )
        return make_policy("embedding", {"dim": 4}, seed=0).refresh(data)

    whole_model = fit(make_policy("embedding", {"dim": 4}, seed=0), table)
    whole_refresh = refresh(whole_model)
    monkeypatch.setattr(builtin, "CHUNK_EVENTS", 333)
    model = fit(make_policy("embedding", {"dim": 4}, seed=0), table)
    np.testing.assert_allclose(model.items_t, whole_model.items_t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.users, whole_model.users, rtol=1e-4, atol=1e-5)
    # The fold-in adds in event order whatever the chunks: the same sums for the same model.
    refreshed = refresh(whole_model)
    np.testing.assert_array_equal(refreshed.users, whole_refresh.users)
    assert np.abs(refreshed.users[:, :-1]).max() > 0


def test_incremental_near_line_refresh_equals_a_full_one():
    from sim.domain import RefreshData

    rng = np.random.default_rng(2)
    n = 4000
    times = np.sort(rng.uniform(0, 40 * 86400, n))
    table = events(
        rng.integers(0, N_USERS, n),
        rng.integers(0, N_ITEMS, n),
        rng.choice([Kind.CLICK, Kind.SKIP, Kind.DISMISS], n),
        time=times,
    )
    policy = make_policy("embedding", {"dim": 4}, seed=0)
    model = fit(policy, table)
    windows = ((7 * 86400.0, 0.5), (30 * 86400.0, 0.3), (180 * 86400.0, 0.2))

    def refresh(target, horizon):
        visible = table.slice(0, int(np.searchsorted(times, horizon)))
        return target.refresh(
            RefreshData(
                events=visible,
                catalog=catalog(),
                n_users=N_USERS,
                now=horizon,
                horizon=horizon,
                model=model,
                windows=windows,
                negative_weight=1.0,
            )
        )

    incremental = make_policy("embedding", {"dim": 4}, seed=0)
    for horizon in np.linspace(86400, 40 * 86400, 25):  # windows fill up, then events age out
        kept = refresh(incremental, horizon)
        fresh = refresh(make_policy("embedding", {"dim": 4}, seed=0), horizon)
        np.testing.assert_allclose(kept.users, fresh.users, rtol=1e-5, atol=1e-6)
    assert np.abs(kept.users[:, :-1]).max() > 0
