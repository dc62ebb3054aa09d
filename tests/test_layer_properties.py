"""Issue-3 properties of every layer: causality, exact canaries, switched-off layers, bounds."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.domain import EXPLICIT_NEGATIVE_KINDS, Kind
from sim.serving.runner import run_scenario
from tests.conftest import tiny

MINUTES = st.integers(min_value=0, max_value=30).map(lambda m: f"{m}m")


def versions_of(result, layer):
    return [v for v in result.versions if v.layer == layer]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    every=st.sampled_from(["7m", "20m", "45m", "1h"]),
    latency=MINUTES,
    compute=MINUTES,
    feature_latency=st.sampled_from(["0s", "1s", "30s", "2m"]),
    canary=st.booleans(),
)
def test_no_layer_reflects_an_event_before_time_plus_latency(
    every, latency, compute, feature_latency, canary
):
    rollout = "{canary: {fraction: 0.2, for: 10m}}" if canary else "immediate"
    result = run_scenario(
        tiny(
            "duration=2h",
            f"stack.layers.retrain={{every: {every}, latency: {latency}, "
            f"compute_time: {compute}, rollout: {rollout}}}",
            f"stack.layers.realtime_features={{latency: {feature_latency}}}",
            f"stack.layers.nearline_embeddings={{every: {every}, latency: {latency}}}",
            "stack.layers.session_context={}",
            "stack.layers.profile_memory={every: 40m}",
            f"stack.layers.bandit={{every: {every}, latency: {feature_latency}}}",
            f"stack.layers.online_learning={{latency: {feature_latency}}}",
        )
    )
    times = result.events.time
    for layer, spec in result.scenario.stack.layers.active().items():
        covered = 0
        for version in versions_of(result, layer):
            if version.origin == "warmup":  # the common warm-up's logging model, not the layer's
                assert version.horizon == version.triggered_at == version.live_at < 3600
                continue
            assert version.horizon == version.triggered_at - spec.latency
            if version.origin == "bootstrap":  # the common starting state, live at warm-up's end
                assert version.triggered_at == version.live_at == 3600
                covered += 0 if spec.snapshots else version.events
                continue
            delay = spec.compute_time + (
                spec.canary.duration if spec.canary and version.cohort == "all" else 0.0
            )
            assert version.live_at == version.triggered_at + delay
            if spec.snapshots:  # a snapshot is computed from everything visible at its trigger
                assert version.events <= int((times < version.horizon).sum())
            elif version.events:  # an incremental state has absorbed exactly what was visible
                covered += version.events
                assert covered == int((times < version.horizon).sum())
        # every event was served by a version already live at its time
        live = {0: -np.inf} | {
            v.version: v.live_at for v in versions_of(result, layer) if v.cohort == "canary"
        }
        for v in versions_of(result, layer):
            live.setdefault(v.version, v.live_at)
        served = result.events.versions[layer]
        assert (times >= np.array([live[v] for v in served])).all(), layer


def test_canary_serves_exactly_its_fraction_of_users():
    result = run_scenario(
        tiny(
            "world.users.count=1000",
            "stack.layers.retrain={every: 1h, phase: 20m, "
            "rollout: {canary: {fraction: 0.05, for: 30m}}, warm_start: false}",
        )
    )
    cohort = result.canary_users["retrain"]
    assert cohort.sum() == 50
    events = result.events
    for canary in (v for v in result.versions if v.cohort == "canary"):
        full = next(v for v in result.versions if v.cohort == "all" and v.version == canary.version)
        during = (events.time >= canary.live_at) & (events.time < full.live_at)
        new = events.versions["retrain"] == canary.version
        assert during.any()
        assert (cohort[events.user[during & new]]).all()  # only canary users saw it
        assert (new[during & cohort[events.user]]).all()  # and every canary user did


def test_a_switched_off_layer_changes_nothing():
    base = run_scenario(tiny())
    for layer in (
        "realtime_features",
        "session_context",
        "nearline_embeddings",
        "profile_memory",
        "bandit",
        "online_learning",
    ):
        off = run_scenario(tiny(f"stack.layers.{layer}={{enabled: false}}"))
        for name, column in base.events.columns().items():
            np.testing.assert_array_equal(column, off.events.columns()[name], err_msg=name)


def test_immediate_session_context_never_reshows_a_rejected_item_in_the_session():
    """The fastest setting reaches the immediate-update bound: zero repeat offences."""

    def repeats(result):
        events = result.events
        rejected = np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS) | (events.kind == Kind.SHORT_DWELL)
        first_rejection = {}
        for session, item, time in zip(
            events.session[rejected], events.item[rejected], events.time[rejected], strict=True
        ):
            first_rejection.setdefault((int(session), int(item)), float(time))
        return sum(
            1
            for session, item, time in zip(events.session, events.item, events.time, strict=True)
            if first_rejection.get((int(session), int(item)), np.inf) < time
        )

    # from time 0: every layer runs through the warm-up too
    scenario = ("stack.policy=popular", "world.behavior.explicit_prob=0.8", "stack.warm.mode=own")
    without = run_scenario(tiny(*scenario))
    with_context = run_scenario(tiny(*scenario, "stack.layers.session_context={}"))
    assert repeats(without) > 50
    assert repeats(with_context) == 0


def test_profile_memory_applies_from_the_next_session_on():
    result = run_scenario(
        tiny("stack.layers.profile_memory={every: 30m, latency: 1m}", "duration=3h")
    )
    events = result.events
    served = events.versions["profile_memory"]
    live = {0: -np.inf} | {v.version: v.live_at for v in versions_of(result, "profile_memory")}
    order = np.lexsort((events.time, events.session))
    sessions, versions, times = events.session[order], served[order], events.time[order]
    starts = np.r_[True, sessions[1:] != sessions[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))
    start_time = times[first]
    # one version per session, the newest that was live when the session started
    assert (versions == versions[first]).all()
    newest = np.array([max(v for v, at in live.items() if at <= t) for t in start_time])
    assert (versions == newest).all()
    assert len(live) > 3


def test_after_events_trigger_fires_each_time_enough_events_are_visible():
    result = run_scenario(
        tiny(
            "stack.warm.mode=own",
            "stack.layers.retrain={after_events: 3000, latency: 1m, warm_start: false}",
        )
    )
    history = versions_of(result, "retrain")
    assert len(history) >= 3
    times = result.events.time
    visible = [int((times < v.horizon).sum()) for v in history]
    assert all(b - a >= 3000 for a, b in zip([0, *visible], visible, strict=False))
    assert result.summary["timing_error_bound_seconds"] == result.summary["tick_seconds"]


def test_drift_trigger_fires_when_the_negative_rate_moves_and_respects_min_gap():
    # the cold-start slates are random; the first retrain changes the negative rate sharply
    result = run_scenario(
        tiny(
            "stack.layers.retrain={every: 1h, phase: 90m}",
            "stack.layers.profile_memory={on_drift: {check_every: 1m, min_gap: 30m}}",
        )
    )
    triggers = [v.triggered_at for v in versions_of(result, "profile_memory")]
    assert triggers, "the drift detector never fired"
    assert all(b - a >= 1800 for a, b in zip(triggers, triggers[1:], strict=False))


def test_immediate_real_time_features_stop_a_rejected_topic_at_the_next_request():
    """Real-time features at zero latency with a decisive weight reach the bound: after a user
    says "not interested" in a topic, none of their next requests in the hour shows it."""

    def repeats(result):
        events = result.events
        topic = result.item_topic[np.maximum(events.item, 0)]
        said_no = np.flatnonzero(events.kind == Kind.NOT_INTERESTED)
        count = 0
        for row in said_no:
            later = (
                (events.user == events.user[row])
                & (events.time > events.time[row])
                & (events.time <= events.time[row] + 3600)
                & (events.item >= 0)
            )
            count += int((topic[later] == topic[row]).sum())
        return count, said_no.shape[0]

    base = (
        "stack.warm.mode=own",  # from time 0: the features run through the warm-up too
        "stack.policy=popular",
        "world.behavior.explicit_prob=0.8",
        "world.behavior.explicit_kinds={not_interested: 1, dismiss: 0, thumbs_down: 0, "
        "block_creator: 0}",
    )
    without, said = repeats(run_scenario(tiny(*base)))
    with_features, _ = repeats(
        run_scenario(
            tiny(
                *base,
                "stack.layers.realtime_features={latency: 0s, weights: "
                "{user_topic_negative: -100}}",
            )
        )
    )
    assert said > 50 and without > 100
    assert with_features == 0
