"""Issue-4 and issue-19 metrics: exact helpers against brute force, the simulator against
analytic results."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.measuring.metrics
from sim.domain import EVENT_COLUMNS, EXPLICIT_NEGATIVE_KINDS, EventTable, Kind, Scope
from sim.measuring.metrics import (
    ABSORPTION_PARTS,
    KeyedTimes,
    RunMetrics,
    _concentration,
    count_following,
    first_at_or_after,
    layer_delays,
    measure,
    timeseries,
)
from sim.measuring.propagation import absorption_delays
from sim.serving.layers import Absorption, Reads, Version
from sim.serving.layers.profile_memory import ProfileMemoryKind
from sim.serving.runner import RunResult, run_scenario
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


def test_absorption_needs_a_horizon_strictly_after_the_event():
    # an event exactly on version 1's horizon (10) is not in its data: version 2 absorbs it
    delays = absorption_delays(np.array([10.0, 5.0]), np.array([10.0]), np.array([12.0]))
    assert delays.tolist() == [np.inf, 7.0]
    delays = absorption_delays(np.array([10.0]), np.array([10.0, 30.0]), np.array([12.0, 35.0]))
    assert delays.tolist() == [25.0]


def test_absorption_with_no_version_leaves_every_event_unabsorbed():
    delays = absorption_delays(np.array([1.0, 2.0, 3.0]), np.array([]), np.array([]))
    assert delays.dtype == np.float64
    assert delays.tolist() == [np.inf, np.inf, np.inf]


def test_canary_users_are_absorbed_from_the_canary_release():
    result = run_scenario(
        tiny("stack.layers.retrain={every: 30m, rollout: {canary: {fraction: 0.3, for: 20m}}}")
    )
    events = result.events
    picked = np.flatnonzero(events.time > 3600)[:2000]
    users = events.user[picked]
    delays = layer_delays(result, "retrain", picked)
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
            f"stack.layers.retrain={{every: {every:g}s, latency: {latency:g}s, "
            f"compute_time: {compute:g}s}}",
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


def test_residual_exposure_is_the_mean_cumulative_function_counted_by_hand():
    """Each step of the curve adds the impressions in it per negative observed through it (a
    cumulative mean over the negatives observed that long changes its cohort at every point and
    fell from 4.1 to 2.6 in a short run, issue 20)."""
    from sim.measuring.metrics import exposure_grid

    result = run_scenario(tiny("duration=2h", "metrics.exposure_horizon=1h"))
    curve = measure(result).tables["exposure"].to_pandas()
    curve = curve[curve.match == "topic"].set_index("seconds_since_negative")
    events, end = result.events, result.scenario.end
    negative = np.flatnonzero(
        (events.time >= result.scenario.warmup) & np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS)
    )
    shown = np.flatnonzero(events.item >= 0)
    topic = result.item_topic
    counts = []  # per negative: impressions of its topic to its user in (t, t + g], per g
    grid = exposure_grid(result.scenario.metrics.exposure_horizon)
    for row in negative:
        t = events.time[row]
        same = shown[
            (events.user[shown] == events.user[row])
            & (topic[events.item[shown]] == topic[max(events.item[row], 0)])
        ]
        counts.append(
            [int(((events.time[same] > t) & (events.time[same] <= t + g)).sum()) for g in grid]
        )
    counts_array = np.array(counts)
    times = events.time[negative]
    expected, previous = 0.0, np.zeros(len(negative))
    for point, g in enumerate(grid):
        observed = times + g <= end
        if not observed.any():
            assert pd.isna(curve.impressions_per_negative.iloc[point])
            break
        expected += (counts_array[observed, point] - previous[observed]).sum() / observed.sum()
        previous = counts_array[:, point]
        assert curve.impressions_per_negative.iloc[point] == pytest.approx(expected), g
        assert curve.negatives_observed.iloc[point] == observed.sum()
    assert np.all(np.diff(curve.impressions_per_negative.dropna()) >= 0)


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

    from sim.measuring.metrics import consumption_similarity

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
    import sim.measuring.metrics
    import sim.serving.eventlog

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
    monkeypatch.setattr(sim.serving.eventlog, "CHUNK_ROWS", 997)  # prime: cuts land mid-request
    again = run_scenario(result.scenario)  # its summary's counts are taken chunk by chunk
    timing = {"wall_seconds", "requests_per_second", "wall_seconds_by_component"}
    assert {k: v for k, v in again.summary.items() if k not in timing} == {
        k: v for k, v in result.summary.items() if k not in timing
    }
    assert len(sim.serving.eventlog.row_chunks(result.events.time)) > rows // 2000
    all_users = sim.measuring.metrics._user_shards(result.events)
    assert len(all_users) > 3
    some = np.zeros(result.churned_at.shape[0], bool)
    some[::3] = True  # shards sized by these users' rows alone: fewer, wider
    fewer = sim.measuring.metrics._user_shards(result.events, only=some)
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
    import sim.serving.eventlog

    monkeypatch.setattr(sim.serving.eventlog, "CHUNK_ROWS", 4)
    times = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 5.0, 6.0])
    chunks = sim.serving.eventlog.row_chunks(times)
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 7), (7, 11)]
    monkeypatch.setattr(sim.serving.eventlog, "CHUNK_ROWS", 3)
    binned = sim.serving.eventlog.row_chunks(times, np.array([0.0, 2.0, 4.0]))
    assert [(c.start, c.stop) for c in binned] == [(0, 7), (7, 9), (9, 11)]


def _gini_by_mean_difference(counts):
    """Gini as the mean absolute difference over twice the mean: independent of ``gini``'s
    sorted-rank formula."""
    x = np.asarray(counts, float)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * x.shape[0] ** 2 * x.mean())


def _hand_built_result():
    """A run of 2.5 measured days after a 6-hour warm-up, with 700 items live by its end (a
    multiple of 100: the top 1% is 7 items, not 8), some arriving during it, 20 at once at the end
    of the first measured day (also a bin edge: live in the next window, not in this one) and
    some after it, skewed exposure, and abandon rows (item -1) between the impressions."""
    rng = np.random.default_rng(5)
    scenario = tiny("duration=2.5d", "warmup=6h", "metrics.timeseries_bin=6h")
    end = scenario.end
    arriving = np.sort(
        np.concatenate(
            [rng.uniform(0, end, 80), np.full(20, 30 * 3600.0), rng.uniform(end, 2 * end, 50)]
        )
    )
    created = np.concatenate([np.full(600, -np.inf), arriving])
    topic = rng.integers(0, 6, created.shape[0]).astype(np.int16)
    n = 6000
    time = np.sort(rng.uniform(0, end, n))
    live = np.searchsorted(created, time, "right")
    # skewed: a few items take most impressions; every shown item is live when shown
    item = np.minimum((live * rng.random(n) ** 4).astype(np.int32), live - 1)
    item[rng.random(n) < 0.1] = -1  # abandons
    kind = np.where(item >= 0, Kind.SKIP, Kind.ABANDON).astype(np.int8)
    events = EventTable(
        time=time,
        user=rng.integers(0, 50, n).astype(np.int32),
        item=item,
        position=np.where(item >= 0, 0, -1).astype(np.int16),
        kind=kind,
        scope=np.zeros(n, np.int8),
        dwell=np.zeros(n, np.float32),
        session=np.arange(n, dtype=np.int64),
    )
    return RunResult(
        scenario=scenario,
        summary={},
        events=events,
        item_topic=topic,
        item_creator=np.zeros(created.shape[0], np.int32),
        churned_at=np.full(50, np.inf),
        item_created_at=created,
        session_starts=np.zeros(0),
    )


@pytest.mark.parametrize("chunk_rows", [1 << 24, 389])
def test_exposure_concentration_of_a_hand_built_log_matches_pandas(monkeypatch, chunk_rows):
    """The three concentration figures, run and per bin, against their definitions evaluated
    with pandas, read in one piece and in chunks (a day's coverage spans many chunks)."""
    import sim.serving.eventlog

    monkeypatch.setattr(sim.serving.eventlog, "CHUNK_ROWS", chunk_rows)
    result = _hand_built_result()
    created, end = result.item_created_at, result.scenario.end
    frame = pd.DataFrame({"time": result.events.time, "item": result.events.item})
    shown = frame[frame.item >= 0].assign(topic=lambda f: result.item_topic[f.item])
    measured = shown[shown.time >= result.scenario.warmup]
    assert (created < end).sum() == 700 and measured.item.nunique() > 200

    def top_share(window, live):
        return window.item.value_counts().nlargest(math.ceil(live / 100)).sum() / len(window)

    def topic_gini(window):
        return _gini_by_mean_difference(np.bincount(window.topic, minlength=6))

    metrics = RunMetrics()
    _concentration(result, metrics)
    assert metrics.scalars["top1pct_item_share"] == pytest.approx(
        top_share(measured, 700), abs=1e-6
    )
    assert 0.05 < metrics.scalars["top1pct_item_share"] < 0.5  # not trivially 0 or 1
    # two whole measured days from the warm-up; the trailing half day is left out
    days = [(6 * 3600 + d * 86400, 6 * 3600 + (d + 1) * 86400) for d in range(2)]
    coverage = [
        measured[(measured.time >= a) & (measured.time < b)].item.nunique() / (created < b).sum()
        for a, b in days
    ]
    assert metrics.scalars["item_coverage"] == pytest.approx(np.mean(coverage), abs=1e-6)
    assert metrics.scalars["topic_gini"] == pytest.approx(topic_gini(measured), abs=1e-6)

    table = timeseries(result).to_pandas()
    width = result.scenario.metrics.timeseries_bin
    for row in table.itertuples():
        stop = min(row.start_seconds + width, end)
        window = shown[(shown.time >= row.start_seconds) & (shown.time < stop)]
        live = (created < stop).sum()
        assert row.top1pct_item_share == pytest.approx(top_share(window, live)), row
        assert row.catalog_coverage == pytest.approx(window.item.nunique() / live), row
        assert row.topic_gini == pytest.approx(topic_gini(window)), row


def test_exposure_concentration_without_impressions_is_missing_with_a_reason():
    result = _hand_built_result()
    events = result.events
    result.events = EventTable(
        **{name: getattr(events, name) for name in EVENT_COLUMNS if name != "item"},
        item=np.full(len(events), -1, np.int32),
    )
    metrics = RunMetrics()
    _concentration(result, metrics)
    assert metrics.scalars["top1pct_item_share"] is None
    assert metrics.scalars["topic_gini"] is None
    assert metrics.missing["top1pct_item_share"] == "no impressions in the measured period"
    assert metrics.scalars["item_coverage"] == 0.0  # nothing shown: none of the catalogue
    assert timeseries(result).column("top1pct_item_share").null_count == len(timeseries(result))


def test_exposure_concentration_under_random_slates_matches_its_expectation():
    """Random slates of k distinct items out of N live ones: an item misses all R slates of a
    day with probability q = (1 - k/N)^R (about the (1 - 1/N)^(kR) of independent impressions),
    so a day's expected coverage is 1 - q; two items both miss with probability q2 =
    ((N-k)(N-k-1) / (N(N-1)))^R, which gives the exact variance of the day's unseen items (the
    occupancy problem), and 4 standard deviations of the two days' mean are the tolerance. The
    top-1% share and the topic Gini are compared with their distribution over 300 simulated
    logs of as many random slates (4 standard deviations of it)."""
    k, n_items = 5, 12_000
    result = run_scenario(
        tiny(
            "duration=2d",
            "warmup=0s",
            "stack.policy=random",
            "stack.layers={}",
            f"stack.slate_size={k}",
            "world.catalog.new_items_per_day=0",
            f"world.catalog.items={n_items}",
            "world.users.count=150",
            "metrics.timeseries_bin=1d",
        )
    )
    metrics = measure(result)
    events = result.events
    requests = np.bincount((events.time[events.position == 0] // 86400).astype(int))
    assert requests.shape[0] == 2
    missed = (1 - k / n_items) ** requests  # P(an item is in none of a day's slates)
    both = ((n_items - k) * (n_items - k - 1) / (n_items * (n_items - 1))) ** requests
    assert 0.1 < missed.min() and missed.max() < 0.7  # neither empty nor saturated
    # unseen items per day: variance N q (1 - q) + N (N - 1) (q2 - q^2), days independent
    variance = n_items * missed * (1 - missed) + n_items * (n_items - 1) * (both - missed**2)
    tolerance = 4 * np.sqrt(variance.sum()) / n_items / 2
    assert abs(metrics.scalars["item_coverage"] - (1 - missed).mean()) < tolerance
    # with day-long bins from time 0, the run's figure is the mean of the bins'
    table = metrics.tables["timeseries"].to_pandas()
    assert metrics.scalars["item_coverage"] == pytest.approx(
        table.catalog_coverage.mean(), abs=1e-6
    )

    rng = np.random.default_rng(0)
    total = int(requests.sum())
    top, topic = [], []
    for _ in range(300):
        slates = rng.integers(0, n_items, (total, k))
        while True:  # redraw slates that repeat an item: k distinct items each
            ordered = np.sort(slates, axis=1)
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not repeated.any():
                break
            slates[repeated] = rng.integers(0, n_items, (int(repeated.sum()), k))
        counts = np.bincount(slates.ravel(), minlength=n_items)
        top.append(np.sort(counts)[-math.ceil(n_items / 100) :].sum() / counts.sum())
        topic.append(_gini_by_mean_difference(np.bincount(result.item_topic[slates.ravel()])))
    for name, null in (("top1pct_item_share", top), ("topic_gini", topic)):
        assert abs(metrics.scalars[name] - np.mean(null)) < 4 * np.std(null), name
    # small, but above the 1% of perfectly even exposure: about 1.5 impressions per item
    assert 0.01 < metrics.scalars["top1pct_item_share"] < 0.05


# --- hand-built logs whose every figure is counted by hand ------------------------------------

#: Items 0-5: topics 0, 0, 1, 1, 2, 2 and creators 0, 1, 0, 1, 0, 1.
HAND_TOPIC = np.array([0, 0, 1, 1, 2, 2], np.int16)
HAND_CREATOR = np.array([0, 1, 0, 1, 0, 1], np.int32)


def _hand_log(rows, users, scenario, churned_at=None, sessions=None, **fields):
    """A run whose log is ``rows`` of (time, user, item, kind, scope), in time order; every row
    its own session unless ``sessions`` gives each row's."""
    time, user, item, kind, scope = (np.array(column) for column in zip(*rows, strict=True))
    n = len(rows)
    events = EventTable(
        time=time.astype(float),
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        position=np.zeros(n, np.int16),
        kind=kind.astype(np.int8),
        scope=scope.astype(np.int8),
        dwell=np.zeros(n, np.float32),
        session=np.arange(n, dtype=np.int64) if sessions is None else np.array(sessions, np.int64),
    )
    return RunResult(
        scenario=scenario,
        summary={},
        events=events,
        item_topic=HAND_TOPIC,
        item_creator=HAND_CREATOR,
        churned_at=np.full(users, np.inf) if churned_at is None else np.asarray(churned_at),
        item_created_at=np.full(HAND_TOPIC.shape[0], -np.inf),
        **fields,
    )


def test_residual_exposure_and_repeat_offences_of_a_hand_built_log():
    """Three explicit negatives after a one-hour warm-up, in a run that ends at 4h (14,400 s):
    A (user 0, item 0, "this item", t=4000), B (user 1, item 2 of topic 1, "this topic",
    t=5000) and C (user 1, item 5 of creator 1, "this creator", t=12000, observed only for
    horizons up to 2,400 s). Every impression that follows one is placed by hand, so the
    curves are step functions and the repeat offences a count. The curves are the mean
    cumulative function: each grid step adds its impressions per negative observed through it
    (three up to 2,400 s, two after)."""
    imp, skip, click = Kind.IMPRESSION, Kind.SKIP, Kind.CLICK
    item_scope, topic_scope, creator_scope = Scope.ITEM, Scope.TOPIC, Scope.CREATOR
    rows = [
        (3000, 0, 1, Kind.DISMISS, item_scope),  # in the warm-up: not measured
        (3700, 0, 0, imp, 0),  # before A
        (4000, 0, 0, Kind.DISMISS, item_scope),  # A
        (4100, 0, 0, imp, 0),  # A's item again (+100): a repeat offence
        (4100, 2, 0, imp, 0),  # someone else's impression of it: not counted
        (4200, 0, 1, imp, 0),  # A's topic (+200)
        (5000, 1, 2, Kind.NOT_INTERESTED, topic_scope),  # B
        (5060, 1, 3, imp, 0),  # B's topic (+60, on the first horizon): an offence
        (5100, 1, 4, skip, 0),  # B's creator, another topic
        (6000, 1, 2, click, 0),  # B's item and topic (+1000): an offence
        (7200, 1, 3, imp, 0),  # B's topic (+2200): an offence
        (8000, 1, 3, imp, 0),  # B's topic (+3000, once C is censored): an offence
        (9000, 0, 0, imp, 0),  # A's item at +5000, past the one-hour horizon
        (12000, 1, 5, Kind.BLOCK_CREATOR, creator_scope),  # C
        (12100, 1, 1, imp, 0),  # C's creator: an offence
        (12200, 1, 3, imp, 0),  # C's creator (an offence), B's topic at +7200
        (13000, 1, 5, imp, 0),  # C's item, topic and creator (+1000): an offence
        (13500, 1, -1, Kind.ABANDON, 0),
    ]
    scenario = tiny("warmup=1h", "duration=3h", "metrics.exposure_horizon=1h")
    result = _hand_log(rows, 3, scenario)
    metrics = RunMetrics()
    sim.measuring.metrics._exposure(result, metrics)
    assert metrics.scalars["explicit_negatives"] == 3
    # A: item 0 at 4100; B: topic 1 at 5060, 6000, 7200, 8000; C: creator 1 at 12100, 12200,
    # 13000
    assert metrics.scalars["repeat_offences"] == 1 + 4 + 3
    assert metrics.scalars["repeat_offences_per_negative"] == pytest.approx(8 / 3, abs=1e-6)

    curves = metrics.tables["exposure"].to_pandas()
    item = curves[curves.match == "item"]
    topic = curves[curves.match == "topic"]
    s = item.seconds_since_negative.to_numpy()
    assert s[0] == 60 and s[-1] == 3600 and (2400 > s).any() and (2400 < s).any()
    c_seen = s <= 2400  # C is observed this long before the run ends
    np.testing.assert_array_equal(item.negatives_observed, 2 + c_seen)
    np.testing.assert_array_equal(topic.negatives_observed, 2 + c_seen)
    # item: A's at +100, B's and C's at +1000, each step over the three negatives
    same_item = ((s >= 100) + 2.0 * (s >= 1000)) / 3
    np.testing.assert_allclose(item.impressions_per_negative, same_item)
    # topic: A's at +100, +200; B's at +60, +1000, +2200 and C's at +1000, over three; B's at
    # +3000, after C's censoring, over two
    same_topic = ((s >= 60) + 1.0 * (s >= 100) + (s >= 200) + 2 * (s >= 1000) + (s >= 2200)) / 3 + (
        s >= 3000
    ) / 2
    assert (s >= 3000).any()
    np.testing.assert_allclose(topic.impressions_per_negative, same_topic)


def test_harm_of_a_topic_aversion_in_a_hand_built_log():
    """Users 0 and 1 turn averse to topic 1 at 2h; user 2 does not. With one-hour bins and a
    one-hour level window, bad impressions (topic 1 to an averse user) over the averse users'
    impressions are 2/4 before (the level), then 2/4, 1/5 and 0/4 in the three bins of a run
    that ends half-way through the third: the share falls to 50% of the level at the end of
    the second bin and to 10% at the end of the run, not of the bin."""
    imp, abandon = Kind.IMPRESSION, Kind.ABANDON
    rows = [
        (3000, 0, 2, imp, 0),  # before the level window
        (3000, 0, 3, imp, 0),
        (4000, 0, 2, imp, 0),  # level: 2 bad of 4
        (4000, 0, 0, imp, 0),
        (5000, 1, 3, imp, 0),
        (5000, 1, 4, imp, 0),
        (5000, 1, -1, abandon, 0),  # after a bad slate, but before the intervention
        (5000, 2, 2, imp, 0),  # not averse: neither bad nor population
        (8000, 0, 2, imp, 0),  # bin 0: 2 bad of 4
        (8000, 0, 0, imp, 0),
        (8000, 0, -1, abandon, 0),  # a session lost after a bad slate
        (8500, 1, 3, imp, 0),
        (8500, 1, 5, imp, 0),
        (9500, 2, 2, imp, 0),
        (9500, 2, -1, abandon, 0),  # not a bad slate for user 2
        (11000, 1, 0, imp, 0),  # bin 1: 1 bad of 5
        (11000, 1, 1, imp, 0),
        (11000, 1, -1, abandon, 0),  # no bad impression in this slate
        (12000, 1, 2, imp, 0),
        (12000, 1, 4, imp, 0),
        (12000, 1, 5, imp, 0),
        (15000, 1, 0, imp, 0),  # bin 2 (cut at the end, 16,200 s): 0 bad of 4
        (15000, 1, 4, imp, 0),
        (16000, 1, 1, imp, 0),
        (16000, 1, 5, imp, 0),
    ]
    from users.world import Affected

    scenario = tiny(
        "warmup=1h",
        "duration=210m",
        "metrics.suppression_bin=1h",
        "metrics.level_window=1h",
    )
    aversion = Affected("topic_aversion", 7200.0, users=np.array([True, True, False]), topic=1)
    # user 0 (exposed) churns after the intervention, user 2 (never exposed) too
    result = _hand_log(
        rows, 3, scenario, churned_at=[9000.0, np.inf, 9600.0], affected={"averse": aversion}
    )
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    scalars = metrics.scalars
    assert scalars["averse.level"] == 0.5
    assert scalars["averse.bad_impressions"] == scalars["bad_impressions"] == 3
    assert scalars["averse.time_to_50pct_seconds"] == 2 * 3600  # end of bin 1
    assert scalars["averse.bad_before_50pct"] == 3
    assert scalars["averse.time_to_10pct_seconds"] == 16200 - 7200  # end of the run
    assert scalars["averse.bad_before_10pct"] == 3
    assert scalars["averse.sessions_lost"] == scalars["sessions_lost"] == 1
    assert scalars["averse.churned_exposed_users"] == scalars["churned_exposed_users"] == 1
    table = metrics.tables["suppression"].to_pandas()
    assert table.seconds_since_intervention.tolist() == [0, 3600, 7200]
    assert table.bad_impressions.tolist() == [2, 1, 0]
    assert table.population_impressions.tolist() == [4, 5, 4]


def test_harm_not_suppressed_by_the_end_is_missing_with_its_reason():
    from users.world import Affected

    rows = [(4000, 0, 2, Kind.IMPRESSION, 0), (8000, 0, 2, Kind.IMPRESSION, 0)]
    scenario = tiny("warmup=1h", "duration=2h", "metrics.suppression_bin=1h")
    aversion = Affected("topic_aversion", 7200.0, users=np.array([True]), topic=1)
    result = _hand_log(rows, 1, scenario, affected={"averse": aversion})
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    assert metrics.scalars["averse.level"] == 1.0
    for percent in (50, 10):
        assert metrics.scalars[f"averse.time_to_{percent}pct_seconds"] is None
        assert metrics.missing[f"averse.time_to_{percent}pct_seconds"] == (
            f"not suppressed to {percent}% of the level by the end of the run"
        )
        assert metrics.scalars[f"averse.bad_before_{percent}pct"] is None


def test_a_profile_is_absorbed_at_the_users_next_session_start_once_it_is_live():
    """One profile version covers events before 5000 s and goes live at 5000 s. User 0's dismiss
    (4000 s, session 1) is absorbed when their next session starts (6000 s), user 1's (4500 s)
    at 5000 s, where their next session starts as the version goes live; user 2, who starts no
    session after it, is never served it."""
    dismiss, imp, item = Kind.DISMISS, Kind.IMPRESSION, Scope.ITEM
    rows = [
        (4000, 0, 0, dismiss, item),
        (4100, 0, 1, imp, 0),  # still session 1: the profile was not live when it started
        (4500, 1, 2, dismiss, item),
        (4800, 2, 3, dismiss, item),
        (5000, 1, 4, imp, 0),  # user 1's session 4
        (5500, 2, 5, imp, 0),  # user 2's session 5, which started before the version was live
        (6000, 0, 1, imp, 0),  # user 0's session 2
    ]
    version = Version(
        layer="profile_memory",
        version=1,
        triggered_at=5000.0,
        horizon=5000.0,
        live_at=5000.0,
        cohort="all",
        events=3,
        cost=0.0,
        wall_seconds=0.0,
        since=0.0,
    )
    result = _hand_log(
        rows,
        3,
        tiny("warmup=1h", "metrics.propagation_kinds=[dismiss]"),
        sessions=[1, 1, 3, 5, 4, 5, 2],
        versions=[version],
        absorption={"profile_memory": Absorption(ProfileMemoryKind.reads, incremental=False)},
    )
    result.summary = {"layers": {"profile_memory": {}}}
    metrics = RunMetrics()
    sim.measuring.metrics._propagation(result, metrics)
    table = metrics.tables["propagation"].to_pandas()
    assert table.event.tolist() == [0, 2, 3]
    assert table.absorbed.tolist() == [True, True, False]
    assert table.delay_seconds[:2].tolist() == [6000 - 4000, 5000 - 4500]
    assert metrics.scalars["absorption.profile_memory.absorbed_share"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("compute_time", ["0s", "45m"])
def test_cost_per_day_counts_the_updates_triggered_while_measuring(compute_time):
    """Four measured hours (a sixth of a day): a retrain every 30 minutes triggers 8 times
    whatever its phase (3 units each), a bandit every 10 minutes 24 times (0.5 each); the
    warm-up's versions are not charged. A retrain still computing when the run ends (45
    minutes of compute: the last one or two) has spent its compute and is charged too."""
    retrain = f"every: 30m, latency: 2m, compute_time: {compute_time}, cost: {{per_run: 3}}"
    result = run_scenario(
        tiny(
            f"stack.layers.retrain={{{retrain}}}",
            "stack.layers.bandit={every: 10m, cost: {per_run: 0.5}}",
        )
    )
    unfinished = result.summary["layers"]["retrain"]["unfinished_updates"]
    assert unfinished == 0 if compute_time == "0s" else unfinished in (1, 2)
    metrics = RunMetrics()
    sim.measuring.metrics._costs(result, metrics)
    assert metrics.scalars == {
        "cost_per_day.retrain": 8 * 3 * 6,
        "cost_per_day.bandit": 24 * 0.5 * 6,
        "cost_per_day": 8 * 3 * 6 + 24 * 0.5 * 6,
    }


def test_harm_of_two_interventions_with_items_turned_bad_at_the_edges_of_their_bins():
    """Item 0 turns bad at 1h for everyone; user 3 turns averse to topic 1 (items 2, 3) at 1h;
    a traffic spike (no harm) is listed first. With a two-hour level window (from time 0, the
    start of the run) and one-hour bins, events exactly at the window's start, the intervention
    and a bin's edge each fall in the later period. Bad items: level 1/4, then 2/4, 0/1 (the
    second bin suppresses both levels) and no impressions. Aversion: level 1/1, then 1/2 (50% at
    the end of the first bin, exactly half), 1/1 and no population in the third (never 10%)."""
    from users.world import Affected

    imp = Kind.IMPRESSION
    rows = [
        (0, 0, 0, imp, 0),  # level: bad item
        (0, 1, 1, imp, 0),
        (2000, 1, 1, imp, 0),
        (2000, 3, 2, imp, 0),  # level: averse user 3 shown topic 1
        (3600, 2, 0, imp, 0),  # bin 0: bad item, at the intervention
        (3600, 2, 1, imp, 0),
        (4000, 3, 2, imp, 0),  # bin 0: bad for the aversion
        (4000, 3, 0, imp, 0),  # bin 0: bad item
        (7200, 3, 3, imp, 0),  # bin 1, at its start: bad for the aversion
    ]
    scenario = tiny(
        "warmup=1h", "duration=3h", "metrics.suppression_bin=1h", "metrics.level_window=2h"
    )
    affected = {
        "spike": Affected("traffic_spike", 1800.0),
        "bad items": Affected("item_turns_bad", 3600.0, items=np.arange(6) == 0),
        "averse": Affected("topic_aversion", 3600.0, users=np.arange(4) == 3, topic=1),
    }
    result = _hand_log(rows, 4, scenario, affected=affected)
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    scalars = metrics.scalars
    assert scalars["bad items.level"] == 0.25
    assert scalars["bad items.bad_impressions"] == 2
    for percent in (50, 10):
        assert scalars[f"bad items.time_to_{percent}pct_seconds"] == 7200
        assert scalars[f"bad items.bad_before_{percent}pct"] == 2
    assert scalars["averse.level"] == 1.0
    assert scalars["averse.bad_impressions"] == 2
    assert scalars["averse.time_to_50pct_seconds"] == 3600
    assert scalars["averse.bad_before_50pct"] == 1
    assert scalars["averse.time_to_10pct_seconds"] is None
    assert scalars["bad_impressions"] == 4
    assert scalars["sessions_lost"] == scalars["churned_exposed_users"] == 0
    assert not any(name.startswith("spike") for name in scalars)
    table = metrics.tables["suppression"].to_pandas()
    assert table.intervention.tolist() == ["bad items"] * 3 + ["averse"] * 3
    assert table.kind.tolist() == ["item_turns_bad"] * 3 + ["topic_aversion"] * 3
    assert table.seconds_since_intervention.tolist() == [0, 3600, 7200] * 2
    assert table.bad_impressions.tolist() == [2, 0, 0, 1, 1, 0]
    assert table.population_impressions.tolist() == [4, 1, 0, 2, 1, 0]

    # without a harmful intervention there is no harm to total
    result = _hand_log(rows, 4, scenario, affected={"spike": affected["spike"]})
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    assert metrics.scalars == {} and metrics.tables["suppression"].num_rows == 0


def test_a_session_is_lost_only_after_its_users_own_bad_slate_at_that_time():
    """A request is one user's slate at one time. Users 1 and 3 are shown the bad item at 0 s,
    user 2 at 10 s and abandons; user 0 abandons a slate at 10 s with no bad item: one session
    lost. With no impression before the intervention there is no level to suppress to."""
    from users.world import Affected

    imp, abandon = Kind.IMPRESSION, Kind.ABANDON
    rows = [
        (0, 1, 0, imp, 0),
        (0, 3, 0, imp, 0),
        (10, 0, 1, imp, 0),
        (10, 0, -1, abandon, 0),
        (10, 2, 0, imp, 0),
        (10, 2, -1, abandon, 0),
    ]
    scenario = tiny("warmup=0s", "duration=1h", "metrics.suppression_bin=1h")
    bad = {"bad": Affected("item_turns_bad", 0.0, items=np.arange(6) == 0)}
    result = _hand_log(rows, 4, scenario, churned_at=[np.inf, 20.0, 20.0, 0.0], affected=bad)
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    assert metrics.scalars["bad.bad_impressions"] == 3  # an abandon row is no impression
    assert metrics.scalars["bad.sessions_lost"] == 1
    # users 1, 2 and 3 were shown the bad item and churned after the intervention (3 at it)
    assert metrics.scalars["bad.churned_exposed_users"] == 3
    assert metrics.scalars["bad.level"] is None
    assert metrics.missing["bad.level"] == (
        "no impressions to the affected population before the intervention"
    )
    no_level = "no pre-intervention level to compare with"
    for percent in (50, 10):
        assert metrics.scalars[f"bad.time_to_{percent}pct_seconds"] is None
        assert metrics.missing[f"bad.time_to_{percent}pct_seconds"] == no_level
        assert metrics.missing[f"bad.bad_before_{percent}pct"] == no_level

    # a catalogue of one item: an abandon row (item -1) is read as that item, masked
    rows = [(0, 0, 0, imp, 0), (0, 0, -1, abandon, 0)]
    one = {"bad": Affected("item_turns_bad", 0.0, items=np.array([True]))}
    result = _hand_log(rows, 1, scenario, affected=one)
    result = dataclasses.replace(result, item_topic=HAND_TOPIC[:1], item_creator=HAND_CREATOR[:1])
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    assert metrics.scalars["bad.bad_impressions"] == 1
    assert metrics.scalars["bad.sessions_lost"] == 1


def test_regret_is_the_expected_clicks_lost_per_measured_request():
    """Requests at 100 s (in the warm-up), 600 s (its end) and 900 s: the oracle's expected
    clicks minus the served ones are 5, 0.5 and 0.25; the first is not measured."""
    scenario = tiny("warmup=10m", "duration=10m")
    result = _hand_log([(0, 0, 0, Kind.IMPRESSION, 0)], 1, scenario)
    times = np.array([100.0, 600.0, 900.0])
    served, best = np.array([1.0, 1.5, 0.75]), np.array([6.0, 2.0, 1.0])
    metrics = RunMetrics()
    sim.measuring.metrics._regret(
        dataclasses.replace(result, expected_clicks=(times, served, best)), metrics
    )
    assert metrics.scalars == {
        "expected_clicks_per_request": 1.125,
        "oracle_expected_clicks_per_request": 1.5,
        "regret_per_request": 0.375,
        "regret": 0.75,
    }
    assert metrics.missing == {}
    metrics = RunMetrics()
    early = (np.array([100.0]), np.array([1.0]), np.array([2.0]))
    sim.measuring.metrics._regret(dataclasses.replace(result, expected_clicks=early), metrics)
    empty = "no requests in the measured period"
    assert metrics.scalars == {
        "expected_clicks_per_request": None,
        "oracle_expected_clicks_per_request": None,
        "regret_per_request": None,
        "regret": 0.0,
    }
    assert metrics.missing == dict.fromkeys(
        ("expected_clicks_per_request", "oracle_expected_clicks_per_request", "regret_per_request"),
        empty,
    )
    metrics = RunMetrics()
    sim.measuring.metrics._regret(result, metrics)  # regret not asked for
    assert metrics.scalars == {}


def test_measure_reports_each_step_as_it_starts():
    result = run_scenario(tiny("duration=20m", "warmup=10m", "world.users.count=30"))
    steps: list[str] = []
    sim.measuring.metrics.measure(result, on_step=steps.append)
    assert steps == [
        f"measuring {step}"
        for step in (
            "business outcomes",
            "propagation delays",
            "residual exposure",
            "suppression and harm",
            "regret",
            "freshness",
            "exposure concentration",
            "homogenization",
            "timeseries",
            "costs",
        )
    ]


def test_delay_parts_of_an_event_no_version_absorbed_are_missing():
    """Versions whose live times are out of horizon order (the version-by-version path):
    version 2 covers [0, 50) and goes live at 140, version 1 covers [50, 100) and goes live at
    130. The event at 10 is absorbed by version 2, the one at 60 by version 1, each delay split
    into its parts; the one at 120 by none, its parts missing (nan)."""
    rows = [(10, 0, 1, Kind.SKIP, 0), (60, 0, 1, Kind.SKIP, 0), (120, 0, 1, Kind.SKIP, 0)]
    result = _hand_log(rows, 1, tiny())
    common = dict(layer="x", cohort="all", events=0, cost=0.0, wall_seconds=0.0, changed="all")
    versions = [
        Version(version=1, since=50.0, horizon=100.0, triggered_at=105.0, live_at=130.0, **common),
        Version(version=2, since=0.0, horizon=50.0, triggered_at=55.0, live_at=140.0, **common),
    ]
    absorption = {"x": Absorption(Reads(), incremental=False)}
    result = dataclasses.replace(result, versions=versions, absorption=absorption)
    parts = sim.measuring.metrics.layer_delay_parts(result, "x", np.array([0, 1, 2]))
    np.testing.assert_array_equal(parts["delay"], [130.0, 70.0, np.inf])
    np.testing.assert_array_equal(parts["latency"], [5.0, 5.0, np.nan])
    np.testing.assert_array_equal(parts["trigger_wait"], [40.0, 40.0, np.nan])
    np.testing.assert_array_equal(parts["compute"], [85.0, 25.0, np.nan])
    np.testing.assert_array_equal(parts["rollout"], [0.0, 0.0, np.nan])
    np.testing.assert_array_equal(parts["label_delay"], [0.0, 0.0, np.nan])


def test_of_two_versions_live_at_once_the_earlier_horizon_absorbs():
    """Version 1 covers [20, 50), version 2 [0, 100) (input starts out of horizon order), both
    live at 130: the event at 30 is absorbed by version 1, the first by horizon, as on the
    path for histories in order."""
    result = _hand_log([(30, 0, 1, Kind.SKIP, 0)], 1, tiny())
    common = dict(layer="x", cohort="all", events=0, cost=0.0, wall_seconds=0.0, changed="all")
    versions = [
        Version(version=1, since=20.0, horizon=50.0, triggered_at=60.0, live_at=130.0, **common),
        Version(version=2, since=0.0, horizon=100.0, triggered_at=110.0, live_at=130.0, **common),
    ]
    absorption = {"x": Absorption(Reads(), incremental=False)}
    result = dataclasses.replace(result, versions=versions, absorption=absorption)
    parts = sim.measuring.metrics.layer_delay_parts(result, "x", np.array([0]))
    assert (parts["delay"][0], parts["latency"][0], parts["trigger_wait"][0]) == (100, 10, 20)


def test_only_profile_memory_waits_for_the_next_session_and_the_wait_is_its_rollout():
    """A profile version and a retrain version both cover events before 5000 s and go live at
    5000 s. The retrain serves everyone at once; the profile a user from their next session
    that starts once it is live (user 0: 6000 s), and that wait is part of its rollout. The
    dismiss at 3600 s, exactly the end of the warm-up, is measured."""
    dismiss, imp, item = Kind.DISMISS, Kind.IMPRESSION, Scope.ITEM
    rows = [
        (3600, 0, 5, dismiss, item),  # user 0's session 0
        (4000, 0, 0, dismiss, item),  # session 1
        (4100, 0, 1, imp, 0),
        (4500, 1, 2, dismiss, item),
        (4800, 2, 3, dismiss, item),
        (5000, 1, 4, imp, 0),  # user 1's session 4
        (5500, 2, 5, imp, 0),  # user 2's session 5, begun before the versions went live
        (6000, 0, 1, imp, 0),  # user 0's session 2
    ]
    common = dict(version=1, triggered_at=5000.0, horizon=5000.0, live_at=5000.0, cohort="all")
    common |= dict(events=4, cost=0.0, wall_seconds=0.0, since=0.0)
    result = _hand_log(
        rows,
        3,
        tiny("warmup=1h", "metrics.propagation_kinds=[dismiss]"),
        sessions=[0, 1, 1, 3, 5, 4, 5, 2],
        versions=[Version(layer=layer, **common) for layer in ("profile_memory", "retrain")],
        absorption={
            "profile_memory": Absorption(ProfileMemoryKind.reads, incremental=False),
            "retrain": Absorption(Reads(), incremental=False),
        },
    )
    result.summary = {"layers": {"profile_memory": {}, "retrain": {}}}
    metrics = RunMetrics()
    sim.measuring.metrics._propagation(result, metrics)
    table = metrics.tables["propagation"].to_pandas()
    profile, retrain = table[table.layer == "profile_memory"], table[table.layer == "retrain"]
    assert profile.event.tolist() == retrain.event.tolist() == [0, 1, 3, 4]
    assert profile.delay_seconds.tolist()[:3] == [2400, 2000, 500]
    assert profile.absorbed.tolist() == [True, True, True, False]
    assert profile.rollout_seconds.tolist()[:3] == [1000, 1000, 0]
    assert retrain.delay_seconds.tolist() == [1400, 1000, 500, 200]
    assert retrain.rollout_seconds.tolist() == [0, 0, 0, 0]
    # quantiles by the inverted CDF: the smallest delay with at least that share at or below it
    scalars, missing = metrics.scalars, metrics.missing
    assert {part: scalars[f"absorption.retrain.{part}"] for part in ABSORPTION_PARTS} == {
        "median_seconds": 500,
        "p90_seconds": 1400,
        "p99_seconds": 1400,
        "mean_seconds": 775,
        "absorbed_share": 1.0,
    }
    assert {part: scalars[f"absorption.profile_memory.{part}"] for part in ABSORPTION_PARTS} == {
        "median_seconds": 2000,
        "p90_seconds": None,
        "p99_seconds": None,
        "mean_seconds": None,
        "absorbed_share": 0.75,
    }
    censored = "fewer events absorbed before the run ended than this quantile needs"
    assert missing["absorption.profile_memory.p90_seconds"] == censored
    assert missing["absorption.profile_memory.p99_seconds"] == censored
    assert missing["absorption.profile_memory.mean_seconds"] == (
        "some events were not absorbed before the run ended"
    )
    assert metrics.tables["propagation"].schema.field("layer").type == pa.dictionary(
        pa.int8(), pa.string()
    )

    # one measured negative, absorbed: every quantile is its delay
    result.summary = {"layers": {"retrain": {}}}
    metrics = RunMetrics()
    first = result.events.take(np.arange(1))
    sim.measuring.metrics._propagation(dataclasses.replace(result, events=first), metrics)
    assert [metrics.scalars[f"absorption.retrain.{part}"] for part in ABSORPTION_PARTS] == (
        [1400, 1400, 1400, 1400, 1.0]
    )
    # no negative in the measured period: every figure missing, with that reason
    metrics = RunMetrics()
    before = result.events.take(np.array([2, 5, 6, 7]))
    sim.measuring.metrics._propagation(dataclasses.replace(result, events=before), metrics)
    for part in ABSORPTION_PARTS:
        assert metrics.scalars[f"absorption.retrain.{part}"] is None
        assert metrics.missing[f"absorption.retrain.{part}"] == (
            "no negative events in the measured period"
        )


def test_a_run_without_harm_writes_an_empty_suppression_table_with_its_types():
    result = _hand_log([(0, 0, 0, Kind.IMPRESSION, 0)], 1, tiny())
    metrics = RunMetrics()
    sim.measuring.metrics._suppression(result, metrics)
    table = metrics.tables["suppression"]
    assert table.num_rows == 0
    assert [(field.name, field.type) for field in table.schema] == [
        ("intervention", pa.string()),
        ("kind", pa.string()),
        ("seconds_since_intervention", pa.float64()),
        ("bad_impressions", pa.int64()),
        ("population_impressions", pa.int64()),
    ]
