"""The bandit layer: the vectorized path agrees with MABWiser, and exploration learns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from policies.bandit import BanditKind, BanditState
from policies.builtin import RandomPolicy, _cold_start
from sim.domain import EventTable, Kind, Scope
from sim.measuring.metrics import measure
from sim.scenario.spec import Bandit
from sim.serving.runner import run_scenario
from tests.conftest import tiny

ARMS = 40


def learned_pair(policy: str, **fields):
    rng = np.random.default_rng(5)
    states = [
        BanditState(Bandit(learning_policy=policy, implementation=impl, **fields), ARMS, seed=1)
        for impl in ("mabwiser", "vectorized")
    ]
    for _ in range(3):  # fit, then partial fits, in batches
        arms = rng.integers(0, ARMS, 500)
        rewards = (rng.random(500) < (arms % 4) / 4).astype(float)
        for state in states:
            state.learn(arms, rewards)
    return states


def test_ucb1_expectations_equal_mabwiser():
    mabwiser, vectorized = learned_pair("ucb1", alpha=1.3)
    expected = mabwiser._mab.predict_expectations()
    np.testing.assert_allclose(vectorized.expectations(1)[0], [expected[a] for a in range(ARMS)])


def test_thompson_posteriors_equal_mabwiser():
    mabwiser, vectorized = learned_pair("thompson")
    inner = mabwiser._mab._imp
    np.testing.assert_array_equal(
        vectorized.successes + 1, [inner.arm_to_success_count[a] for a in range(ARMS)]
    )
    np.testing.assert_array_equal(
        vectorized.trials - vectorized.successes + 1,
        [inner.arm_to_fail_count[a] for a in range(ARMS)],
    )


def test_epsilon_greedy_means_equal_mabwiser_and_exploration_rate_holds():
    mabwiser, vectorized = learned_pair("epsilon_greedy", epsilon=0.2)
    inner = mabwiser._mab._imp.arm_to_expectation
    means = vectorized.successes / vectorized.trials
    np.testing.assert_allclose(means, [inner[a] for a in range(ARMS)])
    chosen = vectorized.choose(20_000)
    best = np.flatnonzero(means == means.max())
    # greedy picks plus the exploring 20% that land on a best arm by chance
    expected = 0.8 + 0.2 * len(best) / ARMS
    assert np.isin(chosen, best).mean() == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("implementation", ["mabwiser", "vectorized"])
@pytest.mark.parametrize("policy", ["thompson", "ucb1", "epsilon_greedy"])
def test_choices_concentrate_on_the_best_arm_as_uncertainty_drops(policy, implementation):
    rng = np.random.default_rng(0)
    click_rate = np.full(8, 0.1)
    click_rate[5] = 0.5
    state = BanditState(Bandit(learning_policy=policy, implementation=implementation), 8, seed=3)
    share_of_best = []
    for _ in range(30):  # 30 batched updates of 200 decisions
        arms = state.choose(200)
        share_of_best.append(float((arms == 5).mean()))
        state.learn(arms, (rng.random(200) < click_rate[arms]).astype(float))
    assert share_of_best[0] < 0.4
    assert np.mean(share_of_best[-5:]) > 0.8


@pytest.mark.parametrize("implementation", ["mabwiser", "vectorized"])
def test_the_bandit_fills_its_slot_and_learns_on_its_cadence(implementation):
    result = run_scenario(
        tiny(
            "stack.layers.bandit={every: 10m, latency: 1m, position: 2, "
            f"implementation: {implementation}}}",
        )
    )
    history = [v for v in result.versions if v.layer == "bandit"]
    assert len(history) >= 20
    assert all(v.horizon == v.triggered_at - 60 for v in history)
    served = result.events.versions["bandit"]
    assert served.max() == len(history) or served.max() == len(history) - 1


def test_feedback_is_matched_to_the_decision_that_was_served():
    state = BanditState(Bandit(learning_policy="linucb", arms="candidates"), 5, seed=0)
    state.remember(
        np.array([1.0, 1.0, 2.0]),
        np.array([7, 8, 7]),
        np.array([4, 0, 2]),
        np.arange(15.0).reshape(3, 5),
    )
    state.remember(np.array([3.0]), np.array([9]), np.array([1]), np.ones((1, 5)))
    found, arms, contexts = state.recall(np.array([2.0, 1.0, 5.0]), np.array([7, 8, 7]), 2.5)
    np.testing.assert_array_equal(found, [True, True, False])
    np.testing.assert_array_equal(arms, [2, 0])
    np.testing.assert_array_equal(contexts[0], np.arange(10.0, 15.0))
    found, arms, _ = state.recall(np.array([3.0, 1.0]), np.array([9, 7]), 3.5)
    np.testing.assert_array_equal(found, [True, False])  # the old decisions were forgotten
    np.testing.assert_array_equal(arms, [1])


def test_the_reward_is_the_feedback_on_the_bandits_own_slot():
    """A bandit at position 2 learns whether *its* item was clicked, not the policy's item in
    another slot of the same slate."""
    spec = Bandit(arms="candidates", candidates=3, position=2, implementation="vectorized")
    kind = BanditKind(spec, catalog=lambda: None, seed=0)
    state = kind.initial_state()
    # user 7 at t=1 was served arm 0, user 8 at t=2 arm 1
    state.remember(np.array([1.0, 2.0]), np.array([7, 8]), np.array([0, 1]), np.zeros((2, 0)))
    # user 7 clicked slot 0 and skipped the bandit's slot; user 8 the reverse
    events = EventTable(
        time=np.array([1.0, 1.0, 2.0, 2.0]),
        user=np.array([7, 7, 8, 8], np.int32),
        item=np.array([10, 11, 12, 13], np.int32),
        position=np.array([0, 2, 0, 2], np.int16),
        kind=np.array([Kind.CLICK, Kind.SKIP, Kind.SKIP, Kind.CLICK], np.int8),
        scope=np.full(4, Scope.ITEM, np.int8),
        dwell=np.zeros(4, np.float32),
        session=np.array([1, 1, 2, 2], np.int64),
    )
    np.testing.assert_array_equal(kind.reflected(state, events), [False, True, False, True])
    kind.absorb(state, events)
    np.testing.assert_array_equal(state.trials, [1, 1, 0], err_msg="trials per arm")
    np.testing.assert_array_equal(state.successes, [0, 1, 0], err_msg="clicks per arm")


def test_linucb_over_candidates_learns_to_trust_the_rankers_top_item():
    result = run_scenario(
        tiny(
            "stack.layers.bandit={every: 10m, latency: 1m, arms: candidates, candidates: 4, "
            "learning_policy: linucb}",
            "duration=8h",
        )
    )
    bandit = result.summary["layers"]["bandit"]
    trials, rates = np.array(bandit["arm_trials"]), np.array(bandit["arm_click_rate"])
    assert trials.sum() > 2000  # every served decision met its feedback
    assert rates[0] > rates[3]  # the ranker's first candidate is clicked more than its fourth
    assert trials[0] == trials.max()  # and the bandit learned to pick it most


def test_linucb_needs_mabwiser():
    import pytest as _pytest

    from sim.errors import ScenarioError

    with _pytest.raises(ScenarioError, match="linucb has no vectorized implementation"):
        tiny("stack.layers.bandit={learning_policy: linucb, implementation: vectorized}")


def test_a_topic_arm_gets_the_policys_best_item_of_that_topic():
    from policies.bandit import _topic_picks

    rng = np.random.default_rng(3)
    n_topics, n_items = 6, 200
    topic = rng.integers(0, n_topics - 1, n_items).astype(np.int16)  # the last topic is empty
    catalog = _catalog(topic, n_topics)
    state = BanditState(Bandit(learning_policy="epsilon_greedy", epsilon=1.0), n_topics, seed=2)
    scores = rng.normal(size=(300, n_items)).astype(np.float32)
    scores[0] = -np.inf  # nothing to prefer: the topic's first item, as an argmax would
    picked, arms, _ = _topic_picks(state, scores, catalog, None)
    assert set(arms) == set(range(n_topics))
    for row, (arm, item) in enumerate(zip(arms, picked, strict=True)):
        members = np.flatnonzero(topic == arm)
        expected = members[np.argmax(scores[row, members])] if members.size else -1
        assert item == expected


class NeverPlaces(RandomPolicy):
    """A policy that ranks without ever serving through the bandit's slot."""

    def rank(self, requests, view):
        return _cold_start(self._rng, requests, view)


