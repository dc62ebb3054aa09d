"""A version absorbs an event only when it changes what that user would be served.

Each layer's rule (see ``sim.serving.layers.Reads`` and ``Effect``): a retrain absorbs the events
it was trained on with their label; near-line and profile memory the events they fold in, for the
users whose served state changed; the incremental stores the kinds they keep; the bandit the
feedback on its slot it learned from. A version that changed nothing absorbs nothing.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.serving.eventlog
from sim.domain import EventTable, Kind, is_kind
from sim.measuring.metrics import layer_delays, measure
from sim.scenario.spec import NearlineEmbeddings
from sim.serving.layers import LABELLED_NEGATIVES, Absorption, PolicyRefresh, Reads, Version
from sim.serving.layers.profile_memory import ProfileMemoryKind, ProfileSnapshot
from sim.serving.layers.store import REJECTIONS
from sim.serving.runner import RunResult, run_scenario
from tests.conftest import tiny

ALL_NEGATIVES = (
    "metrics.propagation_kinds=[skip, short_dwell, dismiss, not_interested, thumbs_down, "
    "block_creator, abandon]"
)


def propagation(result: RunResult, layer: str):
    table = measure(result).tables["propagation"].to_pandas()
    return table[table.layer == layer].reset_index(drop=True)


def brute_force_delays(result: RunResult, layer: str, rows: np.ndarray) -> np.ndarray:
    """The definition, event by event over every version: the earliest live time, for the
    event's cohort, of a version whose input covers the event, that reflects its kind and did
    not miss it, and that changed what its user is served."""
    events = result.events
    record = result.absorption[layer]
    canary = result.canary_users.get(layer)
    delays = np.full(rows.shape[0], np.inf)
    missed = set(record.missed.tolist())
    changed = {version: set(users.tolist()) for version, users in record.changed_users.items()}
    versions = [v for v in result.versions if v.layer == layer]
    for index, row in enumerate(rows.tolist()):
        t, user = float(events.time[row]), int(events.user[row])
        # with label delays: covered if it arrived before the horizon, and started (its time;
        # for an incremental layer, its arrival) at or after the input's start
        arrived = t if events.arrival is None else float(events.arrival[row])
        start = arrived if record.incremental else t
        reflected = row not in missed and bool(
            record.reads.admits(
                events.kind[[row]],
                events.item[[row]],
                events.position[[row]],
                events.scope[[row]],
                events.user[[row]],
            )[0]
        )
        if not reflected:
            continue
        in_canary = canary is not None and bool(canary[user])
        for v in versions:
            if v.cohort == "canary" and not in_canary:
                continue
            if v.changed == "none" or not (v.since <= start and arrived < v.horizon):
                continue
            if v.changed == "some" and not record.incremental and user not in changed[v.version]:
                continue
            delays[index] = min(delays[index], v.live_at - t)
    return delays


# --- near-line with no model ---------------------------------------------------------------


def nearline_before_the_model(retrain_phase: str):
    return run_scenario(
        tiny(
            "stack.warm.mode=own",
            f"stack.layers.retrain={{every: 3h, phase: {retrain_phase}, warm_start: false, "
            "latency: 2m, compute_time: 5m}",
            "stack.layers.nearline_embeddings={every: 10m, latency: 1m, compute_time: 1m}",
        )
    )


def test_nearline_absorbs_nothing_before_there_is_a_model():
    result = nearline_before_the_model("2h")
    (model,) = [v for v in result.versions if v.layer == "retrain"]
    nearline = [v for v in result.versions if v.layer == "nearline_embeddings"]
    before = [v for v in nearline if v.live_at < model.live_at]
    after = [v for v in nearline if v.triggered_at > model.live_at]
    assert len(before) > 5 and after
    assert all(v.changed == "none" and v.changed_users == 0 for v in before)
    assert all(v.changed == "some" and 0 < v.changed_users < 400 for v in after)
    table = propagation(result, "nearline_embeddings")
    absorbed = table[table.absorbed]
    assert len(absorbed) > 50
    first_change = min(v.live_at for v in after)
    assert (absorbed.time + absorbed.delay_seconds >= first_change).all()


def test_nearline_that_never_has_a_model_is_noted_and_absorbs_nothing():
    result = nearline_before_the_model("6h")  # the run ends at 5h
    notes = [note for note in result.summary["notes"] if "nearline_embeddings" in note]
    assert notes == [
        "layer 'nearline_embeddings' published 24 versions while measuring and none changed what "
        "any user is served: its refresh returned no state: there was no model to fold users into"
    ]
    assert measure(result).scalars["absorption.nearline_embeddings.absorbed_share"] == 0


def test_a_refresh_changes_the_users_whose_served_vectors_changed():
    model = SimpleNamespace(users=np.zeros((4, 3), np.float32))
    deployed = [model]
    kind = PolicyRefresh(None, "p", NearlineEmbeddings(), lambda: deployed[0])
    first = SimpleNamespace(model=model, users=model.users.copy())
    first.users[2, 0] = 1.0
    assert kind.effect(None, first).users.tolist() == [2]  # against the model's own vectors
    second = SimpleNamespace(model=model, users=first.users.copy())
    second.users[[0, 2], 1] = 1.0
    assert kind.effect(first, second).users.tolist() == [0, 2]  # against the near-line's
    assert kind.effect(second, second).label == "none"
    assert kind.effect(second, None).label == "none"
    deployed[0] = SimpleNamespace(users=model.users)  # a new model serves: the old one's vectors
    assert "no longer serves" in kind.effect(second, first).why_not
    weightless = PolicyRefresh(None, "p", NearlineEmbeddings(negative_weight=0), lambda: model)
    assert weightless.reads.kinds == (Kind.CLICK,)


def test_profile_memory_changes_users_whose_stored_dislikes_changed_as_multisets():
    def snapshot(items):
        items = np.array(items, np.int32)
        return ProfileSnapshot(
            topics=np.zeros((3, 2), np.uint16), items=items, creators=np.full_like(items, -1)
        )

    kind = ProfileMemoryKind.__new__(ProfileMemoryKind)
    old = snapshot([[1, 2], [-1, -1], [4, -1]])
    assert kind.effect(None, old).users.tolist() == [0, 2]
    # user 0's ring holds the same items in another place: served the same
    assert kind.effect(old, snapshot([[2, 1], [-1, -1], [5, -1]])).users.tolist() == [2]


# --- retrain: trained on the event, with its label -----------------------------------------


def test_a_sparse_panel_retrain_never_absorbs_negatives_of_users_outside_it():
    result = run_scenario(
        tiny("stack.layers.retrain.label_sample=0.25", "world.behavior.explicit_prob=0.5")
    )
    panel = result.absorption["retrain"].reads.panel
    assert panel is not None and panel.sum() == 100
    table = propagation(result, "retrain")
    labelled = table.kind.astype(str).str.upper().map(lambda k: Kind[k] in LABELLED_NEGATIVES)
    inside = panel[table.user.to_numpy()]
    assert labelled.all() and inside.any() and (~inside).any()
    assert not table.absorbed[~inside].any()
    spec = result.scenario.stack.layers.retrain
    observable = table.time < result.scenario.end - (spec.latency + spec.compute_time + spec.every)
    assert table.absorbed[inside & observable].all()


def test_a_retrain_window_shorter_than_its_period_never_absorbs_what_fell_out_of_it():
    result = run_scenario(
        tiny(
            "stack.layers.retrain={every: 1h, latency: 2m, compute_time: 5m, window: 20m}",
            "duration=6h",
        )
    )
    table = propagation(result, "retrain")
    versions = sorted((v for v in result.versions if v.layer == "retrain"), key=lambda v: v.horizon)
    assert all(v.since == v.horizon - 1200 for v in versions if v.origin != "warmup")
    horizons = np.array([v.horizon for v in versions])
    first = np.searchsorted(horizons, table.time.to_numpy(), "right")
    covered = first < len(versions)
    since = np.array([v.since for v in versions] + [np.inf])[first]
    live = np.array([v.live_at for v in versions] + [np.inf])[first]
    in_window = covered & (since <= table.time.to_numpy())
    assert in_window.any() and (covered & ~in_window).any()
    np.testing.assert_array_equal(table.absorbed.to_numpy(), in_window)
    np.testing.assert_allclose(
        table.delay_seconds[in_window].to_numpy(), (live - table.time.to_numpy())[in_window]
    )


# --- incremental stores: the kinds they keep ---------------------------------------------------


@pytest.mark.parametrize("include_skips", [False, True])
def test_session_context_absorbs_skips_only_when_it_keeps_them(include_skips):
    result = run_scenario(
        tiny(f"stack.layers.session_context={{include_skips: {include_skips}}}", ALL_NEGATIVES)
    )
    table = propagation(result, "session_context")
    skips, abandons = table.kind == "skip", table.kind == "abandon"
    before_the_end = table.time < result.scenario.end - 60  # the last window's: never read
    assert skips.sum() > 500
    if include_skips:  # but a session replaced within one update (see the next test)
        assert table.absorbed[skips & before_the_end].mean() > 0.9
    else:
        assert not table.absorbed[skips].any()
    assert not table.absorbed[abandons].any()
    assert table.absorbed[~skips & ~abandons & before_the_end].all()
    features = run_scenario(tiny("stack.layers.realtime_features={}", ALL_NEGATIVES))
    table = propagation(features, "realtime_features")
    kept = ~table.kind.isin(["skip", "abandon"])
    assert not table.absorbed[~kept].any()
    assert table.absorbed[kept & (table.time < features.scenario.end - 60)].all()


def test_session_context_never_absorbs_a_session_replaced_within_one_update():
    result = run_scenario(tiny("stack.layers.session_context={every: 1h, include_skips: true}"))
    missed = result.absorption["session_context"].missed
    assert missed.shape[0] > 0
    events = result.events
    table = propagation(result, "session_context")
    dropped = table[np.isin(table.event, missed)]
    assert len(dropped) and not dropped.absorbed.any()
    # each was followed, before the update read it, by a rejection in the user's next session
    slices = sorted((v.since, v.horizon) for v in result.versions if v.layer == "session_context")
    for row in missed[:50].tolist():
        since, horizon = next((s, h) for s, h in slices if s <= events.time[row] < h)
        same_user = (events.user == events.user[row]) & (events.time < horizon)
        later = same_user & (events.time >= since) & (events.session > events.session[row])
        assert (later & (events.item >= 0) & is_kind(events.kind, (*REJECTIONS, Kind.SKIP))).any()


# --- the definition, brute force ---------------------------------------------------------------


def test_layer_delays_equal_the_definition_event_by_event():
    result = run_scenario(
        tiny(
            "stack.layers.retrain={every: 30m, latency: 2m, compute_time: 5m, window: 40m, "
            "label_sample: 0.5, rollout: {canary: {fraction: 0.3, for: 10m}}}",
            "stack.layers.nearline_embeddings={every: 10m, latency: 1m, compute_time: 1m}",
            "stack.layers.realtime_features={}",
            "stack.layers.session_context={every: 20m, include_skips: true}",
            "stack.layers.profile_memory={every: 30m, retention: 1h, slots: 2}",
            "stack.layers.bandit={every: 10m, position: 1}",
            "world.behavior.explicit_prob=0.3",
            "duration=3h",
        )
    )
    events = result.events
    negative = ~np.isin(events.kind, [Kind.IMPRESSION, Kind.CLICK])
    rows = np.flatnonzero(negative & (events.time >= 1800))
    rows = rows[:: max(1, rows.shape[0] // 1500)]  # a sample of every kind
    assert {Kind(k) for k in np.unique(events.kind[rows])} >= {Kind.SKIP, Kind.ABANDON}
    for layer in result.absorption:
        delays = layer_delays(result, layer, rows)
        expected = brute_force_delays(result, layer, rows)
        np.testing.assert_array_equal(delays, expected, err_msg=layer)
        assert np.isfinite(delays).any() and not np.isfinite(delays).all(), layer


def synthetic_result(draw, delays: bool = False) -> tuple[RunResult, np.ndarray]:
    """A log of a few users and a version history drawn at random: input starts, horizons and
    live times in any order (canary rows live before or after full ones), whom each changed;
    with ``delays``, each event's label arrives 0-20 s after it, never (inf) or not yet (nan)."""
    n_users = 4
    n = draw(st.integers(1, 30))
    time = np.sort(np.array(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)), float))
    user = np.array(draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n)), np.int32)
    kind = np.array(draw(st.lists(st.sampled_from([2, 3, 4, 8]), min_size=n, max_size=n)), np.int8)
    events = EventTable(
        time=time,
        user=user,
        item=np.where(kind == Kind.ABANDON, -1, 1).astype(np.int32),
        position=np.zeros(n, np.int16),
        kind=kind,
        scope=np.zeros(n, np.int8),
        dwell=np.zeros(n, np.float32),
        session=np.arange(n, dtype=np.int64),
    )
    if delays:
        late = st.one_of(st.integers(0, 20).map(float), st.sampled_from([np.inf, np.nan]))
        arrival = time + np.array(draw(st.lists(late, min_size=n, max_size=n)), float)
        events = replace(events, arrival=arrival)
    incremental = draw(st.booleans())
    versions, changed = [], {}
    for number in range(1, draw(st.integers(0, 6)) + 1):
        since, length = draw(st.integers(0, 40)), draw(st.integers(1, 30))
        label = draw(st.sampled_from(["all", "some", "none"]))
        if label == "some" and not incremental:
            changed[number] = np.array(
                sorted(draw(st.sets(st.integers(0, n_users - 1), min_size=1))), np.int32
            )
        live = float(since + length + draw(st.integers(0, 30)))
        common = dict(layer="x", version=number, triggered_at=0.0, horizon=float(since + length))
        common |= dict(events=0, cost=0.0, wall_seconds=0.0, since=float(since), changed=label)
        if draw(st.booleans()):
            canary_live = live + draw(st.integers(-20, 20))
            versions.append(Version(live_at=canary_live, cohort="canary", **common))
        versions.append(Version(live_at=live, cohort="all", **common))
    missed = np.array(sorted(draw(st.sets(st.integers(0, n - 1)))), np.int64)
    reads = Reads(kinds=draw(st.sampled_from([None, (Kind.SKIP, Kind.DISMISS)])), on_item=True)
    result = RunResult(
        scenario=tiny(),
        summary={},
        events=events,
        item_topic=np.zeros(2, np.int16),
        item_creator=np.zeros(2, np.int32),
        churned_at=np.full(n_users, np.inf),
        canary_users={"x": np.array([True, False, True, False])},
        versions=versions,
        absorption={
            "x": Absorption(reads, incremental, changed, missed if incremental else missed[:0])
        },
    )
    return result, np.array(draw(st.lists(st.integers(0, n - 1), min_size=1)), np.int64)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_layer_delays_of_any_history_equal_the_definition(data):
    result, rows = synthetic_result(data.draw)
    expected = brute_force_delays(result, "x", rows)
    np.testing.assert_array_equal(layer_delays(result, "x", rows), expected)
    with pytest.MonkeyPatch.context() as patch:  # changed users read in shards of 2
        patch.setattr(sim.serving.eventlog, "CHUNK_ROWS", 2)
        np.testing.assert_array_equal(layer_delays(result, "x", rows), expected)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_layer_delays_with_label_delays_of_any_history_equal_the_definition(data):
    """A delayed label is covered by a version whose horizon is after its arrival (an
    incremental layer's input also starts by its arrival, not its time); one that never
    arrived, or has not yet, by none. Histories out of order take the version-by-version path."""
    result, rows = synthetic_result(data.draw, delays=True)
    expected = brute_force_delays(result, "x", rows)
    np.testing.assert_array_equal(layer_delays(result, "x", rows), expected)
