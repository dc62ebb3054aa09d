"""The retrain layer's version history is exact, and reproduces the analytic absorption delay."""

from __future__ import annotations

import numpy as np
import pytest

from policies.builtin import EmbeddingPolicy
from sim.measuring.propagation import absorption_delays
from sim.serving.runner import run_scenario
from tests.conftest import tiny


def test_versions_follow_the_cadence_exactly():
    result = run_scenario(
        tiny(
            "stack.warm.mode=own",
            "stack.layers.retrain.phase=7m",
            "stack.layers.retrain.warm_start=false",
        )
    )
    spec = result.scenario.stack.layers.retrain
    triggered = np.array([v.triggered_at for v in result.versions])
    np.testing.assert_allclose(triggered, 420 + spec.every * np.arange(len(triggered)))
    for version in result.versions:
        assert version.horizon == version.triggered_at - spec.latency
        assert version.live_at == version.triggered_at + spec.compute_time
        assert version.events == int((result.events.time < version.horizon).sum())
    assert [v.version for v in result.versions] == list(range(1, len(result.versions) + 1))


def test_a_common_warmup_refits_the_logging_model_then_cadences_start_at_its_end():
    result = run_scenario(
        tiny("warmup=3h", "stack.warm.refit_every=40m", "stack.layers.retrain.phase=7m")
    )
    spec = result.scenario.stack.layers.retrain
    origins = [v.origin for v in result.versions]
    assert origins[:5] == ["warmup"] * 4 + ["bootstrap"]
    assert set(origins[5:]) == {"update"}
    warm = result.versions[:5]
    np.testing.assert_allclose([v.triggered_at for v in warm], [2400, 4800, 7200, 9600, 10800])
    for version in warm:  # live at once, free of charge
        assert version.live_at == version.triggered_at and version.cost == 0
        assert version.events == int((result.events.time < version.horizon).sum())
    # the logging model reads everything logged so far; the bootstrap what its latency allows
    assert all(v.horizon == v.triggered_at for v in warm[:4])
    assert warm[4].horizon == 10800 - spec.latency
    triggered = np.array([v.triggered_at for v in result.versions[5:]])
    np.testing.assert_allclose(triggered, 10800 + 420 + spec.every * np.arange(len(triggered)))


def test_variants_of_a_common_warmup_share_it_bit_for_bit():
    warmup = ("warmup=3h", "stack.warm.refit_every=40m")
    base = run_scenario(tiny(*warmup))
    other = run_scenario(
        tiny(
            *warmup,
            "stack.layers.retrain={every: 5h, latency: 1h, compute_time: 1h}",
            "stack.layers.realtime_features={}",
            "stack.layers.nearline_embeddings={}",
        )
    )
    n = int((base.events.time < 3 * 3600).sum())
    assert n == int((other.events.time < 3 * 3600).sum()) > 1000
    for column in ("time", "user", "item", "kind", "position"):
        np.testing.assert_array_equal(
            getattr(base.events, column)[:n], getattr(other.events, column)[:n]
        )
    # every layer starts from the warm-up log at its end, the retrain's first
    starts = [
        (v.layer, v.origin, v.triggered_at) for v in other.versions if v.origin == "bootstrap"
    ]
    assert {layer for layer, _, _ in starts} == {
        "retrain",
        "realtime_features",
        "nearline_embeddings",
    }
    assert {at for _, _, at in starts} == {3 * 3600}
    # the own mode's warm-ups differ: each variant's layers run from time 0
    own = run_scenario(tiny(*warmup, "stack.warm.mode=own"))
    assert not np.array_equal(own.events.item[:n], base.events.item[:n])


def test_a_warm_start_update_is_live_when_the_warmup_ends_whatever_the_cadence():
    # a weekly retrain whose first periodic trigger is after the run would leave no model
    result = run_scenario(
        tiny(
            "stack.warm.mode=own", "stack.layers.retrain={every: 7d, phase: 6d, compute_time: 20m}"
        )
    )
    (warm,) = result.versions
    assert warm.triggered_at == 3600 - 1200 and warm.live_at == 3600
    assert warm.events == int((result.events.time < warm.horizon).sum()) > 0
    frozen = run_scenario(tiny("stack.warm.mode=own", "stack.frozen_after_warmup=true"))
    assert [v.live_at for v in frozen.versions][-1] <= 3600 + 300  # nothing triggered after


def test_random_phase_is_uniform_over_the_period():
    phases = [
        run_scenario(tiny(f"seed={seed}", "duration=40m", "warmup=0s")).versions[0].triggered_at
        for seed in range(12)
    ]
    assert min(phases) >= 0 and max(phases) < 1800
    assert len(set(phases)) == 12


def test_disabled_layer_never_changes_served_state():
    result = run_scenario(tiny("stack.warm.mode=own", "stack.layers.retrain.enabled=false"))
    assert result.versions == []
    assert result.events.versions == {}
    # in a common warm-up the logging model is fitted all the same, and serves unchanged
    common = run_scenario(tiny("stack.layers.retrain.enabled=false"))
    assert [v.origin for v in common.versions] == ["bootstrap"]
    assert (
        "retrain" in common.summary["layers"]
        and common.summary["layers"]["retrain"]["updates"] == 0
    )
    served = common.events.versions["retrain"][common.events.time >= 3600]
    assert (served == 1).all()