def test_a_bandit_over_random_places_items_and_absorbs_only_from_updates_that_learned():
    result = run_scenario(
        tiny(
            "stack.policy=random",
            "stack.layers.bandit={every: 1m}",
            "metrics.propagation_kinds=[skip, short_dwell, dismiss, not_interested]",
        )
    )
    bandit = result.summary["layers"]["bandit"]
    assert sum(bandit["arm_trials"]) > 1000
    assert not any(note.startswith("layer 'bandit'") for note in result.summary["notes"])
    versions = [v for v in result.versions if v.layer == "bandit"]
    learned = {v.live_at for v in versions if v.changed == "all"}
    assert learned and all(v.changed in ("all", "none") for v in versions)
    table = measure(result).tables["propagation"].to_pandas()
    absorbed = table[table.absorbed]
    assert len(absorbed) > 100
    # only feedback on the slot it fills, from an update that learned
    assert (result.events.position[absorbed.event] == 0).all()
    assert set(absorbed.time + absorbed.delay_seconds) <= learned


def test_a_bandit_the_policy_never_lets_place_an_item_is_noted_and_absorbs_nothing():
    result = run_scenario(
        tiny(
            "stack.policy={name: 'tests.test_bandit:NeverPlaces'}",
            "stack.layers.bandit={every: 10m}",
        )
    )
    (note,) = [note for note in result.summary["notes"] if note.startswith("layer 'bandit'")]
    assert note == (
        "layer 'bandit' published 24 versions while measuring and none changed what any user is "
        "served: it never placed an item (the policy does not serve through the bandit)"
    )
    assert all(v.changed == "none" for v in result.versions if v.layer == "bandit")
    assert measure(result).scalars["absorption.bandit.absorbed_share"] == 0
    assert sum(result.summary["layers"]["bandit"]["arm_trials"]) == 0


