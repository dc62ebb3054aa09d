"""Presets run by name, and each checks its claim on a small, fast configuration (the preset
itself runs at a realistic size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.domain import Kind
from sim.errors import ScenarioError
from sim.measuring.metrics import measure
from sim.scenario.loader import load_scenario, packaged_scenarios
from sim.serving.runner import run_scenario

SMALL = ["world.users.count=2000", "world.catalog.items=1000", "world.catalog.creators=100"]


def run(name: str, *overrides: str):
    result = run_scenario(load_scenario(name, [*SMALL, *overrides]))
    return result, measure(result).scalars


@pytest.mark.parametrize(
    "name",
    [
        "instagram-explore-hourly",
        "netflix-live-events",
        "tubi-feature-override",
        "conversational-memory",
        "meta-reels-daily-survey",
        "spotify-nrt-embeddings",
        "netflix-delayed-feedback",
        "bandit-exploration",
        "youtube-example-age",
    ],
)
def test_presets_validate_by_name_at_their_realistic_size(name):
    scenario = load_scenario(name)
    assert scenario.world.users.count >= 20_000 and scenario.description


@pytest.mark.parametrize("name", sorted(packaged_scenarios()))
def test_every_packaged_scenario_has_a_quick_configuration_named_as_such(name):
    full, quick = load_scenario(name), load_scenario(name, quick=True)
    assert quick.name == f"{full.name}-quick"
    assert "Quick configuration (--quick), not the scenario's own size" in quick.description
    assert quick.world.users.count <= 2000 < full.world.users.count
    assert quick.end < full.end or quick.replications < full.replications
    # the command line applies after the quick configuration
    assert load_scenario(name, ["world.users.count=300"], quick=True).world.users.count == 300


def test_quick_needs_a_quick_configuration(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\nduration: 1h\nstack: {policy: random}\n")
    with pytest.raises(ScenarioError, match="plain.yaml: --quick: the scenario has no quick"):
        load_scenario(str(plain), quick=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(packaged_scenarios()))
def test_every_packaged_scenario_runs_quick_from_the_command_line(name, tmp_path):
    """What `recloop run NAME --quick` promises: it runs and writes its results (the wall times
    are measured by bench/presets.py, not asserted here)."""
    from sim.cli import main

    assert main(["run", name, "--quick", "-q", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "report.html").is_file()


def test_instagram_hourly_retrain_absorbs_in_30_to_90_minutes():
    """Logs 15 minutes late (d), 15 minutes of training (c), hourly (T), a 10-minute canary (r)
    for 5% of users: an event is absorbed d + c + U(0, T) later for a canary user and r more
    for everyone else; over events the run observes in full, the median of that mixture is
    x with 0.95 (x - 2400) + 0.05 (x - 1800) = 1800, x = 4170 s (70 minutes)."""
    result, metrics = run(
        "instagram-explore-hourly", "duration=8h", "warmup=2h", "interventions.0.at=6h"
    )
    assert 1800 <= metrics["absorption.retrain.median_seconds"] <= 5400
    latency, compute, every, canary = 900.0, 900.0, 3600.0, 600.0
    table = measure(result).tables["propagation"].to_pandas()
    observable = table[table.time < result.scenario.end - (latency + compute + canary + every)]
    delays = observable.delay_seconds.to_numpy()
    assert observable.absorbed.all() and len(delays) > 200
    in_canary = result.canary_users["retrain"][observable.user.to_numpy()]
    fastest = latency + compute + np.where(in_canary, 0.0, canary)
    assert (delays >= fastest).all() and (delays <= fastest + every).all()
    # the sample median of a uniform of width T: standard error T / (2 sqrt(n)); events
    # cluster in sessions, so 4 standard errors of a quarter of the sample
    tolerance = 4 * every / (2 * np.sqrt(len(delays) / 4))
    assert abs(np.median(delays) - 4170.0) < tolerance


def test_netflix_live_events_features_absorb_in_under_a_second():
    # continuous layers update as windows are served: keep the preset's traffic density (about
    # 5 requests a second) in the small population, or empty stretches would add to the delay
    _, metrics = run(
        "netflix-live-events", "duration=1h", "warmup=30m", "interventions.0.at=75m",
        "world.users.sessions_per_day.median=40",
    )  # fmt: skip
    assert metrics["absorption.realtime_features.median_seconds"] < 1.0


def test_tubi_feature_override_suppresses_with_the_model_frozen():
    result, metrics = run(
        "tubi-feature-override", "world.users.count=4000", "warmup=4h", "duration=10h",
        "interventions.0.at=6h",
    )  # fmt: skip
    warmup = result.scenario.warmup
    retrains = [v for v in result.versions if v.layer == "retrain"]
    # the common warm-up's models only: the last, its bootstrap, is fitted at the warm-up's end
    assert retrains and all(v.triggered_at <= warmup for v in retrains)
    assert all(v.origin != "update" for v in retrains)
    served = result.events.versions["retrain"][result.events.time >= warmup]
    assert np.unique(served).shape[0] == 1  # one model version all measured day
    halved = metrics["topic_aversion@6h.time_to_50pct_seconds"]
    assert halved is not None
    # by the features alone: the same run without them is not halved as soon, if at all
    _, frozen = run(
        "tubi-feature-override", "world.users.count=4000", "warmup=4h", "duration=10h",
        "interventions.0.at=6h", "stack.layers.realtime_features.enabled=false",
    )  # fmt: skip
    without = frozen["topic_aversion@6h.time_to_50pct_seconds"]
    assert without is None or without > halved
    assert (
        frozen["topic_aversion@6h.bad_impressions"] > metrics["topic_aversion@6h.bad_impressions"]
    )


def rejections_shown_again(result) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Impressions of an item after the user dismissed or thumbed it down in the measured
    period, the impressions, and how many such rejections there were."""
    events = result.events
    frame = pd.DataFrame(
        {
            "time": events.time,
            "user": events.user,
            "session": events.session,
            "item": events.item,
            "kind": events.kind,
        }  # fmt: skip
    )
    shown = frame[frame.item >= 0]
    rejected = frame[frame.kind.isin([int(Kind.DISMISS), int(Kind.THUMBS_DOWN)])]
    rejected = rejected[rejected.time >= result.scenario.warmup]
    later = shown.merge(rejected, on=["user", "item"], suffixes=("", "_no"))
    return later[later.time > later.time_no], shown, len(rejected)


