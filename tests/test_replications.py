"""Issue-20 adaptive replications: paired replications are added until every variant's 95%
interval on a metric is narrow enough, or ``max`` have run; the count is the smallest that meets
the target whatever the batching, so an interrupted sweep resumes to the same results."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from sim.cli import main
from sim.measuring.metrics import measure, metric_names
from sim.measuring.replications import first_met, next_batch, precision
from sim.scenario.loader import parse_scenario
from sim.scenario.spec import AdaptiveReplications, Precision
from sim.serving.runner import run_scenario
from sim.sweeps.plan import describe_plan, plan_runs
from sim.sweeps.sweep import run_sweep
from tests.conftest import TINY, tiny
from tests.test_reliability import comparable, start, wait_for_runs, write

RULE = {"min": 3, "max": 12, "until": {"metric": "bad_impressions", "relative_half_width": 0.15}}
#: Half the users turn against the most shown of two topics: many bad impressions, and their
#: count varies little between replications (about 11%), so ±15% is reached in a few.
EASY = {
    **TINY,
    "duration": "3h",
    "world": {
        "users": {"count": 300, "sessions_per_day": {"median": 6}},
        "catalog": {"items": 200, "topics": 2, "creators": 30, "dim": 8, "new_items_per_day": 50},
    },
    "interventions": [
        {"kind": "topic_aversion", "at": "2h", "topic": "most_shown", "users": 0.5, "among": "all"}
    ],
    "variants": {"grid": {"stack.layers.retrain.every": ["20m", "1h"]}},
    "replications": RULE,
}


def by_hand(runs: pd.DataFrame, metric: str, replications: int) -> dict[str, float]:
    """Each variant's 95% Student-t half-width over its first replications, over |mean|."""
    found = {}
    for variant, group in runs[runs.replication < replications].groupby("variant"):
        values = group[metric].to_numpy(float)
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        found[str(variant)] = half / abs(values.mean())
    return found


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("easy") / "out"
    assert main(["run", str(write(out.parent, EASY)), "--out", str(out), "-q"]) == 0
    return out


def test_an_easy_case_stops_as_soon_as_every_variant_is_precise_enough(easy):
    summary = json.loads((easy / "summary.json").read_text())
    runs = pd.read_parquet(easy / "runs.parquet")
    count = summary["replications"]
    assert 3 <= count < 12
    assert len(runs) == 2 * count and set(runs.replication) == set(range(count))
    plan = summary["replication_plan"]
    assert plan["stopped"] == "precision reached"
    assert plan["min"] == 3 and plan["max"] == 12 and plan["until"] == RULE["until"]
    reached = by_hand(runs, "bad_impressions", count)
    assert plan["half_widths"] == pytest.approx(reached, abs=1e-5)
    assert max(reached.values()) <= 0.15
    for fewer in range(3, count):  # no smaller count met the target
        assert max(by_hand(runs, "bad_impressions", fewer).values()) > 0.15
    assert any(f"replications: {count} run" in note for note in summary["notes"])


def test_a_hard_case_runs_to_max_and_says_so(tmp_path):
    until = {**RULE["until"], "relative_half_width": 0.01}
    hard = {**EASY, "replications": {**RULE, "max": 5, "until": until}}
    summary = run_sweep(parse_scenario(hard), tmp_path)
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert summary["replications"] == 5 and len(runs) == 10
    plan = summary["replication_plan"]
    assert plan["stopped"] == "max reached"
    reached = by_hand(runs, "bad_impressions", 5)
    assert plan["half_widths"] == pytest.approx(reached, abs=1e-5)
    assert all(width > 0.01 for width in reached.values())
    assert any("the maximum (5) ran" in note and "±1%" in note for note in summary["notes"])


def test_a_metric_whose_mean_is_zero_cannot_reach_a_relative_target(tmp_path):
    # no layer has a cost configured: cost_per_day is 0 in every run
    rule = {"min": 2, "max": 3, "until": {"metric": "cost_per_day", "relative_half_width": 0.5}}
    summary = run_sweep(tiny("duration=1h", "world.users.count=100", f"replications={rule}"),
                        tmp_path)  # fmt: skip
    plan = summary["replication_plan"]
    assert summary["replications"] == 3 and plan["stopped"] == "max reached"
    assert plan["half_widths"] == {"default": None}
    assert "mean cost_per_day is 0" in plan["unreachable"]["default"]
    assert any("mean cost_per_day is 0" in note for note in summary["notes"])