def test_mean_absorption_delay_is_latency_plus_compute_plus_half_the_period():
    """Principle 2: period T, random phase, delay d, Poisson events: delay ~ U[d, d + T]."""
    result = run_scenario(
        tiny(
            "world.users.diurnal.amplitude=0",
            "duration=12h",
            "stack.policy=popular",
            "output.events=true",
        )
    )
    spec = result.scenario.stack.layers.retrain
    d, period = spec.latency + spec.compute_time, spec.every
    # measured requests, against the layer's own updates (which start at the warm-up's end)
    measured = (result.events.position == 0) & (result.events.time >= result.scenario.warmup)
    times = result.events.time[measured]
    updates = [v for v in result.versions if v.origin == "update"]
    delays = absorption_delays(
        times,
        np.array([v.horizon for v in updates]),
        np.array([v.live_at for v in updates]),
    )
    delays = delays[np.isfinite(delays)]
    assert delays.shape[0] > 5000
    assert delays.min() >= d and delays.max() <= d + period
    standard_error = period / np.sqrt(12 * delays.shape[0])
    assert delays.mean() == pytest.approx(d + period / 2, abs=4 * standard_error)


class RecordsTraining(EmbeddingPolicy):
    """The embedding policy, keeping the training data of every fit."""

    seen: list = []

    def fit(self, data):
        RecordsTraining.seen.append(data)
        return super().fit(data)


def test_sparse_labels_reach_training_from_the_panel_only():
    from sim.domain import Kind
    from sim.serving.layers import LABELLED_NEGATIVES
    from sim.serving.runner import assemble

    RecordsTraining.seen.clear()
    scenario = tiny(
        "stack.policy.name=tests.test_layers:RecordsTraining",
        "stack.layers.retrain.label_sample=0.25",
        "world.behavior.explicit_prob=0.5",
    )
    panel = assemble(scenario).layers[0].label_panel
    assert panel is not None and panel.sum() == round(0.25 * scenario.world.users.count)
    result = run_scenario(scenario)
    data = RecordsTraining.seen[-1]
    negative = np.isin(data.events.kind, LABELLED_NEGATIVES)
    assert negative.any() and panel[data.events.user[negative]].all()
    # outside the panel the impression is still there, as a skip
    logged = result.events
    horizon = len(data.events)
    np.testing.assert_array_equal(data.events.user, logged.user[:horizon])
    relabelled = np.isin(logged.kind[:horizon], LABELLED_NEGATIVES) & ~panel[logged.user[:horizon]]
    assert relabelled.any() and (data.events.kind[relabelled] == Kind.SKIP).all()


class Recorder:
    """A layer's math that keeps the event times each update read."""

    def __init__(self, incremental: bool):
        self.incremental = incremental
        self.read: list[list[float]] = []

    def initial_state(self):
        return {}

    def compute(self, data):
        self.read.append(data.events.time.tolist())
        return object()  # a new state: it changes everyone

    def absorb(self, state, events):
        self.read.append(events.time.tolist())


def logged_at(*times: float):
    """An event log with one impression at each of ``times``."""
    from sim.domain import Kind, Requests, Responses, Scope
    from sim.serving.eventlog import EventLog

    log = EventLog()
    for user, time in enumerate(times):
        log.append_slates(
            Requests(np.array([time]), np.array([user], np.int32), np.array([user]), k=1),
            np.array([[user]]),
            Responses(
                kind=np.full((1, 1), Kind.SKIP, np.int8),
                scope=np.full((1, 1), Scope.ITEM, np.int8),
                dwell=np.zeros((1, 1), np.float32),
                abandoned=np.zeros(1, bool),
            ),
            versions={},
        )
    return log


@pytest.mark.parametrize("incremental", [False, True], ids=["batch", "incremental"])
def test_an_event_exactly_on_an_updates_horizon_waits_for_the_next_update(incremental):
    """Updates every 10 s from 25 s with 5 s of latency read events before 20, 30 and 40 s: the
    events at exactly 20 and 30 s (``t + latency == s``, not visible) each wait one update."""
    from types import SimpleNamespace

    import simpy

    from sim.scenario.spec import RetrainLayer
    from sim.serving.layers import LayerRuntime

    kind = Recorder(incremental)
    world = SimpleNamespace(n_users=3, catalog_view=lambda: None)
    spec = RetrainLayer(every=10.0, phase=25.0, latency=5.0)
    layer = LayerRuntime(
        "retrain", spec, kind, logged_at(10.0, 20.0, 30.0), world, lambda *_: None,
        np.random.default_rng(0),
    )  # fmt: skip
    env = simpy.Environment()
    layer.start(env)
    env.run(until=46.0)
    if incremental:  # each update reads only what became visible since the last
        assert kind.read == [[10.0], [20.0], [30.0]]
    else:
        assert kind.read == [[10.0], [10.0, 20.0], [10.0, 20.0, 30.0]]
    updates = [v for v in layer.history if v.origin == "update"]
    assert [(v.triggered_at, v.horizon) for v in updates] == [(25, 20), (35, 30), (45, 40)]