def test_conversational_memory_suppresses_within_and_across_sessions_without_weights():
    result, _ = run("conversational-memory", "warmup=4h", "duration=10h")
    warmup = result.scenario.warmup
    assert all(v.triggered_at <= warmup for v in result.versions if v.layer == "retrain")
    later, shown, rejections = rejections_shown_again(result)
    assert rejections > 50
    same_session = later[later.session == later.session_no]
    assert len(same_session) == 0  # the prompt context demotes it at once
    # the same world without the layers shows rejected items again in the session (the
    # README's test configuration: 29 times)
    plain, _ = run(
        "conversational-memory", "warmup=4h", "duration=10h",
        "stack.layers.session_context.enabled=false", "stack.layers.profile_memory.enabled=false",
    )  # fmt: skip
    again, _, _ = rejections_shown_again(plain)
    assert (again.session == again.session_no).sum() > 10
    # sessions that start after the next profile refresh live after the rejection
    memory = sorted(v.live_at for v in result.versions if v.layer == "profile_memory")
    applied = np.searchsorted(memory, later.time_no.to_numpy() + 60, side="left")
    refreshed = np.array([memory[i] if i < len(memory) else np.inf for i in applied])
    starts = shown.groupby("session").time.min()
    after_memory = later[starts.loc[later.session].to_numpy() > refreshed]
    assert len(after_memory) == 0


def test_meta_reels_sparse_survey_labels_absorb_in_a_day_and_suppress_more_slowly():
    # the preset's two variants, paired: the same world and seed, panel 5% vs every user
    runs = {
        sample: run(
            "meta-reels-daily-survey", "world.users.count=4000", "variants=null", "baseline=null",
            f"stack.layers.retrain.label_sample={sample}",
        )[1]
        for sample in (0.05, 1.0)
    }  # fmt: skip
    assert 0.5 * 86400 <= runs[1.0]["absorption.retrain.median_seconds"] <= 1.5 * 86400
    # outside the panel a negative reaches training as a skip: the retrain never absorbs it
    assert runs[0.05]["absorption.retrain.absorbed_share"] < 0.1
    assert runs[0.05]["bad_impressions"] > runs[1.0]["bad_impressions"]


def test_spotify_nearline_absorbs_in_minutes_and_halves_an_aversion_sooner_than_without():
    overrides = ("world.users.count=4000",)
    _, nearline = run("spotify-nrt-embeddings", *overrides)
    _, without = run(
        "spotify-nrt-embeddings", *overrides, "stack.layers.nearline_embeddings.enabled=false"
    )
    assert nearline["absorption.nearline_embeddings.median_seconds"] < 600
    # halved before the run ends, 20 h after the aversion (measured: 19 h; 10 h before the
    # ranker's score noise, which the near-line vectors must outweigh); never halved without
    halved = nearline["topic_aversion@16h.time_to_50pct_seconds"]
    assert halved is not None and halved <= 20 * 3600
    slower = without["topic_aversion@16h.time_to_50pct_seconds"]
    assert slower is None or slower > halved
    assert nearline["bad_impressions"] < without["bad_impressions"]  # the near-line path did it