def test_decisions_still_waiting_for_feedback_are_reported_not_dropped():
    result = run_scenario(tiny("stack.layers.bandit={every: 30m, latency: 5m, position: 1}"))
    bandit = result.summary["layers"]["bandit"]
    pending = bandit["pending_decisions"]
    assert pending > 0 and sum(bandit["arm_pending"]) == pending
    # every request measured is a decision (the bandit serves from the warm-up's end), and
    # every decision a trial or pending
    assert bandit["decisions"] == result.summary["requests"]
    assert bandit["decisions"] == sum(bandit["arm_trials"]) + pending


def vectorized_state(policy: str, successes, trials, **fields) -> BanditState:
    """A vectorized bandit with the given per-arm counts, as if it had learned them."""
    state = BanditState(
        Bandit(learning_policy=policy, implementation="vectorized", **fields), len(trials), seed=4
    )
    state.successes, state.trials = np.array(successes, float), np.array(trials, float)
    return state


def test_thompson_samples_each_arm_from_its_beta_posterior():
    state = vectorized_state("thompson", [2, 0, 9], [10, 0, 10])
    samples = state.expectations(40_000)
    a, b = np.array([3.0, 1.0, 10.0]), np.array([9.0, 1.0, 2.0])  # successes + 1, failures + 1
    mean, variance = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    standard_error = np.sqrt(variance / samples.shape[0])
    assert np.all(np.abs(samples.mean(axis=0) - mean) < 4 * standard_error)
    np.testing.assert_allclose(samples.var(axis=0), variance, rtol=0.05)


def _dirty_small_blocks():
    """Free a few small arrays of 7s: numpy reuses such blocks, so an entry the code under test
    leaves unset (a ``where`` without ``out``) reads 7, not a lucky 0."""
    junk = [np.full(3, 7.0) for _ in range(4)]
    del junk


