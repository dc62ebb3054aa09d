"""Issue-4 metrics: exact helpers against brute force, the simulator against analytic results."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.domain import EXPLICIT_NEGATIVE_KINDS, Kind
from sim.metrics import KeyedTimes, count_following, first_at_or_after, layer_delays, measure
from sim.propagation import absorption_delays
from sim.runner import run_scenario
from tests.conftest import tiny

small_ints = st.lists(st.integers(0, 4), min_size=1, max_size=40)


@settings(max_examples=120, deadline=None)
@given(keys=small_ints, data=st.data())
def test_count_following_matches_brute_force(keys, data):
    n = len(keys)
    times = data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    queries = data.draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(0, 25)),
            min_size=1,
            max_size=10,
        )
    )
    keys_, times_ = np.array(keys), np.array(times, float)
    if data.draw(st.booleans()):  # an event log's rows are in time order: the one-sort path
        times_.sort()
    qk = np.array([q[0] for q in queries])
    low = np.array([q[1] for q in queries], float)
    high = np.array([max(q[1], q[2]) for q in queries], float)
    expected = [
        int(((keys_ == k) & (times_ > lo) & (times_ <= hi)).sum())
        for k, lo, hi in zip(qk, low, high, strict=True)
    ]
    assert count_following(keys_, times_, qk, low, high).tolist() == expected
    lengths = np.array([0.0, 1.0, 7.5, 30.0])
    windows = KeyedTimes(keys_, times_).count_windows(qk, low, lengths)
    assert windows.tolist() == [
        count_following(keys_, times_, qk, low, low + length).tolist() for length in lengths
    ]


@settings(max_examples=120, deadline=None)
@given(keys=small_ints, data=st.data())
def test_first_at_or_after_matches_brute_force(keys, data):
    n = len(keys)
    times = np.array(data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n)), float)
    keys_ = np.array(keys)
    if data.draw(st.booleans()):  # an event log's rows are in time order: the one-sort path
        times.sort()
    queries = data.draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 22)), min_size=1))
    qk = np.array([q[0] for q in queries])
    qt = np.array([q[1] for q in queries], float)
    expected = [
        min(
            (t for k2, t in zip(keys_, times, strict=True) if k2 == k and t >= when), default=np.inf
        )
        for k, when in zip(qk, qt, strict=True)
    ]
    assert first_at_or_after(keys_, times, qk, qt).tolist() == expected


def test_absorption_takes_the_earliest_live_version_that_covers_the_event():
    # version 2's canary (live 50) covers events before 40 earlier than version 1's full
    # rollout (live 60), which covers only those before 20
    horizons = np.array([20.0, 40.0, 20.0])
    live = np.array([30.0, 50.0, 60.0])
    delays = absorption_delays(np.array([10.0, 25.0, 45.0]), horizons, live)
    assert delays.tolist() == [20.0, 25.0, np.inf]


def test_canary_users_are_absorbed_from_the_canary_release():
    result = run_scenario(
        tiny("stack.layers.retrain={every: 30m, rollout: {canary: {fraction: 0.3, for: 20m}}}")
    )
    events = result.events
    picked = np.flatnonzero(events.time > 3600)[:2000]
    users, times = events.user[picked], events.time[picked]
    delays = layer_delays(result, "retrain", times, users)
    canary = result.canary_users["retrain"][users]
    finite = np.isfinite(delays)
    # full rollout comes 20 minutes after the canary release for the same version
    assert np.all(delays[finite & canary] < 30 * 60 + 1)
    assert np.all(delays[finite & ~canary] >= 20 * 60)
    assert canary.any() and (~canary).any()


def test_periodic_layer_mean_absorption_is_latency_plus_compute_plus_half_the_period():
    """Poisson-like events and a period T with random phase: delays are uniform on
    [d + c, d + c + T], so their mean is d + c + T/2 (DESIGN.md principle 2)."""
    every, latency, compute = 1200.0, 300.0, 120.0
    result = run_scenario(
        tiny(
            "duration=10h",
            "world.users.diurnal.amplitude=0",
            "metrics.propagation_kinds=[skip, short_dwell, dismiss, not_interested, abandon]",
            f"stack.layers.retrain={{every: {every}, latency: {latency}, compute_time: {compute}}}",
        )
    )
    table = measure(result).tables["propagation"].to_pandas()
    table = table[table.layer == "retrain"]
    # only events whose absorption the run could observe in full
    observable = table[table.time < result.scenario.end - (latency + compute + every)]
    delays = observable.delay_seconds.to_numpy()
    assert observable.absorbed.all() and len(delays) > 1000
    assert delays.min() >= latency + compute and delays.max() <= latency + compute + every
    expected, sd = latency + compute + every / 2, every / np.sqrt(12)
    # events cluster in sessions, so allow a generous 5 standard errors of 1/4 the sample
    assert abs(delays.mean() - expected) < 5 * sd / np.sqrt(len(delays) / 4)


def test_repeat_exposure_without_suppression_is_rate_times_time_times_topic_share():
    """No layer suppresses anything and slates are uniform: a user's impressions of a topic in
    the horizon D after a negative are lambda * D * k * share (single-request sessions are a
    Poisson process, so what follows a negative does not depend on it)."""
    sessions_per_day, k = 24.0, 5
    result = run_scenario(
        tiny(
            "duration=12h",
            "warmup=0s",
            "stack.policy=random",
            "stack.layers={}",
            f"stack.slate_size={k}",
            "world.catalog.new_items_per_day=0",
            "world.users.diurnal.amplitude=0",
            "world.users.session.requests_mean=1",
            f"world.users.sessions_per_day={{distribution: constant, median: {sessions_per_day}}}",
            "world.behavior.churn_prob=0",
            "metrics.exposure_horizon=3h",
        )
    )
    metrics = measure(result)
    curves = metrics.tables["exposure"].to_pandas()
    topic_curve = curves[curves.match == "topic"].dropna()

    events = result.events
    negatives = np.flatnonzero(np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS))
    n_items = result.scenario.world.catalog.items
    share_of_topic = np.bincount(result.item_topic[:n_items]) / n_items
    rate = sessions_per_day / 86400.0
    for row in topic_curve.itertuples():
        observed = negatives[
            events.time[negatives] + row.seconds_since_negative <= result.scenario.end
        ]
        share = share_of_topic[result.item_topic[events.item[observed]]].mean()
        expected = rate * row.seconds_since_negative * k * share
        # Poisson counts: standard error sqrt(mean / n), with slack for users counted twice
        tolerance = 5 * np.sqrt(max(expected, 1e-3) / row.negatives_observed) * 2
        assert abs(row.impressions_per_negative - expected) < tolerance + 0.01, row


def test_metrics_tables_hold_no_nan_or_infinite_values():
    result = run_scenario(
        tiny(
            "interventions=[{kind: topic_aversion, at: 2h, topic: 3}, "
            "{kind: item_turns_bad, at: 3h, items: 0.1}]",
            "stack.layers.realtime_features={}",
        )
    )
    metrics = measure(result)
    for name, table in metrics.tables.items():
        for column in table.columns:
            if pa.types.is_floating(column.type):
                values = column.to_numpy(zero_copy_only=False)
                assert np.isfinite(values[~np.isnan(values)]).all(), name
                assert column.null_count == np.isnan(values).sum(), (name, column)
    for name, value in metrics.scalars.items():
        assert value is None or np.isfinite(value), name
        assert (value is None) == (name in metrics.missing), name


def test_a_topic_aversion_makes_averse_users_reject_the_topic():
    result = run_scenario(
        tiny(
            "stack.policy=random",
            "interventions=[{kind: topic_aversion, at: 3h, topic: 2, users: 0.5, among: all}]",
        )
    )
    events = result.events
    affected = result.affected["topic_aversion@3h"]
    on_topic = (events.item >= 0) & (result.item_topic[np.maximum(events.item, 0)] == 2)
    averse = affected.users[events.user]
    clicked = events.kind == Kind.CLICK

    def ctr(mask):
        return clicked[mask].mean()

    before, after = events.time < 3 * 3600, events.time >= 3 * 3600
    assert ctr(on_topic & averse & after) < 0.3 * ctr(on_topic & averse & before)
    assert ctr(on_topic & ~averse & after) > 0.5 * ctr(on_topic & ~averse & before)


def test_item_turns_bad_lowers_those_items_for_everyone():
    result = run_scenario(
        tiny("stack.policy=random", "interventions=[{kind: item_turns_bad, at: 3h, creator: 4}]")
    )
    events = result.events
    bad = result.affected["item_turns_bad@3h"].items
    assert bad.any() and np.all(result.item_creator[np.flatnonzero(bad)] == 4)
    shown_bad = (events.item >= 0) & bad[np.maximum(events.item, 0)]
    clicked = events.kind == Kind.CLICK
    before, after = events.time < 3 * 3600, events.time >= 3 * 3600
    assert clicked[shown_bad & after].mean() < 0.3 * clicked[shown_bad & before].mean()


def test_catalog_burst_and_traffic_spike():
    base = run_scenario(tiny("stack.policy=random"))
    burst = run_scenario(
        tiny(
            "stack.policy=random",
            "interventions=[{kind: catalog_burst, at: 2h, items: 200, topic: 1}, "
            "{kind: traffic_spike, at: 3h, multiplier: 3, for: 30m}]",
        )
    )
    live_before = int((burst.item_created_at <= 2 * 3600 - 1).sum())
    arrived = burst.item_created_at == 2 * 3600
    assert arrived.sum() == 200 and np.all(burst.item_topic[arrived] == 1)
    assert live_before < 300 + 200

    def requests_between(result, start, stop):
        events = result.events
        return int(((events.position == 0) & (events.time >= start) & (events.time < stop)).sum())

    spike = requests_between(burst, 3 * 3600, 3.5 * 3600)
    normal = requests_between(base, 3 * 3600, 3.5 * 3600)
    assert spike > 2 * normal


def test_preference_shift_moves_users_to_the_topic():
    result = run_scenario(
        tiny(
            "stack.policy=random",
            "interventions=[{kind: preference_shift, at: 2h, to_topic: 5, users: 0.5, amount: 1}]",
        )
    )
    events = result.events
    shifted = result.affected["preference_shift@2h"].users[events.user]
    on_topic = (events.item >= 0) & (result.item_topic[np.maximum(events.item, 0)] == 5)
    clicked = events.kind == Kind.CLICK
    after = events.time >= 2 * 3600
    assert (
        clicked[on_topic & shifted & after].mean()
        > 1.5 * clicked[on_topic & ~shifted & after].mean()
    )


def test_most_shown_targets_what_the_stack_was_showing_most():
    result = run_scenario(
        tiny(
            "interventions=[{kind: topic_aversion, at: 3h, topic: most_shown}, "
            "{kind: item_turns_bad, at: 3h, most_shown: 5}]"
        )
    )
    events = result.events
    hour = (events.time >= 2 * 3600) & (events.time < 3 * 3600) & (events.item >= 0)
    topic_counts = np.bincount(result.item_topic[events.item[hour]])
    assert result.affected["topic_aversion@3h"].topic == int(np.argmax(topic_counts))
    item_counts = np.bincount(events.item[hour], minlength=result.item_topic.shape[0])
    bad = np.flatnonzero(result.affected["item_turns_bad@3h"].items)
    assert sorted(bad) == sorted(np.argsort(-item_counts, kind="stable")[:5])


def test_fresh_share_under_random_slates_is_the_fresh_share_of_the_catalogue():
    result = run_scenario(
        tiny(
            "stack.policy.name=random",
            "stack.policy.params={}",
            "stack.layers={}",
            "world.catalog.new_items_per_day=400",
            "metrics.fresh_age=6h",
            "duration=1d",
        )
    )
    table = measure(result).tables["timeseries"].to_pandas()
    created = result.item_created_at
    # Random slates draw live items uniformly: expected share = fresh live items / live items,
    # averaged over each bin's impressions (evaluated at each impression's time).
    events = result.events
    times = events.time[events.item >= 0]
    live = np.searchsorted(created, times, side="right")
    old = np.searchsorted(created, times - 6 * 3600, side="right")
    expected_per_impression = (live - old) / live
    bins = (times // 3600).astype(int)
    counts = np.bincount(bins)
    expected = np.bincount(bins, weights=expected_per_impression) / counts
    measured = table["fresh_impression_share"].to_numpy()[: expected.shape[0]]
    se = np.sqrt(expected * (1 - expected) / counts) * 2  # slates of distinct items: conservative
    busy = counts > 500
    assert expected[busy].max() > 0.1  # the catalogue really fills with fresh items
    assert (np.abs(measured[busy] - expected[busy]) < 4 * se[busy] + 1e-9).mean() >= 0.95


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_consumption_similarity_matches_brute_force_jaccard(data):
    from types import SimpleNamespace

    from sim.metrics import consumption_similarity

    n = data.draw(st.integers(2, 60))
    users = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    items = np.array(data.draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)))
    clicked = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    events = SimpleNamespace(
        time=np.arange(n, dtype=float), user=users, item=items,
        kind=np.where(clicked, Kind.CLICK, Kind.SKIP),
    )  # fmt: skip
    sets = {u: set(items[(users == u) & clicked]) for u in np.unique(users[clicked])}
    found = consumption_similarity(events, pairs=3000, seed=1)
    if len(sets) < 2:
        assert found is None
        return
    pairs = [(a, b) for a in sets for b in sets if a != b]
    exact = np.mean([len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs])
    assert found == pytest.approx(exact, abs=4 * 0.5 / np.sqrt(3000))  # sampled pairs


def test_metrics_read_a_long_log_in_chunks_and_user_shards_with_the_same_figures(monkeypatch):
    """A log longer than ``CHUNK_ROWS`` is measured chunk by chunk and user shard by user shard
    (so that a week of a million users fits in memory); every figure and table is the same as
    measured in one piece, bit for bit."""
    import sim.eventlog
    import sim.metrics

    result = run_scenario(
        tiny(
            "interventions=[{kind: topic_aversion, at: 2h, topic: 3}, "
            "{kind: item_turns_bad, at: 3h, items: 0.1}]",
            "stack.layers.realtime_features={}",
            "stack.layers.profile_memory={every: 1h}",
        )
    )
    whole = measure(result)
    rows = len(result.events)
    monkeypatch.setattr(sim.eventlog, "CHUNK_ROWS", 997)  # prime: cuts land mid-request
    again = run_scenario(result.scenario)  # its summary's counts are taken chunk by chunk
    timing = {"wall_seconds", "requests_per_second", "wall_seconds_by_component"}
    assert {k: v for k, v in again.summary.items() if k not in timing} == {
        k: v for k, v in result.summary.items() if k not in timing
    }
    assert len(sim.eventlog.row_chunks(result.events.time)) > rows // 2000
    all_users = sim.metrics._user_shards(result.events)
    assert len(all_users) > 3
    some = np.zeros(result.churned_at.shape[0], bool)
    some[::3] = True  # shards sized by these users' rows alone: fewer, wider
    fewer = sim.metrics._user_shards(result.events, only=some)
    assert 1 < len(fewer) < len(all_users) and fewer[-1][1] == all_users[-1][1]
    steps: list[str] = []
    chunked = measure(result, steps.append)
    parts = [step for step in steps if step.startswith("measuring residual exposure (")]
    shards = len(parts)
    assert shards > 1 and parts == [
        f"measuring residual exposure (users part {part} of {shards})"
        for part in range(1, shards + 1)
    ]
    assert steps[0] == "measuring business outcomes" and steps[-1] == "measuring costs"
    assert chunked.scalars == whole.scalars and chunked.missing == whole.missing
    assert chunked.tables.keys() == whole.tables.keys()
    for name, table in whole.tables.items():
        assert chunked.tables[name].equals(table), name
    assert whole.scalars["explicit_negatives"] > 0 and whole.scalars["bad_impressions"] > 0


def test_row_chunks_cut_between_times_and_at_bin_edges(monkeypatch):
    import sim.eventlog

    monkeypatch.setattr(sim.eventlog, "CHUNK_ROWS", 4)
    times = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 5.0, 6.0])
    chunks = sim.eventlog.row_chunks(times)
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 7), (7, 11)]
    monkeypatch.setattr(sim.eventlog, "CHUNK_ROWS", 3)
    binned = sim.eventlog.row_chunks(times, np.array([0.0, 2.0, 4.0]))
    assert [(c.start, c.stop) for c in binned] == [(0, 7), (7, 9), (9, 11)]
