"""The retrieval stage: candidate scoring equals exhaustive scoring on the same items, the index's
sources are disjoint and exactly scored, and recall is measured against brute force; and low-rank
scores equal their dense product with every layer's adjustments."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from policies.builtin import EmbeddingPolicy, serve_scores
from policies.retrieval import CandidateIndex, RecallMeter, RetrievalParams
from policies.signals import LowRankScores, low_rank_passes, signal_scores
from sim.serving.runner import run_scenario
from tests.conftest import tiny

ALL_LAYERS = (
    "stack.layers={retrain: {every: 30m, latency: 2m, compute_time: 5m}, "
    "realtime_features: {latency: 1s}, session_context: {}, profile_memory: {every: 30m}, "
    "bandit: {every: 10m, latency: 10s, implementation: vectorized, ARMS}}"
)


def captured_views(arms: str, monkeypatch) -> list:
    """(requests, view) of late batches of a tiny run with every serving-time layer on."""
    seen = []
    rank = EmbeddingPolicy.rank

    def recording(self, requests, view):
        if view.model is not None and len(requests) >= 3:
            seen.append((requests, copy.deepcopy(view)))
        return rank(self, requests, view)

    monkeypatch.setattr(EmbeddingPolicy, "rank", recording)
    scenario = tiny(ALL_LAYERS.replace("ARMS", arms), "duration=3h")
    run_scenario(scenario)
    assert len(seen) > 20
    return seen[-20:]


@pytest.mark.parametrize("arms", ["learning_policy: thompson", "arms: candidates, candidates: 4"])
def test_ranking_candidates_equals_ranking_every_item_when_all_are_candidates(arms, monkeypatch):
    """The layers' adjustments and the bandit's slot on ``(n, c)`` candidates give the same
    slates as on ``(n, items)`` when the candidates are every item (shuffled, padded with -1)."""
    rng = np.random.default_rng(0)
    for requests, view in captured_views(arms, monkeypatch):
        n, m = len(requests), view.catalog.n_items
        scores = rng.standard_normal((n, m)).astype(np.float32)
        order = np.stack([rng.permutation(m) for _ in range(n)])
        candidates = np.concatenate([order, np.full((n, 3), -1)], axis=1)
        candidate_scores = np.concatenate(
            [np.take_along_axis(scores, order, axis=1), np.full((n, 3), -np.inf, np.float32)],
            axis=1,
        )
        dense = serve_scores(np.random.default_rng(1), scores.copy(), requests, copy.deepcopy(view))
        retrieved = serve_scores(
            np.random.default_rng(1),
            candidate_scores,
            requests,
            copy.deepcopy(view),
            candidates=candidates,
        )
        np.testing.assert_array_equal(dense, retrieved)


@pytest.mark.parametrize("offset", [False, True])
def test_low_rank_scores_equal_dense_scores_with_every_adjustment(offset, monkeypatch):
    """Scores handed over as ``users @ items`` (+ a per-item offset) are multiplied out together
    with the layers' adjustments; the result equals the dense scores plus those adjustments."""
    rng = np.random.default_rng(0)
    for requests, view in captured_views("learning_policy: thompson", monkeypatch):
        n, m = len(requests), view.catalog.n_items
        users = rng.standard_normal((n, 5)).astype(np.float32)
        items = rng.standard_normal((5, m)).astype(np.float32)
        item_offset = rng.standard_normal(m).astype(np.float32) if offset else None
        dense = users @ items + (item_offset if offset else 0)
        expected = dense + signal_scores(requests, view)
        low_rank = LowRankScores(users, items, item_offset)
        [(rows, got)] = low_rank_passes(low_rank, requests, view, None, n)
        assert rows == slice(0, n)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(
            serve_scores(np.random.default_rng(1), low_rank, requests, copy.deepcopy(view)),
            serve_scores(np.random.default_rng(1), dense, requests, copy.deepcopy(view)),
        )


def test_serving_in_passes_equals_serving_in_one(monkeypatch):
    """A window larger than ``PASS_FLOATS`` is served in passes of consecutive requests; the slates
    and the bandit's remembered decisions are those of one pass (Thompson draws are taken from
    the same stream in the same order)."""
    rng = np.random.default_rng(0)
    for requests, view in captured_views("learning_policy: thompson", monkeypatch):
        n, m = len(requests), view.catalog.n_items
        low_rank = LowRankScores(
            rng.standard_normal((n, 5)).astype(np.float32),
            rng.standard_normal((5, m)).astype(np.float32),
            rng.standard_normal(m).astype(np.float32),
        )
        one_view, passes_view = copy.deepcopy(view), copy.deepcopy(view)
        one = serve_scores(np.random.default_rng(1), low_rank, requests, one_view)
        monkeypatch.setattr("policies.builtin.PASS_FLOATS", m + 1)  # one request a pass
        in_passes = serve_scores(np.random.default_rng(1), low_rank, requests, passes_view)
        monkeypatch.undo()
        np.testing.assert_array_equal(one, in_passes)
        remembered = [
            np.concatenate(parts)
            for v in (one_view, passes_view)
            for parts in zip(*v.states["bandit"]._pending, strict=True)
        ]
        for kept_once, kept_in_passes in zip(remembered[:4], remembered[4:], strict=True):
            np.testing.assert_array_equal(kept_once, kept_in_passes)