def test_greedy_means_are_the_click_rates_and_zero_for_an_untried_arm():
    state = vectorized_state("epsilon_greedy", [0, 1, 1], [0, 1, 4], epsilon=0.0)
    _dirty_small_blocks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 for the untried arm is never computed
        np.testing.assert_array_equal(state.expectations(2), [[0.0, 1.0, 0.25]] * 2)


# with one trial in all, the untried arm's bonus is 0/0 (masked to inf): numpy warns
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")
def test_ucb1_bonus_is_alpha_sqrt_two_log_total_over_trials_and_untried_arms_come_first():
    # one trial in all: log(1) = 0, no bonus yet
    state = vectorized_state("ucb1", [1, 0], [1, 0], alpha=1.3)
    assert state.expectations(1).tolist() == [[1.0, np.inf]]
    state = vectorized_state("ucb1", [1, 0], [3, 0], alpha=1.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the untried arm's division by zero is expected
        values = state.expectations(1)[0]
    assert values[0] == pytest.approx(1 / 3 + 1.3 * np.sqrt(2 * np.log(3) / 3), rel=1e-12)
    assert values[1] == np.inf


def test_epsilon_one_explores_every_arm_uniformly():
    state = vectorized_state("epsilon_greedy", [5, 0, 0, 0], [5, 1, 1, 1], epsilon=1.0)
    shares = np.bincount(state.choose(8_000), minlength=4) / 8_000
    np.testing.assert_allclose(shares, 0.25, atol=0.025)  # 5 standard errors


def test_linucb_over_topics_is_given_the_policys_best_score_per_topic():
    from policies.bandit import _topic_picks

    rng = np.random.default_rng(8)
    n_topics, n_items = 4, 30
    topic = rng.integers(0, n_topics - 1, n_items).astype(np.int16)  # the last topic is empty
    catalog = _catalog(topic, n_topics)
    state = BanditState(Bandit(learning_policy="linucb"), n_topics, seed=2)
    scores = rng.normal(size=(5, n_items))
    _, _, contexts = _topic_picks(state, scores, catalog, None)
    for t in range(n_topics - 1):
        np.testing.assert_array_equal(contexts[:, t], scores[:, topic == t].max(axis=1))
    np.testing.assert_array_equal(contexts[:, n_topics - 1], 0.0)


def _catalog(topic: np.ndarray, n_topics: int):
    from sim.domain import CatalogView

    return CatalogView(
        n_items=topic.shape[0],
        n_topics=n_topics,
        n_creators=1,
        topic=topic.astype(np.int16),
        creator=np.zeros(topic.shape[0], np.int32),
        created_at=np.zeros(topic.shape[0]),
    )


def test_topic_arms_over_retrieved_candidates_pick_the_best_candidate_of_the_topic():
    from policies.bandit import _topic_picks

    rng = np.random.default_rng(11)
    n, c, n_topics = 300, 6, 5
    topic = rng.integers(0, n_topics - 1, 40)  # the last topic has no item
    topic[:2] = [0, 1]
    candidates = rng.integers(0, 40, (n, c))
    candidates[rng.random((n, c)) < 0.3] = -1  # padding of a short retrieval
    scores = rng.normal(size=(n, c)) + 3.0 * (candidates < 0)  # padding scores high: never picked
    linucb = BanditState(Bandit(learning_policy="linucb"), n_topics, seed=2)
    for policy, state in [
        (
            "epsilon_greedy",
            BanditState(Bandit(learning_policy="epsilon_greedy", epsilon=1.0), 5, 2),
        ),
        ("linucb", linucb),
        ("linucb", linucb),  # again, once it has learned: it decides from the contexts
    ]:
        picked, arms, contexts = _topic_picks(state, scores, _catalog(topic, n_topics), candidates)
        state.learn(arms, rng.random(n).round(), contexts)
        assert len(set(arms)) > 1
        for row in range(n):
            real = candidates[row] >= 0
            of_topic = [
                real & (topic[np.maximum(candidates[row], 0)] == t) for t in range(n_topics)
            ]
            chosen = of_topic[arms[row]]
            best = candidates[row][chosen][np.argmax(scores[row][chosen])] if chosen.any() else -1
            assert picked[row] == best
            if policy == "linucb":  # the best candidate's score per topic, 0 where none is one
                expected = [scores[row][m].max() if m.any() else 0.0 for m in of_topic]
                np.testing.assert_array_equal(contexts[row], expected)
            else:
                assert contexts.shape == (n, 0)


def test_linucb_over_topics_decides_from_the_contexts_once_it_has_learned():
    from policies.bandit import _topic_picks

    rng = np.random.default_rng(9)
    topic = np.array([0, 0, 1, 2])
    catalog = _catalog(topic, 3)
    state = BanditState(Bandit(learning_policy="linucb", alpha=0.0), 3, seed=2)
    scores = rng.normal(size=(400, 4))
    _, arms, contexts = _topic_picks(state, scores, catalog, None)
    # clicked exactly when the chosen topic's context is the best: LinUCB learns to follow it
    rewards = (contexts[np.arange(400), arms] == contexts.max(axis=1)).astype(float)
    state.learn(arms, rewards, contexts)
    _, arms, contexts = _topic_picks(state, scores, catalog, None)
    follows = contexts[np.arange(400), arms] == contexts.max(axis=1)
    assert follows.mean() > 0.8  # against 1/3 by chance (0.925 measured)


def test_the_run_summary_describes_trials_rates_and_pending_decisions_as_integers():
    state = vectorized_state("thompson", [1, 1, 0], [1, 3, 0])
    state.remember(np.array([5.0, 6.0]), np.array([3, 4]), np.array([2, 2]), np.zeros((2, 0)))
    _dirty_small_blocks()
    described = state.describe()
    assert described == {
        "arms": "topics",
        "decisions": 2,
        "arm_trials": [1, 3, 0],
        "arm_click_rate": [1.0, 0.333333, 0.0],
        "arm_pending": [0, 0, 2],
        "pending_decisions": 2,
    }
    assert all(type(x) is int for x in described["arm_trials"] + described["arm_pending"])
    kind = BanditKind(Bandit(), catalog=lambda: None, seed=0)
    assert kind.why_unchanged(state) == "no feedback on an item it placed arrived"


def test_feedback_after_every_remembered_decision_awaits_nothing():
    state = BanditState(Bandit(), 3, seed=0)
    state.remember(np.array([1.0, 2.0]), np.array([0, 1]), np.array([2, 0]), np.zeros((2, 0)))
    awaited = state.awaits(np.array([1.0, 2.0, 3.0, 2.0]), np.array([0, 1, 5, 9]))
    np.testing.assert_array_equal(awaited, [True, True, False, False])


def test_an_empty_slot_is_no_feedback_on_an_item_the_bandit_placed():
    spec = Bandit(arms="candidates", candidates=3, position=1, implementation="vectorized")
    kind = BanditKind(spec, catalog=lambda: None, seed=0)
    state = kind.initial_state()
    state.remember(np.array([1.0, 2.0]), np.array([7, 8]), np.array([0, 1]), np.zeros((2, 0)))
    # user 8's slot was left empty (item -1: too few candidates to fill the slate)
    events = EventTable(
        time=np.array([1.0, 2.0]),
        user=np.array([7, 8], np.int32),
        item=np.array([11, -1], np.int32),
        position=np.array([1, 1], np.int16),
        kind=np.array([Kind.CLICK, Kind.SKIP], np.int8),
        scope=np.full(2, Scope.ITEM, np.int8),
        dwell=np.zeros(2, np.float32),
        session=np.array([1, 2], np.int64),
    )
    np.testing.assert_array_equal(kind.reflected(state, events), [True, False])


def test_the_bandit_has_an_arm_per_topic_or_per_candidate():
    catalog = _catalog(np.array([0, 1, 2, 3]), 4)
    topics = BanditKind(Bandit(arms="topics", candidates=7), catalog=lambda: catalog, seed=0)
    assert topics.initial_state().n_arms == 4
    candidates = BanditKind(Bandit(arms="candidates", candidates=7), lambda: catalog, seed=0)
    assert candidates.initial_state().n_arms == 7


@pytest.mark.parametrize("implementation", ["mabwiser", "vectorized"])
def test_the_bandits_choices_follow_its_seed(implementation):
    def choices(seed: int) -> list[int]:
        state = BanditState(Bandit(implementation=implementation), ARMS, seed=seed)
        picks = [state.choose(50)]  # uniform before any feedback
        state.learn(np.arange(ARMS), (np.arange(ARMS) % 3 == 0).astype(float))
        picks.append(state.choose(50))  # Thompson samples from the posterior
        return np.concatenate(picks).tolist()

    assert choices(1) == choices(1)
    assert choices(1)[:50] != choices(2)[:50]
    assert choices(1)[50:] != choices(2)[50:]  # MABWiser's own sampling is seeded too


def _requests(n: int, k: int):
    """``n`` requests at time 1 of users 0 .. n - 1 for slates of ``k``."""
    from sim.domain import Requests

    return Requests(np.ones(n), np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int64), k)