@pytest.mark.parametrize(
    "kill", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_an_interrupted_adaptive_sweep_resumes_to_the_uninterrupted_results(
    kill, easy, tmp_path, capsys
):
    out = tmp_path / "out"
    process = start(["run", str(write(tmp_path, EASY)), "--out", str(out), "-q"], tmp_path)
    finished = wait_for_runs(out, 3, process)
    process.send_signal(kill)
    _, err = process.communicate(timeout=60)
    assert process.returncode == (130 if kill == signal.SIGINT else -signal.SIGKILL), err
    if kill == signal.SIGINT:
        assert "runs are finished and kept" in err and "of at most 24 runs" in err, err
    assert not (out / "summary.json").exists()
    assert main(["run", "--resume", str(out)]) == 0
    err = capsys.readouterr().err
    ran = [line for line in err.splitlines() if "] " in line]
    expected = json.loads((easy / "summary.json").read_text())
    assert len(ran) <= 2 * expected["replications"] - finished + 1  # finished runs kept
    for name in ("runs", "suppression", "timeseries"):
        pd.testing.assert_frame_equal(comparable(out, name), comparable(easy, name))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replication_plan"] == expected["replication_plan"]
    assert summary["comparisons"] == expected["comparisons"]


def test_the_command_line_reports_the_precision_after_each_batch(tmp_path, capsys):
    scenario = tmp_path / "easy.yaml"
    scenario.write_text(yaml.safe_dump(EASY))
    out = tmp_path / "again"
    assert main(["run", str(scenario), "--out", str(out), "--set", "replications.max=3"]) == 0
    err = capsys.readouterr().err
    assert "2 variants × 3 to 3 replications (until every variant's bad_impressions is within " \
           "±15%, 95% interval) = 6 to 6 runs" in err  # fmt: skip
    runs = pd.read_parquet(out / "runs.parquet")
    worst = max(by_hand(runs, "bad_impressions", 3).items(), key=lambda item: item[1])
    line = f"replication 3 of at most 3: bad_impressions ±{100 * worst[1]:.3g}% ({worst[0]}), "
    assert line + "target ±15%" in err, err


def test_the_plan_line_and_the_memory_check_plan_for_max():
    rule = {**RULE, "until": {"metric": "ctr", "relative_half_width": 0.1}}
    scenario = tiny(f"replications={json.dumps(rule)}")
    labels, _, plans = plan_runs(scenario)
    assert len(plans) == 12 and {plan.replication for plan in plans} == set(range(12))
    assert describe_plan(labels, plans, 2, scenario.replications).startswith(
        "1 variant × 3 to 12 replications (until every variant's ctr is within ±10%, 95% "
        "interval) = 3 to 12 runs of 5h simulated, 2 workers"
    )


# --- the stopping rule on rows made up to test it --------------------------------------------


def rows(values: dict[str, list[float | None]], metric: str = "m") -> list[dict]:
    return [
        {"variant": label, "replication": r, metric: value}
        for label, series in values.items()
        for r, value in enumerate(series)
    ]


def test_the_count_kept_is_the_smallest_that_meets_the_target_whatever_the_batch():
    series = [10.0, 14.0, 6.0, 10.0, 10.0, 10.0, 10.0]
    data = rows({"a": series, "b": [5.0] * 7})
    rule = AdaptiveReplications(min=3, max=12, until=Precision(metric="m", relative_half_width=0.5))
    # a's t(0.975, n-1)·sd/√n over its mean, 10: n = 3: 4.30·4/√3 = 9.9 → 0.99;
    # n = 4: 3.18·3.27/2 = 5.2 → 0.52; n = 5: 2.78·2.83/√5 = 3.5 → 0.35 ≤ 0.5 (b: ±0)
    for after in range(2, 5):  # a batch ending anywhere from 5 on finds 5
        assert first_met(data, ["a", "b"], rule, after, 4) is None
        for done in range(5, 8):
            found = first_met(data, ["a", "b"], rule, after, done)
            assert found is not None and found.replications == 5
    values = np.array(series[:5])
    half = stats.t.ppf(0.975, 4) * values.std(ddof=1) / math.sqrt(5)
    assert found.half_widths == {"a": pytest.approx(half / 10.0, abs=1e-6), "b": 0.0}
    assert found.half_widths["a"] == pytest.approx(0.351, abs=1e-3)


def test_missing_values_and_single_values_are_reported_not_looped_on_silently():
    until = Precision(metric="m", relative_half_width=0.1)
    reached = precision(rows({"a": [None, None, None], "b": [1.0, None, None]}), ["a", "b"],
                        until, 3)  # fmt: skip
    assert reached.half_widths == {"a": None, "b": None} and not reached.met
    assert "not computed in any run" in reached.reasons["a"]
    assert "at least 2 replications" in reached.reasons["b"]


def test_batches_keep_workers_busy_but_do_not_overshoot_what_precision_needs():
    rule = AdaptiveReplications(max=12, until=Precision(metric="m", relative_half_width=0.1))
    assert next_batch(0, rule, None, runs_per_replication=4, workers=8) == 3  # min first
    slack = precision(rows({"a": [1.0, 1.2, 0.8]}), ["a"], rule.until, 3)
    assert next_batch(3, rule, slack, runs_per_replication=1, workers=4) == 4  # far: fill
    assert next_batch(3, rule, slack, runs_per_replication=4, workers=1) == 1
    close = precision(rows({"a": [1.0, 1.05, 0.95]}), ["a"], rule.until, 3)
    assert close.half_widths["a"] == pytest.approx(0.124, abs=1e-3)  # 4.30·0.05/√3
    # half-widths shrink as 1/√n: 3·(0.124/0.1)² = 4.6, so 2 more, not 4
    assert next_batch(3, rule, close, runs_per_replication=1, workers=4) == 2
    assert next_batch(11, rule, slack, runs_per_replication=1, workers=8) == 1  # max


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {**RULE, "until": {**RULE["until"], "metric": "bad_impresions"}},
            "replications.until.metric: 'bad_impresions' is not a runs.parquet metric of this "
            "scenario; did you mean 'bad_impressions'?",
        ),
        (
            {**RULE, "min": 0},
            "replications.min: Input should be greater than or equal to 1 (got 0)",
        ),
        ({**RULE, "min": 5, "max": 4}, "replications.max: must be at least min (5) (got 4)"),
        (
            {**RULE, "until": {**RULE["until"], "relative_half_width": -0.1}},
            "replications.until.relative_half_width: Input should be greater than 0 (got -0.1)",
        ),
        ({"max": 3}, "replications.until: required but missing"),
    ],
)
def test_bad_adaptive_replications_are_one_line_errors(rule, message, tmp_path, capsys):
    path = write(tmp_path, {**EASY, "replications": rule})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"recloop: error: {message}", err
    assert not (tmp_path / "out" / "variants").exists()