def clustered_model(items: int = 6000, dim: int = 9, topics: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, topics, items)
    centres = rng.standard_normal((topics, dim)) * 2
    items_t = (centres[topic] + rng.standard_normal((items, dim))).T.astype(np.float32)
    items_t[-1] = rng.standard_normal(items) * 0.3  # the popularity row
    users = np.ones((500, dim), np.float32)
    users[:, :-1] = (centres[rng.integers(0, topics, 500)] + rng.standard_normal((500, dim)))[
        :, :-1
    ]
    return np.ascontiguousarray(items_t), topic, users


def test_candidates_are_disjoint_sources_scored_exactly():
    items_t, topic, users = clustered_model()
    params = RetrievalParams(neighbours=100, popular=20, per_topic=2, recent=30)
    index = CandidateIndex(items_t, topic, items_t[-1], params)
    n_items = items_t.shape[1] + 40  # 40 items arrived after the fit
    candidates, scores = index.search(users, n_items)
    assert candidates.shape == scores.shape == (500, 100 + index.shared.shape[0] + 30)
    for row in candidates[:50]:
        assert np.unique(row).shape[0] == row.shape[0]  # no item twice
    popular = np.argsort(-items_t[-1])[:20]
    assert set(popular) <= set(index.shared)
    for t in range(12):  # each topic's two most popular items are shared
        members = np.flatnonzero(topic == t)
        assert set(members[np.argsort(-items_t[-1][members])[:2]]) <= set(index.shared)
    newest = np.arange(n_items - 30, n_items)
    np.testing.assert_array_equal(candidates[:, -30:], np.broadcast_to(newest, (500, 30)))
    assert (scores[:, -30:] == 0).all()  # unseen by the model, as in exhaustive scoring
    fitted = candidates[:, :-30]
    found = fitted >= 0  # an inverted file may find fewer neighbours than asked: -1, -inf
    assert np.isneginf(scores[:, :-30][~found]).all()
    exact = np.einsum("nd,dnc->nc", users, items_t[:, np.maximum(fitted, 0)])
    np.testing.assert_allclose(scores[:, :-30][found], exact[found], rtol=1e-4, atol=1e-4)


def brute_force_recall(users, items_t, candidates, k):
    exact = users @ items_t
    found = 0.0
    for row in range(users.shape[0]):
        best = set(np.argsort(-exact[row], kind="stable")[:k])
        kept = candidates[row][candidates[row] >= 0]
        kept = kept[kept < items_t.shape[1]]
        top = kept[np.argsort(-exact[row][kept], kind="stable")[:k]]
        found += len(best & set(top)) / k
    return found / users.shape[0]


@pytest.mark.parametrize("nprobe", [1, 4, 1000])
def test_recall_meter_agrees_with_brute_force(nprobe):
    items_t, topic, users = clustered_model()
    params = RetrievalParams(neighbours=50, popular=0, per_topic=0, recent=0, nprobe=nprobe)
    index = CandidateIndex(items_t, topic, items_t[-1], params)
    candidates, scores = index.search(users, items_t.shape[1])
    meter = RecallMeter(every=1)
    assert meter.due()
    meter.add(users @ items_t, scores, 10)
    measured = meter.summary()["recall_at_k"]
    assert measured == pytest.approx(brute_force_recall(users, items_t, candidates, 10), abs=0.01)
    if nprobe == 1000:  # every list searched: exact
        assert measured == 1.0
    if nprobe == 1:
        assert measured < 1.0  # an approximation, and the meter sees it


def test_a_run_with_retrieval_reports_its_recall():
    scenario = tiny(
        "stack.policy.params.retrieval={neighbours: 40, popular: 10, per_topic: 1, "
        "recent: 10, recall_every: 1}",
        "world.catalog.items=3000",
    )
    summary = run_scenario(scenario).summary
    retrieval = summary["policy_diagnostics"]["retrieval"]
    assert retrieval["recall_requests"] > 100
    assert 0.5 <= retrieval["recall_at_k"] <= 1.0
    assert summary["impressions"] > 0


def test_rows_the_probed_lists_leave_short_of_a_slate_are_searched_exhaustively():
    items_t, topic, users = clustered_model()
    params = RetrievalParams(neighbours=60, popular=0, per_topic=0, recent=0, nprobe=1)
    index = CandidateIndex(items_t, topic, items_t[-1], params)
    few, _ = index.search(users, items_t.shape[1])
    assert ((few >= 0).sum(axis=1) < 60).any()  # one list often holds fewer than 60
    enough, _ = index.search(users, items_t.shape[1], at_least=60)
    assert ((enough >= 0).sum(axis=1) == 60).all()