def test_over_retrieved_candidates_slates_hold_item_ids_not_columns():
    from policies.bandit import explore
    from sim.domain import View

    candidates = np.array([[40, 41, 42, 0], [50, 51, 52, 53]])  # item 0 is an item like any
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [3.0, 1.0, 2.0, 0.0]])
    requests = _requests(2, k=2)
    view = View(now=1.0, model=None, states={}, catalog=None, n_users=2, versions={})
    np.testing.assert_array_equal(explore(scores, requests, view, candidates), [[41, 42], [50, 52]])
    # a bandit at position 1 that has learned its third candidate is best
    state = vectorized_state(
        "epsilon_greedy", [0, 0, 1], [1, 1, 1], arms="candidates", position=1, epsilon=0.0
    )
    view.states["bandit"] = state
    np.testing.assert_array_equal(explore(scores, requests, view, candidates), [[41, 0], [50, 51]])


def test_a_topic_bandit_over_retrieved_candidates_places_the_best_candidate_of_its_topic():
    from policies.bandit import explore
    from sim.domain import View

    topic = np.zeros(60, np.int64)
    topic[42] = 1  # no candidate of the second request is of topic 1
    candidates = np.array([[40, 41, 42, 43], [50, 51, 52, 53]])
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [3.0, 1.0, 2.0, 0.0]])
    requests = _requests(2, k=2)
    # it has learned that topic 1 is best, and fills the first slot; where the topic has no
    # candidate, the slot goes to the policy's own last item
    state = vectorized_state("epsilon_greedy", [0, 1], [1, 1], epsilon=0.0)
    view = View(1.0, None, {"bandit": state}, _catalog(topic, 2), n_users=2, versions={})
    np.testing.assert_array_equal(explore(scores, requests, view, candidates), [[42, 41], [52, 50]])


