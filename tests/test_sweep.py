"""Issue-4 sweeps: variants and bounds, paired comparisons, common random numbers, workers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from policies.base import BasePolicy, top_k
from sim.domain import EXPLICIT_NEGATIVE_KINDS, Requests, TrainingData, View
from sim.errors import ScenarioError
from sim.measuring.compare import compare_variants, interval
from sim.scenario.loader import apply_override, parse_scenario
from sim.sweeps.plan import plan_runs
from sim.sweeps.sweep import run_sweep
from tests.conftest import TINY, tiny


class TopicDislikes(BasePolicy):
    """Random slates minus the topics each user rejected, as of the last retrain: a policy whose
    only path from a "no" to what is shown is the retrain layer, for controlled comparisons."""

    name = "topic-dislikes"

    def fit(self, data: TrainingData) -> np.ndarray:
        events = data.events
        rejected = np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS)
        disliked = np.zeros((data.n_users, data.catalog.n_topics), np.float32)
        disliked[events.user[rejected], data.catalog.topic[events.item[rejected]]] = 1.0
        return disliked

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        scores = self._rng.random((len(requests), view.catalog.n_items), dtype=np.float32)
        if view.model is not None:
            scores -= 10.0 * view.model[requests.users][:, view.catalog.topic]
        return top_k(scores, requests.k)


def test_grid_variants_get_readable_labels_and_a_baseline():
    labels, baseline, plans = plan_runs(
        tiny(
            "variants={grid: {stack.layers.retrain.every: [1h, 2h], "
            "stack.layers.realtime_features.enabled: {features on: true, features off: false}}}",
            "stack.layers.realtime_features={}",
            "baseline=retrain.every=2h · features on",
            "replications=2",
        )
    )
    assert labels == [
        "retrain.every=1h · features on",
        "retrain.every=1h · features off",
        "retrain.every=2h · features on",
        "retrain.every=2h · features off",
    ]
    assert baseline == "retrain.every=2h · features on"
    assert len(plans) == 8
    by_label = {plan.variant: plan.scenario for plan in plans if plan.replication == 0}
    assert by_label["retrain.every=1h · features off"].stack.layers.retrain.every == 3600
    assert (
        "realtime_features" not in by_label["retrain.every=1h · features off"].stack.layers.active()
    )
    # replications share nothing but the scenario; variants of one replication share the seed
    seeds = {(plan.variant, plan.replication): plan.scenario.seed for plan in plans}
    assert len({seeds[(label, 0)] for label in labels}) == 1
    assert seeds[(labels[0], 0)] != seeds[(labels[0], 1)]
    assert all(plan.scenario.variants is None for plan in plans)


def test_bounds_freeze_after_warmup_and_make_every_layer_of_any_variant_instant():
    labels, _, plans = plan_runs(
        tiny(
            "variants={cases: [{label: a, set: {stack.layers.nearline_embeddings: {every: 1h}}}, "
            "{label: b, set: {stack.layers.realtime_features: {latency: 5m}}}]}",
            "bounds={frozen: true, instant: true, instant_every: 2m}",
        )
    )
    assert labels == ["a", "b", "frozen", "instant"]
    scenarios = {plan.variant: plan.scenario for plan in plans}
    assert scenarios["frozen"].stack.frozen_after_warmup
    assert scenarios["frozen"].stack.layers == scenarios["a"].stack.layers
    instant = scenarios["instant"].stack.layers.active()
    assert set(instant) == {"retrain", "nearline_embeddings", "realtime_features"}
    for layer in instant.values():
        assert layer.latency == 0 and layer.compute_time == 0 and layer.rollout == "immediate"
    assert instant["retrain"].every == 120 and instant["nearline_embeddings"].every == 120
    # a variant's faster period wins over instant_every
    _, _, plans = plan_runs(
        tiny("variants={grid: {stack.layers.retrain.every: [1m, 1h]}}", "bounds={instant: true}")
    )
    instant_retrain = next(p for p in plans if p.variant == "instant").scenario.stack.layers.retrain
    assert instant_retrain.every == 10  # the tick: truly instant by default
    assert instant["realtime_features"].continuous


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["variants={grid: {stack.layers.retrain.evry: [1h]}}"],
            "variant 'retrain.evry=1h' (variants.grid): stack.layers.retrain.evry: unknown key; "
            "did you mean 'every'?",
        ),
        (
            ["variants={cases: [{label: frozen, set: {seed: 1}}]}"],
            "variants: label 'frozen' is reserved for the bounds",
        ),
        (
            ["variants={grid: {seed: [1, 2]}}", "baseline=nope"],
            "baseline: 'nope' is not a variant; variants: seed=1, seed=2",
        ),
        (
            ["variants={grid: {}}"],
            "variants: give variants as exactly one of grid or cases",
        ),
    ],
)
def test_bad_variants_are_named_in_one_line(overrides, message):
    with pytest.raises(ScenarioError) as caught:
        plan_runs(tiny(*overrides))
    assert any(message in line for line in caught.value.problems), caught.value.problems


def test_common_random_numbers_give_exactly_zero_deltas_for_a_setting_without_effect(tmp_path):
    summary = run_sweep(
        tiny(
            "variants={grid: {output.events: [true, false]}}",
            "replications=2",
            "duration=2h",
            "interventions=[{kind: topic_aversion, at: 2h, topic: 3}]",
        ),
        tmp_path,
    )
    compared = summary["comparisons"]["output.events=false"]
    assert compared["ctr"]["n"] == 2
    for metric, entry in compared.items():
        assert entry["delta"]["mean"] == 0.0, metric
        if entry["delta"]["n"] > 1:
            assert entry["delta"]["ci95"] == [0.0, 0.0], metric


def test_the_summary_says_how_each_variant_reached_the_measured_period(tmp_path):
    scenario = tiny("variants={grid: {stack.warm.mode: [common, own]}}", "duration=30m")
    summary = run_sweep(scenario, tmp_path)
    assert summary["warm_mode"] == {"warm.mode=common": "common", "warm.mode=own": "own"}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["warm_mode"] == summary["warm_mode"]


def test_workers_give_the_same_results_as_a_serial_run(tmp_path):
    scenario = tiny("variants={grid: {stack.layers.retrain.every: [20m, 1h]}}", "duration=2h")
    run_sweep(scenario, tmp_path / "serial")
    run_sweep(scenario, tmp_path / "parallel", workers=2)
    for name in ("runs", "propagation", "exposure", "timeseries", "layers"):
        serial = pd.read_parquet(tmp_path / "serial" / f"{name}.parquet")
        parallel = pd.read_parquet(tmp_path / "parallel" / f"{name}.parquet")
        drop = [c for c in serial.columns if "wall_seconds" in c]
        pd.testing.assert_frame_equal(serial.drop(columns=drop), parallel.drop(columns=drop))


def test_faster_retrain_suppresses_an_aversion_no_worse_and_bounds_enclose_every_variant(tmp_path):
    data = apply_override(TINY, "stack.policy=tests.test_sweep:TopicDislikes")
    for override in (
        "world.users.count=600",
        "world.behavior.explicit_prob=0.8",
        "stack.layers.retrain={every: 1h, latency: 0s, compute_time: 0s}",
        "interventions=[{kind: topic_aversion, at: 2h, topic: 1, users: 0.5, among: all, "
        "strength: 8}]",
        "variants={grid: {stack.layers.retrain.every: {15m: 15m, 1h: 1h, 3h: 3h}}}",
        "bounds={frozen: true, instant: true}",
        "replications=3",
    ):
        data = apply_override(data, override)
    summary = run_sweep(parse_scenario(data), tmp_path)
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    bad = runs.pivot(index="replication", columns="variant", values="bad_impressions")
    order = ["instant", "15m", "1h", "3h", "frozen"]
    means = bad[order].mean()
    assert list(means) == sorted(means), means
    efficiency = runs.pivot(index="replication", columns="variant", values="propagation_efficiency")
    assert (efficiency["instant"] == 1.0).all() and (efficiency["frozen"] == 0.0).all()
    # in between, the share of the instant bound's reduction each cadence buys, by hand from
    # the same runs' bad impressions (the instant bound is each replication's best run)
    assert (bad[order].min(axis=1) == bad["instant"]).all()
    for cadence in ("15m", "1h", "3h"):
        share = (bad["frozen"] - bad[cadence]) / (bad["frozen"] - bad["instant"])
        np.testing.assert_allclose(efficiency[cadence], share, atol=1e-6, err_msg=cadence)
    assert (
        ((efficiency[["15m", "1h", "3h"]] > 0) & (efficiency[["15m", "1h", "3h"]] < 1)).any().any()
    )
    assert summary["comparisons"]["3h"]["bad_impressions"]["delta"]["mean"] > 0


def test_interval_is_the_student_t_interval():
    mean, low, high = interval([10.0, 12.0, 14.0, 16.0])
    # t(0.975, 3) = 3.182446; sd = 2.581989; sem = 1.290994
    assert mean == 13.0
    assert low == pytest.approx(13.0 - 3.182446 * 1.290994, abs=1e-5)
    assert high == pytest.approx(13.0 + 3.182446 * 1.290994, abs=1e-5)
    assert interval([5.0]) == (5.0, None, None)


def test_comparisons_pair_by_replication():
    rows = [
        {"variant": "base", "replication": r, "x": v} for r, v in enumerate([10.0, 20.0, 30.0])
    ] + [{"variant": "fast", "replication": r, "x": v} for r, v in enumerate([9.0, 19.0, 28.0])]
    compared = compare_variants(rows, ["base", "fast"], "base")
    delta = compared["fast"]["x"]["delta"]
    assert delta["mean"] == pytest.approx(-4.0 / 3, abs=1e-6)
    # paired: the spread of the differences (1, 1, 2), not of the values (10 apart)
    assert delta["ci95"][1] - delta["ci95"][0] < 3
    assert "delta" not in compared["base"]["x"]


def test_propagation_efficiency_is_the_share_of_the_best_runs_reduction():
    from sim.measuring.compare import instant_beaten, propagation_efficiency

    rows = [
        {"variant": label, "replication": 0, "bad_impressions": value}
        for label, value in {"frozen": 100.0, "instant": 40.0, "a": 70.0, "b": 20.0}.items()
    ] + [
        {"variant": label, "replication": 1, "bad_impressions": value}
        for label, value in {"frozen": 100.0, "instant": 50.0, "a": 75.0, "b": 110.0}.items()
    ]
    efficiency = propagation_efficiency(rows)
    # replication 0: b beats the instant bound, so b is the best run (1) and instant is not
    assert efficiency[("b", 0)] == 1.0 and efficiency[("instant", 0)] == pytest.approx(0.75)
    assert efficiency[("a", 0)] == pytest.approx(0.375) and efficiency[("frozen", 0)] == 0.0
    # replication 1: instant is the best run; worse than frozen is negative
    assert efficiency[("instant", 1)] == 1.0 and efficiency[("a", 1)] == pytest.approx(0.5)
    assert efficiency[("b", 1)] == pytest.approx(-0.2)
    assert max(value for value in efficiency.values() if value is not None) == 1.0
    assert instant_beaten(rows) == {0: ["b"]}


def test_propagation_efficiency_is_missing_without_frozen_a_value_or_anything_to_gain():
    from sim.measuring.compare import instant_beaten, propagation_efficiency

    def run(label, replication, value):
        return {"variant": label, "replication": replication, "bad_impressions": value}

    rows = [
        run("frozen", 0, 100.0), run("instant", 0, 60.0), run("a", 0, None),  # a not measured
        run("instant", 1, 50.0), run("a", 1, 70.0),  # no frozen run in replication 1
        run("frozen", 2, 30.0), run("instant", 2, 30.0), run("a", 2, 45.0),  # nothing beats frozen
    ]  # fmt: skip
    efficiency = propagation_efficiency(rows)
    assert efficiency[("instant", 0)] == 1.0 and efficiency[("frozen", 0)] == 0.0
    missing = [("a", 0), ("instant", 1), ("a", 1), ("frozen", 2), ("instant", 2), ("a", 2)]
    assert all(efficiency[key] is None for key in missing)
    # a variant level with the instant bound does not beat it; no instant run, nothing beaten
    rows += [run("b", 0, 60.0), run("c", 3, 1.0), run("frozen", 3, 2.0)]
    assert instant_beaten(rows) == {}


def test_times_to_suppression_are_resolved_to_the_suppression_bin():
    from sim.measuring.compare import metric_resolution

    metrics = ["ctr", "aversion.time_to_50pct_seconds", "time_to_10pct_seconds"]
    metrics += ["aversion.time_to_50pct_seconds_low", "mytime_to_5pct_seconds"]
    assert metric_resolution(metrics, 1800) == {
        "aversion.time_to_50pct_seconds": 1800.0,
        "time_to_10pct_seconds": 1800.0,
    }


def test_a_relative_change_is_refused_for_a_signed_metric_and_a_zero_reference():
    from sim.measuring.compare import _relative

    assert _relative("propagation_efficiency", [0.5, 0.6], [0.4, 0.5]) == {
        "relative_missing": "the metric can be negative: no relative change"
    }
    assert _relative("clicks", [3.0, 4.0], [0.0, 0.0]) == {
        "relative_missing": "the reference is zero in every replication"
    }