def test_netflix_delayed_feedback_absorbs_in_days_and_other_layers_cut_residual_exposure():
    from sim.sweeps.plan import plan_runs

    scenario = load_scenario("netflix-delayed-feedback", [*SMALL, "world.users.count=1500"])
    _, _, plans = plan_runs(scenario)
    same_item_within_a_day = {}
    for plan in plans:
        measured = measure(run_scenario(plan.scenario))
        exposure = measured.tables["exposure"].to_pandas()
        row = exposure[(exposure.match == "item") & (exposure.seconds_since_negative == 86400.0)]
        same_item_within_a_day[plan.variant] = float(row.impressions_per_negative.iloc[0])
        if plan.variant == "retrain only":
            assert measured.scalars["absorption.retrain.median_seconds"] >= 2 * 86400
    alone = same_item_within_a_day["retrain only"]
    helped = same_item_within_a_day["with session context and profile memory"]
    assert alone >= 1.0 and helped <= 0.25 * alone  # measured: 5.29 and 0.59


def test_bandit_exploration_avoids_disliked_topics_as_uncertainty_drops_and_reports_regret():
    def slot(*overrides: str):
        result, metrics = run(
            "bandit-exploration", "variants=null", "baseline=null", "duration=1h",
            "world.users.count=4000", *overrides,
        )  # fmt: skip
        events = result.events
        cold = (events.position == 0) & (events.item >= 0) & (events.time < 7200)  # no model yet
        clickbait = np.isin(result.item_topic[events.item[cold]], [3, 11])  # the preset's topics
        half_hour = (events.time[cold] // 1800).astype(int)
        return np.bincount(half_hour, weights=clickbait) / np.bincount(half_hour), metrics

    at_random, plain = slot("stack.layers.bandit.enabled=false")
    thompson, explored = slot()
    assert 0.06 < at_random.mean() < 0.14  # 2 of 20 topics
    assert thompson[3] < 0.5 * thompson[0] and thompson[3] < 0.5 * at_random.mean()
    for metrics in (plain, explored):
        assert 0 < metrics["regret_per_request"] < metrics["oracle_expected_clicks_per_request"]


def test_youtube_example_age_keeps_fresh_items_from_being_penalized_by_model_age():
    def fresh_share_by_model_age(example_age: bool):
        result, metrics = run(
            "youtube-example-age", "variants=null", "baseline=null", "duration=2d", "warmup=3d",
            "stack.layers.retrain.phase=18h",  # two retrains cover 41 of the 48 measured hours
            "world.catalog.new_items_per_day=100", f"stack.policy.params.example_age={example_age}",
            # at this size most explicit negatives come in the last hours, after the last retrain:
            # session abandons (which only a retrain absorbs) spread the events over the days
            "metrics.propagation_kinds=[short_dwell, dismiss, not_interested, thumbs_down, "
            "block_creator, abandon]",
        )  # fmt: skip
        events = result.events
        shown = (events.item >= 0) & (events.time >= result.scenario.warmup)
        times, items = events.time[shown], events.item[shown]
        fresh = times - result.item_created_at[items] < 12 * 3600
        live = np.sort([v.live_at for v in result.versions if v.layer == "retrain"])
        model_age = times - live[np.searchsorted(live, times, side="right") - 1]
        quarter = (model_age // (6 * 3600)).astype(int)  # the model is 0-6 h old, 6-12 h, ...
        return np.bincount(quarter, weights=fresh) / np.bincount(quarter), metrics

    stale, without = fresh_share_by_model_age(False)
    aged, with_age = fresh_share_by_model_age(True)
    # measured: without example age 0.6% of impressions when the model is new, 0 by its last
    # quarter-day; with it 27%, 37%, 37%, 20%
    assert stale[3] < 0.5 * stale[0]
    assert aged[3] > 0.5 * aged[0] and aged.min() > 10 * stale.max()
    for metrics in (without, with_age):
        assert 3600 <= metrics["absorption.retrain.median_seconds"] <= 3 * 86400


@pytest.mark.slow
def test_delayed_labels_corrected_retrain_beats_naive_and_the_label_pipeline_dominates():
    from sim.sweeps.plan import plan_runs

    # by its file: a checkout's scenarios, whichever recloop is installed
    preset = Path(__file__).resolve().parents[1] / "scenarios" / "delayed-labels.yaml"
    _, _, plans = plan_runs(load_scenario(str(preset), quick=True))
    ctr, split = {}, {}
    for plan in plans:
        if plan.variant not in ("naive", "corrected"):
            continue
        measured = measure(run_scenario(plan.scenario))
        ctr[plan.variant] = measured.scalars["ctr"]
        split[plan.variant] = measured.tables["propagation"].to_pandas()
    # a naive retrain reads the clicks still on their way as no clicks
    assert ctr["corrected"] > ctr["naive"]
    # a short dwell's label waits for its session to end: minutes, against the feature store's
    # second of latency
    table = split["naive"]
    rows = table[(table.layer == "realtime_features") & (table.kind == "short_dwell")]
    rows = rows[rows.absorbed]
    assert len(rows) >= 10
    parts = ["latency", "trigger_wait", "compute", "rollout"]
    label = rows.label_delay_seconds.mean()
    assert all(label > rows[f"{part}_seconds"].mean() for part in parts)  # the largest part
    lost = table[(table.kind == "not_interested") & ~table.absorbed]
    assert len(lost) > 0  # 5% of them never logged: absorbed by no layer