def test_a_long_slate_keeps_the_policys_order_around_the_bandits_pick():
    from policies.bandit import explore
    from sim.domain import View

    n, k = 3, 20
    scores = np.tile(-np.arange(30.0), (n, 1))  # the policy ranks item 0 first, then 1, ...
    requests = _requests(n, k)
    # a bandit in slot 5 that has learned the policy's third candidate (item 2) is best
    state = vectorized_state(
        "epsilon_greedy", [0, 0, 1], [1, 1, 1], arms="candidates", position=5, epsilon=0.0
    )
    view = View(1.0, None, {"bandit": state}, None, n_users=n, versions={})
    expected = [0, 1, 3, 4, 5, 2, *range(6, 20)]  # item 2 moves to slot 5, nothing else moves
    np.testing.assert_array_equal(explore(scores, requests, view), [expected] * n)


def test_a_decision_at_the_horizon_is_kept_until_its_feedback_arrives():
    state = BanditState(Bandit(), 3, seed=0)
    state.remember(
        np.array([1.0, 2.0, 2.0]), np.array([7, 8, 9]), np.array([0, 1, 2]), np.zeros((3, 0))
    )
    found, arms, _ = state.recall(np.array([2.0]), np.array([8]), horizon=2.0)
    assert found.tolist() == [True] and arms.tolist() == [1]
    # user 7's decision, older than the horizon, is forgotten; user 9's, at it, still awaited
    found, arms, _ = state.recall(np.array([1.0, 2.0]), np.array([7, 9]), horizon=2.0)
    assert found.tolist() == [False, True] and arms.tolist() == [2]
