"""Issue-20 effects per lever and intervals inside each metric's range: a 2×2×2 grid sweep's
main effects and interactions against pandas, the CLI's sentences, the bounds of every interval
over random replications, and zeros handled by a stated method."""

from __future__ import annotations

import contextlib
import io
import itertools
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sim.cli import main
from sim.measuring.compare import (
    LOG_RATIO,
    RATIO_OF_MEANS,
    compare_variants,
    metric_kind,
    metric_range,
    relative_change,
)
from sim.measuring.effects import Cells, estimate_effects, grid_factors
from sim.scenario.loader import apply_override
from sim.sweeps.plan import grid_levels
from sim.sweeps.results import _variant_row
from sim.sweeps.sweep import run_sweep
from tests.conftest import TINY, tiny

AXES = {
    "stack.layers.retrain.every": {"retrain 20m": "20m", "retrain 7d": "7d"},
    "stack.layers.realtime_features.enabled": {"features on": True, "features off": False},
    "stack.layers.nearline_embeddings.enabled": {"near-line on": True, "near-line off": False},
}
BASELINE = "retrain 20m · features off · near-line off"
REFERENCE = {path: levels for path, levels in zip(AXES, BASELINE.split(" · "), strict=True)}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A 2×2×2 grid (retrain cadence × real-time features × near-line), 3 replications, run by
    the command line: (results directory, what it printed)."""
    folder = tmp_path_factory.mktemp("grid")
    data = TINY
    for override in (
        "world.users.count=200",
        "duration=1h",
        "warmup=30m",
        "stack.layers.retrain.cost={per_run: 100}",
        "stack.layers.realtime_features={cost: {per_event: 0.01}}",
        "stack.layers.nearline_embeddings={every: 10m, cost: {per_run: 1}}",
        "interventions=[{kind: topic_aversion, at: 40m, topic: 2, users: 0.5, strength: 6}]",
        f"variants={json.dumps({'grid': AXES})}",
        f"baseline={BASELINE}",
        "replications=3",
    ):
        data = apply_override(data, override)
    scenario = folder / "grid.yaml"
    scenario.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        assert main(["run", str(scenario), "--out", str(folder / "out")]) == 0
    return folder / "out", printed.getvalue()


def _levels(variant: str) -> dict[str, str]:
    return dict(zip(AXES, variant.split(" · "), strict=True))


def _by_hand(runs: pd.DataFrame, metric: str, fixed: dict[str, str]) -> pd.Series:
    """Per replication, ``metric`` averaged over the grid cells with the ``fixed`` levels."""
    cells = runs[runs.variant.map(lambda v: all(_levels(v)[p] == x for p, x in fixed.items()))]
    assert cells.variant.nunique() == 2 ** (len(AXES) - len(fixed))
    return cells.groupby("replication")[metric].mean()


def _t_interval(values: pd.Series) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def test_main_effects_are_the_paired_differences_computed_by_hand(grid_sweep):
    out, _ = grid_sweep
    runs = pd.read_parquet(out / "runs.parquet")
    effects = pd.read_parquet(out / "effects.parquet")
    assert set(effects.kind) == {"main", "interaction"}
    checked = 0
    for metric in ("bad_impressions", "ctr", "cost_per_day", "repeat_offences_per_negative"):
        for path, levels in AXES.items():
            factor = ".".join(path.split(".")[-2:])
            level = next(label for label in levels if label != REFERENCE[path])
            ours = _by_hand(runs, metric, {path: level})
            theirs = _by_hand(runs, metric, {path: REFERENCE[path]})
            differences = ours - theirs
            row = effects[
                (effects.metric == metric) & (effects.kind == "main") & (effects.factor == factor)
            ].iloc[0]
            assert (row.level, row.reference, row.n) == (level, REFERENCE[path], 3)
            assert row.effect == pytest.approx(differences.mean(), abs=1e-5)
            low, high = _t_interval(differences)
            bottom, top = metric_range(metric)
            if top is not None:  # a share: a difference of two lies in [-1, 1]
                low, high = np.clip([low, high], bottom - top, top - bottom)
            assert row.ci_low == pytest.approx(low, abs=1e-5)
            assert row.ci_high == pytest.approx(high, abs=1e-5)
            if (ours > 0).all() and (theirs > 0).all():
                ratios = np.log(ours / theirs)
                assert row.relative == pytest.approx(np.expm1(ratios.mean()), abs=1e-5)
                assert row.relative_method == LOG_RATIO
                low, high = _t_interval(ratios)
                assert row.relative_ci_low == pytest.approx(np.expm1(low), abs=1e-5)
                assert row.relative_ci_high == pytest.approx(np.expm1(high), abs=1e-5)
            checked += 1
    assert checked == 12


def test_interactions_are_the_paired_differences_of_differences(grid_sweep):
    out, _ = grid_sweep
    runs = pd.read_parquet(out / "runs.parquet")
    effects = pd.read_parquet(out / "effects.parquet")
    interactions = effects[(effects.kind == "interaction") & (effects.metric == "bad_impressions")]
    assert len(interactions) == 3  # three pairs of axes with one non-reference level each
    for first, second in itertools.combinations(AXES, 2):
        a = next(label for label in AXES[first] if label != REFERENCE[first])
        b = next(label for label in AXES[second] if label != REFERENCE[second])
        a0, b0 = REFERENCE[first], REFERENCE[second]
        cell = {
            (x, y): _by_hand(runs, "bad_impressions", {first: x, second: y})
            for x, y in itertools.product((a, a0), (b, b0))
        }
        differences = cell[(a, b)] - cell[(a0, b)] - cell[(a, b0)] + cell[(a0, b0)]
        name = f"{'.'.join(first.split('.')[-2:])} × {'.'.join(second.split('.')[-2:])}"
        row = interactions[interactions.factor == name].iloc[0]
        assert (row.level, row.reference) == (f"{a} · {b}", f"{a0} · {b0}")
        assert row.effect == pytest.approx(differences.mean(), abs=1e-5)
        low, high = _t_interval(differences)
        assert (row.ci_low, row.ci_high) == (pytest.approx(low, abs=1e-5), pytest.approx(high))
        ratio = np.log(cell[(a, b)] / cell[(a0, b)]) - np.log(cell[(a, b0)] / cell[(a0, b0)])
        assert row.relative == pytest.approx(np.expm1(ratio.mean()), abs=1e-5)


def test_the_summary_and_the_cli_name_the_lever_with_the_largest_effect(grid_sweep):
    out, printed = grid_sweep
    summary = json.loads((out / "summary.json").read_text())
    effects = pd.read_parquet(out / "effects.parquet")
    mains = effects[(effects.kind == "main") & (effects.metric == "bad_impressions")]
    largest = mains.loc[np.log1p(mains.relative).abs().idxmax()]
    named = summary["effects"]["largest"]
    assert (named["factor"], named["level"]) == (largest.factor, largest.level)
    assert named["relative"] == pytest.approx(largest.relative)
    cost = effects[
        (effects.kind == "main")
        & (effects.metric == "cost_per_day")
        & (effects.factor == largest.factor)
    ].iloc[0]
    assert named["cost_per_day"]["effect"] == pytest.approx(cost.effect)
    assert f"largest effect on bad impressions: {largest.level} (vs {largest.reference})" in printed
    headline = summary["effects"]["headline"]
    assert len(headline) == 3 and all(sentence in printed for sentence in headline)
    assert [f["factor"] for f in summary["effects"]["factors"]] == [
        "retrain.every",
        "realtime_features.enabled",
        "nearline_embeddings.enabled",
    ]
    assert summary["effects"]["variants"][BASELINE] == {
        "retrain.every": "retrain 20m",
        "realtime_features.enabled": "features off",
        "nearline_embeddings.enabled": "near-line off",
    }
    assert summary["unreliable"] is False and summary["unreliable_reason"] is None
    assert "excludes no change" not in printed


def test_a_cadence_that_never_fires_in_the_measured_period_is_flagged_from_the_runs(grid_sweep):
    out, _ = grid_sweep
    summary = json.loads((out / "summary.json").read_text())
    retrain = summary["effects"]["factors"][0]
    assert retrain["never_fires"] == ["retrain 7d"]  # 7d in a 1h measured period
    assert all(not f["never_fires"] for f in summary["effects"]["factors"][1:])
    layers = pd.read_parquet(out / "layers.parquet")
    updates = layers[(layers.layer == "retrain") & (layers.origin == "update")]
    assert updates.variant.str.startswith("retrain 7d").sum() == 0
    assert updates.variant.str.startswith("retrain 20m").sum() > 0
    sentence = next(s for s in summary["effects"]["headline"] if s.startswith("retrain 7d"))
    assert "retrain 7d never fires" in sentence


def test_a_sentence_says_whatever_the_other_levers_only_without_a_detectable_interaction():
    from sim.measuring.effects import effect_sentences

    factors = grid_factors(
        {"a1 · b1": {"A": "a1", "B": "b1"}, "a1 · b0": {"A": "a1", "B": "b0"},
         "a0 · b1": {"A": "a0", "B": "b1"}, "a0 · b0": {"A": "a0", "B": "b0"}},
        "a0 · b0",
    )  # fmt: skip

    def rows(interaction: float) -> list[dict]:
        """Per replication, A cuts harm by half at b0 and by ``interaction`` more at b1."""
        found = []
        for r, noise in enumerate((1.0, 1.1, 0.9, 1.05)):
            for a, b in itertools.product(("a0", "a1"), ("b0", "b1")):
                value = 100 * noise * (0.5 if a == "a1" else 1.0)
                value *= interaction * (1 + 0.01 * r) if (a, b) == ("a1", "b1") else 1.0
                found.append({"variant": f"{a} · {b}", "replication": r, "bad_impressions": value})
        return found

    for interaction, expected in ((1.0, "whatever B"), (0.4, "the effect depends on B")):
        levels = {label: dict(zip("AB", label.split(" · "), strict=True)) for label in (
            "a1 · b1", "a1 · b0", "a0 · b1", "a0 · b0")}  # fmt: skip
        effects = estimate_effects(rows(interaction), factors, levels)
        cells = Cells(rows(interaction), factors, levels)
        sentences = effect_sentences(effects, factors, "bad_impressions", {}, 3600.0, cells)
        first = next(s for s in sentences if s.startswith("a1"))
        assert expected in first, first
        assert first.startswith("a1 (vs a0): cut bad impressions by")
    # where it depends, the sentence gives the effect at each level of the other lever: at b0
    # exactly half in every replication; at b1 0.4 × (1 + r / 100) of that half
    assert "-50% [-50%, -50%] at b0" in first
    at_b1 = np.expm1(np.mean(np.log(0.2 * (1 + 0.01 * np.arange(4)))))
    assert f"{100 * at_b1:+.0f}% [" in first and f"{100 * at_b1:+.0f}%" != "-50%"


def test_a_case_list_gets_no_effects_and_two_replications_are_flagged_unreliable(tmp_path):
    summary = run_sweep(
        tiny(
            "variants={cases: [{label: a, set: {stack.layers.retrain.every: 20m}}, "
            "{label: b, set: {stack.layers.retrain.every: 1h}}]}",
            "duration=30m",
            "warmup=30m",
            "world.users.count=150",
            "replications=2",
        ),
        tmp_path,
    )
    assert "effects" not in summary and not (tmp_path / "effects.parquet").exists()
    assert summary["effects_absent"] == "the variants are a list of cases, not a grid"
    assert summary["unreliable"] is True
    assert "only 2 replications" in summary["unreliable_reason"]
    from sim.cli import _comparison

    printed = _comparison(summary)
    assert "no effects per lever: the variants are a list of cases" in printed
    assert "]*" in printed and "* unreliable: only 2 replications" in printed


def test_grid_levels_are_recorded_when_planning_not_parsed_from_labels():
    scenario = tiny(
        "variants={grid: {stack.layers.retrain.every: [20m, 1h], world.behavior.explicit_prob: "
        "{'a · b': 0.2, c: 0.4}}}"
    )
    levels = grid_levels(scenario)
    # a level label containing the separator still maps back to its axis
    assert levels["retrain.every=20m · a · b"] == {
        "stack.layers.retrain.every": "retrain.every=20m",
        "world.behavior.explicit_prob": "a · b",
    }
    assert len(levels) == 4
    assert grid_levels(tiny()) == {}


# --- intervals inside the possible range ------------------------------------------------------


def test_every_metric_a_run_writes_has_a_known_range(grid_sweep):
    out, _ = grid_sweep
    runs = pq.read_table(out / "runs.parquet").to_pylist()
    from sim.measuring.compare import numeric_metrics

    unknown = [metric for metric in numeric_metrics(runs) if metric_kind(metric) == "unknown"]
    assert unknown == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric_resolution"] == {
        f"topic_aversion@40m.time_to_{percent}pct_seconds": 1800.0 for percent in (50, 10)
    }


def test_zeros_fall_back_to_a_stated_method_or_are_missing_with_the_reason():
    assert relative_change([0.0, 4.0, 6.0], [10.0, 8.0, 12.0])["method"] == RATIO_OF_MEANS
    found = relative_change([0.0, 4.0, 6.0], [10.0, 8.0, 12.0])
    assert found["mean"] == pytest.approx(10.0 / 30.0 - 1.0, abs=1e-6)
    assert found["ci95"][0] >= -1.0
    assert relative_change([0.0, 0.0], [3.0, 5.0]) == {
        "mean": -1.0,
        "ci95": None,
        "n": 2,
        "method": "zero in every replication",
    }
    assert relative_change([1.0, 2.0], [0.0, 0.0])["missing"] == (
        "the reference is zero in every replication"
    )
    # paired log ratios: a 94% cut in each replication is -94%, with an interval above -100%
    found = relative_change([6.0, 12.0, 3.0], [100.0, 200.0, 50.0])
    assert found["method"] == LOG_RATIO and found["ci95"] == [-0.94, -0.94]


KINDS = {
    "bad_impressions": st.integers(0, 500).map(float),
    "ctr": st.floats(0.0, 1.0),
    "topic_aversion.time_to_50pct_seconds": st.floats(0.0, 1e5),
    "propagation_efficiency": st.floats(-3.0, 1.0),
}


@settings(max_examples=60, deadline=None)
@given(
    replications=st.integers(2, 5),
    data=st.data(),
)
def test_no_interval_falls_outside_the_metrics_possible_range(replications, data):
    labels = ["a0 · b0", "a0 · b1", "a1 · b0", "a1 · b1"]
    rows = [
        {"variant": label, "replication": r}
        | {metric: data.draw(strategy) for metric, strategy in KINDS.items()}
        for label in labels
        for r in range(replications)
    ]
    compared = compare_variants(rows, labels, "a0 · b0")
    variant_rows = [
        _variant_row(label, metric, entry)
        for label, metrics in compared.items()
        for metric, entry in metrics.items()
    ]
    levels = {label: dict(zip("AB", label.split(" · "), strict=True)) for label in labels}
    effects = estimate_effects(rows, grid_factors(levels, "a0 · b0"), levels)
    for row in variant_rows:
        low, high = metric_range(row["metric"])
        for bound in (row.get("ci_low"), row.get("ci_high")):
            if bound is not None:
                assert low is None or bound >= low, row
                assert high is None or bound <= high, row
        if row["metric"] == "ctr" and row.get("delta_ci_low") is not None:
            assert -1.0 <= row["delta_ci_low"] <= row["delta_ci_high"] <= 1.0, row
    for row in [*variant_rows, *effects]:
        for key in ("relative", "relative_ci_low", "relative_ci_high"):
            if row.get(key) is not None:
                assert row[key] >= -1.0, row
        if row["metric"] == "propagation_efficiency":
            assert row.get("relative") is None  # signed: no relative change
    for row in effects:
        if row["metric"] == "ctr" and row["ci_low"] is not None:
            width = 1.0 if row["kind"] == "main" else 2.0
            assert -width <= row["ci_low"] <= row["ci_high"] <= width, row


# --- effects of a hand-built grid ---------------------------------------------------------------

#: clicks per (A level, B level) and replication; A's reference a0, B's b0
CLICKS = {
    ("a0", "b0"): (10, 12, 8),
    ("a0", "b1"): (14, 16, 10),
    ("a1", "b0"): (20, 26, 18),
    ("a1", "b1"): (30, 34, 24),
    ("a2", "b0"): (5, 6, 4),
    ("a2", "b1"): (9, 10, 8),
}
#: CTR by A level alone (a1 has a zero: the relative effect falls back to the ratio of means);
#: a2 · b1 of replication 2 was not measured
CTR = {"a0": (0.05, 0.5, 0.05), "a1": (0.95, 0.0, 0.95), "a2": (0.1, 0.1, 0.1)}
HAND_LEVELS = {f"{a} · {b}": {"A": a, "B": b} for a, b in CLICKS}


def _hand_rows() -> list[dict]:
    rows = []
    for (a, b), clicks in CLICKS.items():
        for r in range(3):
            ctr = None if (a, b, r) == ("a2", "b1", 2) else CTR[a][r]
            rows.append(
                {"variant": f"{a} · {b}", "replication": r, "clicks": clicks[r], "ctr": ctr}
                | {"propagation_efficiency": 0.5 - 0.1 * r if a == "a1" else 0.2, "seed": 7}
            )
    # a bound is no grid cell: ignored
    rows.append({"variant": "frozen", "replication": 0, "clicks": 1000, "ctr": 0.5})
    return rows


def _student(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def test_effects_of_a_hand_built_grid_are_the_paired_differences_worked_out_by_hand():
    factors = grid_factors(HAND_LEVELS, "a0 · b0")
    assert [(f.name, f.path, f.levels, f.reference) for f in factors] == [
        ("A", "A", ("a0", "a1", "a2"), "a0"),
        ("B", "B", ("b0", "b1"), "b0"),
    ]
    effects = estimate_effects(_hand_rows(), factors, HAND_LEVELS)
    assert [(e["metric"], e["kind"], e["factor"], e["level"]) for e in effects] == [
        (metric, kind, factor, level)
        for metric in ("clicks", "ctr", "propagation_efficiency")
        for kind, factor, level in (
            ("main", "A", "a1"),
            ("main", "A", "a2"),
            ("main", "B", "b1"),
            ("interaction", "A × B", "a1 · b1"),
            ("interaction", "A × B", "a2 · b1"),
        )
    ]
    by = {(e["metric"], e["factor"], e["level"]): e for e in effects}
    # clicks, a1 against a0 averaged over B: (25 - 12, 30 - 14, 21 - 9) = (13, 16, 12)
    row = by[("clicks", "A", "a1")]
    low, high = _student([13, 16, 12])
    logs = np.log([25 / 12, 30 / 14, 21 / 9])
    log_low, log_high = _student(logs)
    assert row == {
        "metric": "clicks",
        "kind": "main",
        "factor": "A",
        "level": "a1",
        "reference": "a0",
        "effect": pytest.approx(41 / 3, abs=1e-6),
        "ci_low": pytest.approx(low, abs=1e-6),
        "ci_high": pytest.approx(high, abs=1e-6),
        "relative": pytest.approx(np.expm1(logs.mean()), abs=1e-6),
        "relative_ci_low": pytest.approx(np.expm1(log_low), abs=1e-6),
        "relative_ci_high": pytest.approx(np.expm1(log_high), abs=1e-6),
        "relative_method": LOG_RATIO,
        "n": 3,
        "note": None,
    }
    # a2: (7 - 12, 8 - 14, 6 - 9); B's b1 against b0 averaged over the three levels of A
    assert by[("clicks", "A", "a2")]["effect"] == pytest.approx(-14 / 3, abs=1e-6)
    assert by[("clicks", "B", "b1")]["effect"] == pytest.approx((6 + 16 / 3 + 4) / 3, abs=1e-6)
    assert by[("clicks", "B", "b1")]["reference"] == "b0"
    # interactions: Y(a, b1) - Y(a0, b1) - Y(a, b0) + Y(a0, b0) per replication
    row = by[("clicks", "A × B", "a1 · b1")]
    assert (row["reference"], row["n"], row["note"]) == ("a0 · b0", 3, None)
    assert row["effect"] == pytest.approx(14 / 3, abs=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(_student([6, 4, 4]), abs=1e-6)
    ratios = np.log(np.array([30, 34, 24]) / [14, 16, 10] / ([20, 26, 18] / np.array([10, 12, 8])))
    assert row["relative"] == pytest.approx(np.expm1(ratios.mean()), abs=1e-6)
    assert (row["relative_ci_low"], row["relative_ci_high"]) == pytest.approx(
        np.expm1(_student(ratios)), abs=1e-6
    )
    assert row["relative_method"] == LOG_RATIO + " of ratios"
    assert by[("clicks", "A × B", "a2 · b1")]["effect"] == pytest.approx(2 / 3, abs=1e-6)

    # CTR, a share: a1 - a0 is (0.9, -0.5, 0.9), whose t-interval is cut to [-1, 1]; a1's zero
    # in replication 1 makes the relative effect the log ratio of the means
    row = by[("ctr", "A", "a1")]
    assert row["effect"] == pytest.approx(1.3 / 3, abs=1e-6)
    assert _student([0.9, -0.5, 0.9])[0] < -1 and _student([0.9, -0.5, 0.9])[1] > 1
    assert (row["ci_low"], row["ci_high"]) == (-1.0, 1.0)
    assert row["relative"] == pytest.approx(1.9 / 0.6 - 1, abs=1e-6)
    assert row["relative_method"] == RATIO_OF_MEANS
    expected = relative_change([0.95, 0.0, 0.95], [0.05, 0.5, 0.05])["ci95"]
    assert [row["relative_ci_low"], row["relative_ci_high"]] == expected
    # a2 · b1 is missing in replication 2: every figure that needs that cell has 2 replications
    assert by[("ctr", "A", "a2")]["n"] == 2
    assert by[("ctr", "A", "a2")]["effect"] == pytest.approx((0.05 - 0.4) / 2, abs=1e-6)
    assert by[("ctr", "B", "b1")]["n"] == 2
    assert by[("ctr", "A × B", "a2 · b1")]["n"] == 2
    # shares below 1, none zero: a ratio of ratios (CTR does not depend on B: exactly none)
    assert by[("ctr", "A × B", "a2 · b1")]["note"] is None
    assert by[("ctr", "A × B", "a2 · b1")]["relative"] == 0.0
    assert by[("ctr", "A", "a1")]["n"] == 3
    # CTR does not depend on B: no interaction; a zero cell leaves no ratio of ratios
    row = by[("ctr", "A × B", "a1 · b1")]
    assert (row["effect"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0)
    assert row["note"] == "a cell is zero in a replication: the ratio of ratios is undefined"
    assert row["relative"] is None
    # a signed metric has differences but no relative effect
    row = by[("propagation_efficiency", "A", "a1")]
    assert row["effect"] == pytest.approx(0.2, abs=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(_student([0.3, 0.2, 0.1]), abs=1e-6)
    assert row["note"] == "the metric can be negative: no relative effect"
    assert row["relative"] is None and row["relative_method"] is None
    row = by[("propagation_efficiency", "A × B", "a1 · b1")]
    assert row["note"] == "the metric can be negative: no relative effect"
    assert row["effect"] == 0.0


def test_an_effect_with_no_complete_replication_says_so():
    rows = [row for row in _hand_rows() if row["variant"] != "a1 · b1" or row["replication"] > 0]
    for row in rows:
        if row["variant"] == "a0 · b0" and row["replication"] > 0:
            row["clicks"] = None
    factors = grid_factors(HAND_LEVELS, "a0 · b0")
    effects = estimate_effects(rows, factors, HAND_LEVELS, metrics=["clicks"])
    by = {(e["factor"], e["level"]): e for e in effects}
    for key in (("A", "a1"), ("A × B", "a1 · b1")):
        assert by[key]["n"] == 0
        assert by[key]["note"] == "not measured in every cell of any replication"
        assert by[key]["effect"] is None
    # with one replication: a difference, but no interval
    assert by[("A", "a2")]["n"] == 1
    assert by[("A", "a2")]["effect"] == pytest.approx(7 - 12)
    assert by[("A", "a2")]["ci_low"] is None and by[("A", "a2")]["relative_ci_low"] is None
    assert by[("A", "a2")]["relative"] == pytest.approx(7 / 12 - 1, abs=1e-6)


def test_a_relative_effect_against_a_reference_at_zero_is_missing_with_the_reason():
    rows = [
        {"variant": f"{a} · {b}", "replication": r, "clicks": 0.0 if a == "a0" else 5.0 + r}
        for a, b in CLICKS
        for r in range(3)
    ]
    factors = grid_factors(HAND_LEVELS, "a0 · b0")
    main = estimate_effects(rows, factors, HAND_LEVELS, metrics=["clicks"])[0]
    assert main["effect"] == pytest.approx(6.0)
    assert main["note"] == "the reference is zero in every replication"
    assert main["relative"] is None


def test_conditional_effect_holds_the_other_lever_at_one_level():
    from sim.measuring.effects import conditional_effect

    factors = grid_factors(HAND_LEVELS, "a0 · b0")
    cells = Cells(_hand_rows(), factors, HAND_LEVELS)
    assert cells.replications == [0, 1, 2]
    assert cells.average("clicks", {"A": "a1"}, 1) == pytest.approx(30.0)
    assert cells.average("clicks", {}, 0) == pytest.approx(88 / 6)
    assert cells.average("ctr", {"B": "b1"}, 2) is None
    assert cells.average("clicks", {"A": "a9"}, 0) is None
    a, b = factors
    found = conditional_effect(cells, "clicks", a, "a1", b, "b1")
    assert found == relative_change([30, 34, 24], [14, 16, 10])
    logs = np.log(np.array([30, 34, 24]) / [14, 16, 10])
    assert found["mean"] == pytest.approx(np.expm1(logs.mean()), abs=1e-6)
    assert found["n"] == 3
    at_zero = conditional_effect(cells, "ctr", a, "a2", b, "b1")
    assert at_zero["n"] == 2  # replication 2 did not measure a2 · b1


def test_grid_factors_name_an_axis_by_its_last_two_parts_unless_two_share_them():
    from sim.measuring.effects import Factor

    levels = {
        "x": {"stack.layers.retrain.every": "20m", "a.b.c": "1", "d.b.c": "2", "e.f.g": "4"},
        "y": {"stack.layers.retrain.every": "1h", "a.b.c": "1", "d.b.c": "3", "e.f.g": "5"},
    }
    factors = grid_factors(levels, "y")
    assert [(f.name, f.levels, f.reference) for f in factors] == [
        ("retrain.every", ("20m", "1h"), "1h"),
        ("a.b.c", ("1",), "1"),
        ("d.b.c", ("2", "3"), "3"),
        ("f.g", ("4", "5"), "5"),
    ]
    assert grid_factors(levels, "z") == []
    cadence, switch, other = (
        Factor("c", "stack.layers.retrain.every", ("1h",), "1h"),
        Factor("s", "stack.layers.nearline_embeddings.enabled", ("on",), "on"),
        Factor("o", "world.behavior.explicit_prob", ("0.2",), "0.2"),
    )
    assert (cadence.title, switch.title, other.title) == (
        "the retrain cadence",
        "nearline embeddings",
        "o",
    )
    assert Factor("w", "stack.layers.retrain.window", (), "").title == "w"
    assert Factor("w", "stack.layers.retrain", (), "").title == "w"
    assert Factor("w", "other.layers.retrain.every", (), "").title == "w"
    assert (cadence.switch, switch.switch, other.switch) == (False, True, False)
    assert Factor("s", "stack.layers.enabled_x", (), "").switch is False
    assert (cadence.layer, switch.layer, other.layer) == ("retrain", "nearline_embeddings", None)
    assert Factor("l", "stack.layers.bandit", (), "").layer == "bandit"
    assert Factor("l", "stack.layers", (), "").layer is None
    assert Factor("l", "stack.other.bandit", (), "").layer is None


def test_measured_updates_count_updates_live_inside_each_variants_measured_period():
    from sim.measuring.effects import Factor, measured_updates, never_fires

    layers = {
        "variant": ["v1", "v1", "v1", "v1", "v1", "v2", "v3"],
        "layer": ["retrain"] * 7,
        "origin": ["update", "update", "warmup", "update", "update", "update", "update"],
        "live_at": [100.0, 99.9, 150.0, 199.0, 200.0, 150.0, 150.0],
    }
    periods = {"v1": (100.0, 200.0), "v2": (160.0, 300.0)}
    # live at the start counts, at the end does not; warm-up refits and unknown variants never
    assert measured_updates(layers, periods) == {("v1", "retrain"): 2}
    factor = Factor("every", "stack.layers.retrain.every", ("20m", "7d", "off"), "20m")
    other = Factor("prob", "world.behavior.explicit_prob", ("0.2",), "0.2")
    levels = {
        "v1": {factor.path: "20m", other.path: "0.2"},
        "v2": {factor.path: "7d", other.path: "0.2"},
        "v3": {factor.path: "off", other.path: "0.2"},
    }
    active = {"v1": {"retrain"}, "v2": {"retrain"}, "v3": set()}
    updates = measured_updates(layers, periods)
    # 7d ran with the layer on and published nothing live; "off" did not run the layer at all
    assert never_fires([other, factor], levels, active, updates) == {"prob": [], "every": ["7d"]}
    assert never_fires([factor], levels, {}, updates) == {"every": []}


def test_an_interaction_whose_log_ratios_are_not_finite_says_so():
    rows = [
        {"variant": label, "replication": r, "clicks": np.inf if label == "a1 · b1" else 1.0 + r}
        for label in ("a0 · b0", "a0 · b1", "a1 · b0", "a1 · b1")
        for r in range(2)
    ]
    levels = {label: dict(zip("AB", label.split(" · "), strict=True)) for label in {
        row["variant"] for row in rows}}  # fmt: skip
    with np.errstate(all="ignore"):
        effects = estimate_effects(rows, grid_factors(levels, "a0 · b0"), levels, ["clicks"])
    interaction = next(row for row in effects if row["kind"] == "interaction")
    assert interaction["note"] == "the ratio of ratios overflows"
    assert interaction["relative"] is None


def test_a_run_missing_from_a_variant_leaves_that_replication_out():
    rows = [
        {"variant": "a", "replication": 0, "clicks": 1.0},
        {"variant": "a", "replication": 1, "clicks": 3.0},
        {"variant": "b", "replication": 0, "clicks": 2.0},  # replication 1 failed: no row
    ]
    compared = compare_variants(rows, ["a", "b"], "a")
    assert compared["b"]["clicks"] == {
        "mean": 2.0,
        "ci95": None,
        "n": 1,
        "delta": {"mean": 1.0, "ci95": None, "n": 1},
        "relative": {"mean": 1.0, "ci95": None, "n": 1, "method": LOG_RATIO},
    }
    assert (compared["a"]["clicks"]["mean"], compared["a"]["clicks"]["n"]) == (2.0, 2)


def test_relative_changes_without_pairs_or_with_an_interval_beyond_any_float_say_so():
    from sim.measuring.compare import relative_from_log

    assert relative_change([], []) == {"missing": "no replication measured both", "n": 0}
    # exp(1000) - 1 is beyond any float: no interval, the mean kept
    found = relative_from_log(0.5, -1000.0, 1000.0, 3, LOG_RATIO)
    mean = round(float(np.expm1(0.5)), 6)
    assert found == {"mean": mean, "ci95": None, "n": 3, "method": LOG_RATIO}
    assert relative_change([1.0, 2.0], [0.0, 0.0]) == {
        "missing": "the reference is zero in every replication",
        "n": 2,
    }
    # positive values whose ratio overflows: no log ratio, and no ratio of the means either
    overflowing = relative_change([1e300, 1e300], [1e-300, 1e-300])
    assert overflowing == {"missing": "the ratio of the means overflows", "n": 2}
    # two replications, one with a zero: the log ratio of the means, its interval by the delta
    # method (variances 8 and 0 over means 2 and 10, n = 2) and Student's t with 1 degree
    found = relative_change([0.0, 4.0], [10.0, 10.0])
    half = stats.t.ppf(0.975, 1) * np.sqrt((8 / 2**2) / 2)
    assert found["method"] == RATIO_OF_MEANS and found["mean"] == pytest.approx(-0.8)
    assert found["ci95"] == pytest.approx(np.expm1(np.log(0.2) + np.array([-half, half])), rel=1e-5)