def test_a_metric_the_scenario_does_not_measure_is_refused(tmp_path, capsys):
    path = write(tmp_path, {**TINY, "replications": RULE})  # no intervention: no bad impressions
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        "recloop: error: replications.until.metric: 'bad_impressions' is not a runs.parquet "
        "metric of this scenario (it is measured after a topic_aversion or item_turns_bad "
        "intervention)"
    )


def test_validate_checks_the_metric_too(tmp_path, capsys):
    rule = {**RULE, "until": {**RULE["until"], "metric": "ctx"}}
    assert main(["validate", str(write(tmp_path, {**TINY, "replications": rule}))]) == 2
    assert (
        "replications.until.metric: 'ctx' is not a runs.parquet metric of this scenario; did you "
        "mean 'ctr'?" in capsys.readouterr().err
    )


def test_a_metric_measured_in_some_variants_only_is_refused(tmp_path, capsys):
    cases = [{"label": "on", "set": {"metrics.regret": True}}, {"label": "off", "set": {}}]
    rule = {**RULE, "until": {**RULE["until"], "metric": "regret"}}
    path = write(tmp_path, {**TINY, "variants": {"cases": cases}, "replications": rule})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "-q"]) == 2
    assert "replications.until.metric: 'regret' is not measured in variant(s) 'off'" in (
        capsys.readouterr().err
    )


def test_the_known_metrics_are_the_columns_a_run_writes():
    scenario = tiny(
        "duration=2h",
        "world.users.count=150",
        "metrics.regret=true",
        "stack.layers.realtime_features={}",
        "interventions=[{kind: topic_aversion, at: 2h, topic: most_shown}, "
        "{kind: item_turns_bad, at: 150m, items: 0.1}, "
        "{kind: traffic_spike, at: 2h, multiplier: 2, for: 10m}]",
    )
    scalars = measure(run_scenario(scenario)).scalars
    assert sorted(metric_names(scenario)) == sorted(scalars)


def test_fewer_than_three_replications_at_least_are_flagged(tmp_path, capsys):
    rule = {"min": 2, "max": 2, "until": {"metric": "ctr", "relative_half_width": 0.5}}
    data = {**TINY, "duration": "1h", "replications": rule}
    data["world"] = {**TINY["world"], "users": {"count": 100, "sessions_per_day": {"median": 6}}}
    assert main(["run", str(write(tmp_path, data)), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert (
        "note: replications.min is 2: intervals over fewer than 3 replications are unreliable"
        in err
    )
    assert "replication 2 of at most 2: ctr ±" in err


@pytest.mark.slow
def test_runs_beyond_the_count_met_are_left_out_so_workers_do_not_change_results(tmp_path):
    # one variant on 2 workers: after the first 3, replications r3 and r4 run together, and the
    # target (±7%) is met at 4 replications (r0-r3): r4 ran for nothing
    data = {key: value for key, value in EASY.items() if key != "variants"}
    data["replications"] = {**RULE, "until": {**RULE["until"], "relative_half_width": 0.07}}
    serial = run_sweep(parse_scenario(data), tmp_path / "serial")
    parallel = run_sweep(parse_scenario(data), tmp_path / "parallel", workers=2)
    assert serial["replication_plan"] == parallel["replication_plan"]
    assert serial["replications"] == parallel["replications"] == 4
    ran = len(list((tmp_path / "parallel" / "variants").glob("*/r*/summary.json")))
    assert ran == 5  # one replication ran beyond the count met, and is left out
    for name in ("runs", "suppression", "timeseries"):
        pd.testing.assert_frame_equal(
            comparable(tmp_path / "parallel", name), comparable(tmp_path / "serial", name)
        )
