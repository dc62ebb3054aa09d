"""The report (issues 5 and 20): figures carry the right data, variants are told apart, the
first screen answers from the numbers (from the sweep's effects when written), user text is
escaped once, the command rebuilds it from the files, and it renders in a real headless Chromium.

The browser test writes each report's first screen (1440×900) to pytest's ``tmp_path`` and to
``test-artifacts/`` at the repository root, and prints the paths.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from reports.data import duration, load_report_data, time_text
from reports.encoding import Axis, grid_axes, merged_label, plot_text, variant_styles
from reports.figures import (
    absorption_figure,
    cost_harm_figure,
    exposure_figure,
    suppression_figure,
    timeseries_figure,
    twin_exposure_figure,
)
from reports.page import (
    build_report,
    compact_table,
    delay_split_table,
    headline,
    reliability,
    responsiveness_section,
)
from sim.cli import main
from sim.sweeps.results import write_report
from sim.sweeps.sweep import run_sweep
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script>"
QUOTED = 'every "20m" <b>'  # a double quote and markup in a grid level
INTERVENTIONS = (
    "interventions=[{kind: topic_aversion, at: 2h, topic: most_shown, "
    f"label: '{HOSTILE}'}}, {{kind: item_turns_bad, at: 2h, most_shown: 5}}]"
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2×2 grid with bounds, interventions, two replications and hostile text."""
    out = tmp_path_factory.mktemp("sweep")
    run_sweep(
        tiny(
            f"name={HOSTILE}",
            f"description=a <b>bold</b> {HOSTILE} description",
            "duration=3h",
            "stack.layers.retrain.cost={per_run: 10, per_event: 0.001}",
            "stack.layers.realtime_features={cost: {per_event: 0.0001}}",
            INTERVENTIONS,
            "variants={grid: {stack.layers.retrain.every: {'" + QUOTED + "': 20m, "
            "every 2h: 2h}, stack.layers.realtime_features.enabled: "
            "{features on: true, features off: false}}}",
            "bounds={frozen: true, instant: true, instant_every: 10m}",
            "replications=2",
            "metrics.exposure_horizon=1h",
        ),
        out,
    )
    write_report(out)
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One run with interventions and no cost configured."""
    out = tmp_path_factory.mktemp("single")
    run_sweep(
        tiny(
            "duration=3h",
            "stack.layers.realtime_features={}",
            INTERVENTIONS,
            "metrics.exposure_horizon=1h",
        ),
        out,
    )
    write_report(out)
    return out


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> Path:
    """Three controls probed on 30 users each (as many in every replication), each run paired
    with its twin, two replications; the run ends 3 h after the controls (no share in a day)."""
    out = tmp_path_factory.mktemp("probed")
    run_sweep(
        tiny(
            "probes=[{control: dismiss, at: +1h, users: 30}, "
            "{control: not_interested, at: +1h, users: 30}, "
            "{control: remove_from_history, at: +1h, users: 30}]",
            "stack.layers.realtime_features={}",
            "replications=2",
        ),
        out,
    )
    write_report(out)
    return out


def _with_summary(folder: Path, tmp_path: Path, **keys) -> Path:
    """A copy of a results directory whose summary.json has ``keys`` added."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary.update(keys)
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


# --- encoding -------------------------------------------------------------------------------------


def test_each_grid_axis_gets_its_own_channel_and_no_two_variants_share_colour_and_dash():
    axes = [
        Axis("retrain", ("1h", "1d", "7d")),
        Axis("near-line", ("on", "off")),
        Axis("features", ("on", "off")),
    ]
    variants = [" · ".join(levels) for levels in itertools.product(*(a.levels for a in axes))]
    styles = variant_styles([*variants, "frozen", "instant"], axes)
    pairs = {(styles[v].color, styles[v].dash) for v in variants}
    assert len(pairs) == 12
    # hue follows the 3-level axis, dash the second axis, shade the third
    assert styles["1h · on · on"].color == styles["1h · off · on"].color
    assert styles["1h · on · on"].color != styles["1d · on · on"].color
    assert (
        styles["1h · on · on"].dash == styles["7d · on · off"].dash != styles["1h · off · on"].dash
    )
    assert styles["1h · on · on"].color != styles["1h · on · off"].color
    markers = {(styles[v].color, styles[v].symbol) for v in variants}
    assert len(markers) == 12  # the cost chart has no dash: markers keep them apart
    assert styles["frozen"].color == "#7f7f7f" and styles["instant"].color == "#000000"


def test_variants_that_do_not_form_a_grid_still_get_distinct_pairs():
    variants = [f"case {i}" for i in range(23)]
    styles = variant_styles(variants, [])
    assert len({(s.color, s.dash) for s in styles.values()}) == 23
    twelve = [f"level {i}" for i in range(12)]  # more levels than hues on one axis
    styles = variant_styles(twelve, [Axis("x", tuple(twelve))])
    assert len({(s.color, s.dash) for s in styles.values()}) == 12


def test_grid_axes_come_from_the_effects_or_the_resolved_scenario(sweep):
    data = load_report_data(sweep)
    assert [axis.name for axis in data.axes] == ["retrain.every", "realtime_features.enabled"]
    assert data.axes[0].levels == (QUOTED, "every 2h")
    summary = {"effects": {"factors": [{"factor": "retrain"}, {"factor": "features"}]}}
    assert [a.name for a in grid_axes(data.variants, summary, "")] == ["retrain", "features"]
    assert grid_axes(["a", "b"], {}, "variants: {cases: []}") == []


def test_points_at_one_place_share_one_label():
    axes = [Axis("r", ()), Axis("f", ())]
    assert merged_label(["1d · off", "7d · off", "frozen"], axes) == "1d / 7d · off / frozen"


def test_plotly_text_is_escaped_once():
    assert plot_text('a "b" & <c>') == 'a "b" &amp; &lt;c&gt;'  # Plotly decodes &amp; &lt; &gt;


def test_times_at_the_bin_resolution_are_upper_bounds():
    assert time_text(3600.0, 3600.0) == "≤ 1 h (1 h bins)"
    assert time_text(5400.0, 3600.0) == "1.5 h"
    assert duration(293.19) == "4.9 min"


# --- figures --------------------------------------------------------------------------------------


def _variant_traces(figure):
    return [t for t in figure.data if (t.meta or {}).get("variant") and not t.meta.get("band")]


def test_absorption_has_a_panel_per_layer_with_each_variants_delays(sweep):
    data = load_report_data(sweep)
    figure = absorption_figure(data)
    variant = "every 2h · features on"
    layers = [a.text for a in figure.layout.annotations]
    assert layers == ["realtime_features", "retrain"]
    trace = next(t for t in figure.data if t.meta["variant"] == variant and t.xaxis == "x2")
    rows = data.propagation[
        (data.propagation.variant == variant) & (data.propagation.layer == "retrain")
    ]
    assert trace.x[-1] == pytest.approx(rows.delay_seconds.max())
    assert trace.y[-1] == pytest.approx(rows.absorbed.mean())  # censored events stay below 1
    assert np.all(np.diff(trace.y) >= 0)
    assert figure.layout.xaxis.type == "log" and figure.layout.xaxis2.title.text


def test_residual_exposure_never_falls_and_averages_the_replications(sweep):
    data = load_report_data(sweep)
    for _, curve in data.exposure.dropna().groupby(["variant", "replication", "match"]):
        values = curve.sort_values("seconds_since_negative").impressions_per_negative
        assert np.all(np.diff(values) >= 0)
    figure = exposure_figure(data)
    line = next(t for t in _variant_traces(figure) if t.meta["variant"] == "frozen")
    frozen = data.exposure[(data.exposure.variant == "frozen") & (data.exposure.match == "topic")]
    expected = frozen.dropna().groupby("seconds_since_negative").impressions_per_negative.mean()
    np.testing.assert_allclose(line.y, expected.to_numpy())
    assert figure.layout.xaxis.ticktext[0] == "1m"  # the left end is labelled
    bands = [t for t in figure.data if (t.meta or {}).get("band")]
    assert bands and all(t.visible is False for t in bands)  # 6 lines: ranges behind a button
    assert figure.layout.updatemenus[0].buttons[1].args[0]["visible"] == [True] * len(figure.data)


def test_suppression_averages_replications_and_keeps_its_x_axis(sweep):
    data = load_report_data(sweep)
    name = "item_turns_bad@2h"
    figure = suppression_figure(data, name)
    line = next(t for t in _variant_traces(figure) if t.meta["variant"] == "instant")
    rows = data.suppression[
        (data.suppression.variant == "instant") & (data.suppression.intervention == name)
    ]
    per_hour = rows.groupby("seconds_since_intervention").bad_impressions.mean() / 0.5
    np.testing.assert_allclose(line.y, per_hour.to_numpy())
    main_x = figure.layout[f"xaxis{line.xaxis[1:]}"]
    assert main_x.title.text == "hours since the intervention (30 min bins)"
    releases = [t for t in figure.data if t.legendgroup == "releases"]
    assert all(x >= 0 for t in releases for x in t.x)


def test_cost_against_harm_marks_the_front_and_labels_every_point(sweep):
    data = load_report_data(sweep)
    figure = cost_harm_figure(data, "bad_impressions", "bad")
    front = next(t for t in figure.data if t.name == "Pareto front")
    on_front = list(zip(front.x, front.y, strict=True))
    assert on_front and list(front.x) == sorted(front.x)
    assert all(b[1] < a[1] for a, b in zip(on_front, on_front[1:], strict=False))
    for trace in _variant_traces(figure):
        point = (trace.x[0], trace.y[0])
        assert point in on_front or any(c <= point[0] and h <= point[1] for c, h in on_front)
    labels = " / ".join(a.text for a in figure.layout.annotations)
    for variant in data.variants:
        for level in variant.split(" · "):
            assert plot_text(level) in labels, level


def test_a_single_run_or_a_run_that_costs_nothing_gets_no_cost_chart(single):
    data = load_report_data(single)
    assert cost_harm_figure(data, "bad_impressions", "bad") is None


def test_time_series_mark_warm_up_and_interventions_and_agree_with_the_table(sweep):
    data = load_report_data(sweep)
    figure = timeseries_figure(data)
    shapes = figure.layout.shapes
    warm = [s for s in shapes if s.type == "rect"]
    assert warm and warm[0].x1 == pytest.approx(1.0)  # the tiny scenario warms up for an hour
    assert {s.x0 for s in shapes if s.type == "line"} == {2.0}
    step = np.diff(np.unique(data.timeseries.start_seconds))[0]
    assert figure.layout.xaxis.title.text == f"simulated hours ({duration(step)} bins)"
    assert figure.layout.yaxis.tickformat.endswith("%")  # CTR as a percentage
    # the table's churn counts the measured bins only: the chart's unshaded part adds up to it
    measured = data.timeseries[data.timeseries.measured]
    churned = measured.groupby(["variant", "replication"]).churned_users.sum()
    runs = data.runs.set_index(["variant", "replication"]).churned_users
    assert churned.to_dict() == runs.loc[churned.index].to_dict()


# --- the answer -----------------------------------------------------------------------------------


def test_the_headline_is_the_sweeps_effects_with_the_unreliable_flag(sweep):
    data = load_report_data(sweep)
    sentences = data.summary["effects"]["headline"]
    assert headline(data) == sentences and len(sentences) == 2  # one per lever
    reason = data.summary["unreliable_reason"]
    assert reliability(data) == reason[:1].upper() + reason[1:]  # as a sentence
    page = (sweep / "report.html").read_text()
    assert all(html.escape(sentence) in page for sentence in sentences)


def test_without_effects_the_headline_names_the_best_variant_plainly(sweep, tmp_path):
    data = load_report_data(_with_summary(sweep, tmp_path, effects=None, unreliable=None))
    text = " ".join(headline(data))
    comparisons = data.summary["comparisons"]
    best = min(data.declared, key=lambda v: comparisons[v]["bad_impressions"]["mean"])
    assert best in text and "2 replications" in text and "bad impressions" in text
    assert "excludes no change" not in text
    assert "fewer than 3" in reliability(data)


def test_without_label_delays_the_delay_split_has_no_column_of_zeros(sweep):
    """The sweep has no ``logging`` section: every label arrived at once, so the split shows the
    pipeline's parts only and says why."""
    section = delay_split_table(load_report_data(sweep))
    heads = re.findall(r"<th>([^<]*)</th>", section)
    assert heads[:4] == ["latency", "trigger wait", "compute", "rollout"], heads
    assert "label delay" not in heads and "No label delays were configured" in section


def test_a_scenarios_headline_metric_leads_the_sentence_and_the_table_in_its_direction(
    sweep, tmp_path
):
    """``metrics.headline: ctr``: the best variant is the one with the highest CTR, and the
    first column of the first screen's table is CTR with its change from the baseline."""
    data = load_report_data(
        _with_summary(sweep, tmp_path, effects=None, unreliable=None, headline_metric="ctr")
    )
    comparisons = data.summary["comparisons"]
    best = max(data.declared, key=lambda v: comparisons[v]["ctr"]["mean"])
    text = " ".join(headline(data))
    assert "the highest CTR" in text and best in text, text
    heads = re.findall(r"<th>([^<]*)</th>", compact_table(data))
    assert heads[heads.index("CTR") + 1] == "vs baseline"


def test_the_headline_comes_from_the_effects_when_the_sweep_wrote_them(sweep, tmp_path):
    sentences = [
        "Real-time features on cut bad impressions by 62% [48%, 71%] whatever the retrain "
        "cadence (2 replications).",
        "retrain 20m vs 2h: no detectable difference (interval -8% to +5%).",
    ]
    copy = _with_summary(
        sweep,
        tmp_path,
        effects={
            "factors": [
                {
                    "factor": "retrain",
                    "path": "stack.layers.retrain.every",
                    "levels": [QUOTED, "every 2h"],
                    "reference": "every 2h",
                    "never_fires": ["every 2h"],
                },
                {
                    "factor": "features",
                    "path": "stack.layers.realtime_features.enabled",
                    "levels": ["features on", "features off"],
                    "reference": "features off",
                    "never_fires": [],
                },
            ],
            "headline": sentences,
            "largest": {
                "metric": "bad_impressions",
                "factor": "features",
                "level": "features on",
                "relative": -0.62,
            },
        },
        unreliable=True,
        unreliable_reason="2 replications: every interval is unreliable (3 or more needed).",
    )
    data = load_report_data(copy)
    assert headline(data) == sentences
    assert [axis.name for axis in data.axes] == ["retrain", "features"]
    page = build_report(copy)
    assert all(sentence in page for sentence in sentences)
    assert "2 replications: every interval is unreliable (3 or more needed)." in page
    assert page.count("(never fires)</small>") == 2 * 2  # both tables, both "every 2h" rows


def test_a_bin_limited_time_reads_as_an_upper_bound_on_the_page(sweep, tmp_path):
    summary = json.loads((sweep / "summary.json").read_text())
    key = f"{HOSTILE}.time_to_50pct_seconds"
    reached = {v: m[key]["mean"] for v, m in summary["comparisons"].items() if key in m}
    resolution = min(reached.values())
    page = build_report(
        _with_summary(
            sweep,
            tmp_path,
            metric_resolution={key: resolution},
            replication_plan={"min": 2, "max": 2, "until": None, "stopped": "max reached"},
        )
    )
    assert f"≤ {duration(resolution)} ({duration(resolution)} bins)" in page
    assert "6 variants × 2 replications (max reached)" in page


def test_a_single_run_states_its_absorption_times_and_no_sweep_text(single):
    data = load_report_data(single)
    text = " ".join(headline(data))
    median = data.summary["comparisons"]["default"]["absorption.realtime_features.median_seconds"]
    assert f"{duration(median['mean'])} through realtime_features" in text
    assert reliability(data) is None
    shown = build_report(single).split('<script type="application/json"')[0]  # not the data
    assert "an interval needs" not in shown and "show 95% intervals" not in shown
    assert "Compute cost against harm" not in shown


def test_user_text_is_escaped_everywhere(sweep):
    page = (sweep / "report.html").read_text()
    assert HOSTILE not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    data = load_report_data(sweep)
    for figure in (absorption_figure(data), exposure_figure(data)):
        names = [trace.name or "" for trace in figure.data]
        assert all("<script>" not in name and "&quot;" not in name for name in names)
        assert any('every "20m" &lt;b&gt;' in name for name in names)


# --- responsiveness -------------------------------------------------------------------------------

PERCENT = re.compile(r"-?\d+(?:\.\d+)?(?=%)")


def _cells(page: str, row: str) -> list[str]:
    """The text of each cell of the table row opened by ``row``, tags stripped."""
    body = page.split(row, 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", body, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in cells]


def test_the_responsiveness_section_shows_the_prevented_shares_of_the_parquet(probed):
    page = build_report(probed)
    table = pq.read_table(probed / "responsiveness.parquet").to_pandas()
    shares = table[table.measure == "prevented_share"]
    summary = json.loads((probed / "summary.json").read_text())["responsiveness"]["default"]
    assert list(summary) == ["dismiss@2h", "not_interested@2h", "remove_from_history@2h"]
    for name, entry in summary.items():
        cells = _cells(page, f"<tr data-probe='{name}'>")
        assert cells[:3] == [entry["control"], f"the {entry['exposure_to']}", "30"]
        rows = shares[(shares.probe == name) & (shares.exposure_to == entry["exposure_to"])]
        assert len(rows) == len(cells) - 3 == 3  # 1 h, 1 day, the end
        for cell, (_, row) in zip(cells[3:], rows.iterrows(), strict=True):
            if pd.isna(row.value):  # the run ends 3 h after the controls: no day
                assert cell == f"n/a ({row.missing})"
                assert "the run ends 3h after the control" in cell
                continue
            value, low, high = (float(x) / 100 for x in PERCENT.findall(cell))
            assert value == pytest.approx(row.value, abs=5e-4)
            assert (low, high) == pytest.approx((row.ci_low, row.ci_high), abs=5e-4)
    # the deletion: per layer, the mean delay and its interval over the replications
    delays = summary["remove_from_history@2h"]["deletion_delay_seconds"]
    assert set(delays) == {"realtime_features", "retrain"}
    for layer, delay in delays.items():
        cell = _cells(page, f"<tr data-layer='{layer}'>")[1]
        assert cell == (
            f"{duration(delay['mean'])} [{duration(delay['ci_low'])}, {duration(delay['ci_high'])}]"
        )
    deleted = summary["remove_from_history@2h"]["deleted_events"]
    assert f"It deleted {deleted[0]:,} and {deleted[1]:,} events (per replication)." in page


def test_a_layer_the_deletion_never_reached_says_why(probed, tmp_path):
    summary = json.loads((probed / "summary.json").read_text())["responsiveness"]
    entry = summary["default"]["remove_from_history@2h"]
    reason = "its state was updated in place and cannot take events back"
    entry["deletion_delay_seconds"]["online_learning"] = {"missing": reason}
    page = build_report(_with_summary(probed, tmp_path, responsiveness=summary))
    assert _cells(page, "<tr data-layer='online_learning'>") == [
        "online_learning",
        f"never ({reason})",
    ]
    assert "<th>to the run&#x27;s end (3\u00a0h)</th>" in page  # kept on one line


def test_the_twin_curves_are_the_cumulative_exposures_of_each_twin_per_probe_user(probed):
    data = load_report_data(probed)
    figure = twin_exposure_figure(data)
    assert [a.text for a in figure.layout.annotations] == [
        "dismiss: exposure to the item",
        "not_interested: exposure to the topic",
        "remove_from_history: exposure to the item",
    ]
    table = pq.read_table(probed / "responsiveness.parquet").to_pandas()
    curves = table[table.measure == "exposure_difference"]
    lines = _variant_traces(figure)
    assert len(lines) == 3 * 2
    for name, entry in data.probes["default"].items():
        rows = curves[(curves.probe == name) & (curves.exposure_to == entry["exposure_to"])]
        users = data.probe_exposure.loc[data.probe_exposure.probe == name, "users"].unique()
        assert users.tolist() == [30]  # the same in every run: a mean per user is the parquet's
        for taken, column in ((True, "with_control"), (False, "without_control")):
            line = next(
                t for t in lines if t.meta["taken"] == taken and t.xaxis == _axis_of(figure, name)
            )
            expected = np.r_[0.0, rows[column].cumsum().to_numpy() / 30]
            np.testing.assert_allclose(line.y, expected)
            assert line.x[0] == 0 and line.x[-1] == pytest.approx(3.0)  # hours since
    assert figure.layout.xaxis.title.text == "hours since the control"
    assert figure.layout.yaxis.title.text == "impressions per probe user"
    bands = [t for t in figure.data if (t.meta or {}).get("band")]
    assert len(bands) == 6  # two replications: each twin's range


def _axis_of(figure, probe: str) -> str:
    """The x axis of a probe's panel (its title's position among the panels)."""
    titles = [a.text.split(":")[0] for a in figure.layout.annotations]
    index = titles.index(probe.split("@")[0]) + 1
    return "x" if index == 1 else f"x{index}"


def test_the_headline_of_probes_on_one_stack_names_the_most_and_least_effective_control(
    probed, tmp_path
):
    data = load_report_data(probed)
    probes = data.probes["default"]
    ends = {name: entry["prevented_share"]["end"]["value"] for name, entry in probes.items()}
    best, worst = max(ends, key=ends.get), min(ends, key=ends.get)
    text = " ".join(headline(data))
    assert "by the run's end, 3 h after the control" in text  # no day measured: the end
    assert f"{best.split('@')[0]} prevented the most" in text
    assert f"; {worst.split('@')[0]} the least" in text
    # with a day measured, the day's shares decide (here, made to reverse the order)
    summary = json.loads((probed / "summary.json").read_text())
    day = summary["responsiveness"]["default"]
    day[best]["prevented_share"]["1d"] = {"value": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n": 2}
    day[worst]["prevented_share"]["1d"] = {"value": 0.9, "ci_low": 0.8, "ci_high": 1.0, "n": 2}
    copy = _with_summary(probed, tmp_path, responsiveness=summary["responsiveness"])
    sentences = headline(load_report_data(copy))
    assert sentences[0].startswith(
        f"Of 3 controls, {worst.split('@')[0]} prevented the most of the probe users' exposure "
        f"to what they rejected within a day: 90% [80%, 100%] of their impressions of the "
    )
    assert f"; {best.split('@')[0]} the least: 10% [5%, 15%]" in sentences[0]
    assert sentences[1].startswith("Not measured within a day:")  # the third


def test_without_probes_there_is_no_responsiveness_section(single, sweep):
    for folder in (single, sweep):
        data = load_report_data(folder)
        assert responsiveness_section(data) == "" and twin_exposure_figure(data) is None
        assert "id='responsiveness'" not in (folder / "report.html").read_text()


# --- the command ----------------------------------------------------------------------------------


def test_report_command_rebuilds_from_the_files_alone(sweep, tmp_path, capsys):
    copy = tmp_path / "copied"
    shutil.copytree(sweep, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy), "--plotlyjs", "cdn", "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert 'src="https://cdn.plot.ly' in page and len(page) < 1_000_000
    assert main(["report", str(copy)]) == 0
    inline = (copy / "report.html").read_text()
    assert 'src="https://cdn.plot.ly' not in inline  # opens offline
    assert len(inline) > 3_000_000
    assert capsys.readouterr().out.strip().endswith(f"report: {copy / 'report.html'}")


def test_report_of_a_missing_directory_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no summary.json" in capsys.readouterr().err


# --- in a browser ---------------------------------------------------------------------------------

#: Per chart: every axis (its title, whether it shows tick labels, the axis it follows, the
#: tick labels drawn) and every variant's trace style, read from Plotly's resolved layout and
#: data and from the rendered SVG.
READ_CHARTS = """els => els.map(gd => {
  const layout = gd._fullLayout;
  const axes = Object.keys(layout).filter(k => /^[xy]axis\\d*$/.test(k)).map(k => {
    const ax = layout[k];
    const title = ax.title && ax.title.text && !ax.title.text.startsWith('Click to enter')
      ? ax.title.text : '';
    const ticks = Array.from(gd.querySelectorAll('g.' + ax._id + 'tick text'))
      .map(t => t.textContent).filter(t => t.trim());
    return {id: ax._id, title, shows: ax.showticklabels, follows: ax.matches || null, ticks};
  });
  const traces = gd._fullData.filter(t => t.meta && t.meta.variant && !t.meta.band &&
    t.visible === true).map(t => ({variant: t.meta.variant, mode: t.mode,
      color: t.mode.includes('lines') ? t.line.color : t.marker.color,
      dash: t.mode.includes('lines') ? t.line.dash : t.marker.symbol}));
  const legend = Array.from(gd.querySelectorAll('.legendtext')).map(t => t.textContent);
  const scrollbar = gd.querySelector('.legend .scrollbar');
  const scrolls = scrollbar !== null && Number(scrollbar.getAttribute('height')) > 0;
  return {title: layout.title.text, axes, traces, legend, scrolls};
})"""


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs the system Chromium (apt-get install chromium)"
)
@pytest.mark.parametrize("kind", ["sweep", "single"])
def test_the_report_renders_in_chromium_and_answers_on_the_first_screen(kind, request, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    folder = request.getfixturevalue(kind)
    shots = [tmp_path / f"report-{kind}-first-screen.png", ROOT / "test-artifacts"]
    shots[1].mkdir(exist_ok=True)
    shots[1] = shots[1] / shots[0].name
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((folder / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        charts = page.eval_on_selector_all(".js-plotly-plot", READ_CHARTS)
        answer = page.locator("#answer").bounding_box()
        table = page.locator("#variants").bounding_box()
        sentence = page.inner_text("#answer").splitlines()[0]
        title = page.title()
        for shot in shots:
            page.screenshot(path=str(shot))
        if kind == "sweep":  # the switch shows the intervals hidden in each cell
            assert not page.locator("#variants .ci").first.is_visible()
            page.click("#show-intervals")
            assert page.locator("#variants .ci").first.is_visible()
        browser.close()
    print(f"first screen of the {kind} report: {shots[0]} and {shots[1]}")
    assert errors == []
    assert title == (f"recloop: {HOSTILE}" if kind == "sweep" else "recloop: tiny")
    assert sentence and answer["y"] >= 0 and answer["y"] + answer["height"] <= 900
    assert answer["x"] >= 0 and answer["x"] + answer["width"] <= 1440
    assert table["y"] < 900  # the table starts on the first screen
    assert len(charts) == (6 if kind == "sweep" else 5)
    for chart in charts:
        ticked = {axis["id"] for axis in chart["axes"] if axis["ticks"]}
        for axis in chart["axes"]:
            assert axis["ticks"] or (not axis["shows"] and axis["follows"] in ticked), (
                chart["title"],
                axis,
            )
        assert any(a["title"] and a["ticks"] for a in chart["axes"] if a["id"][0] == "x"), chart
        assert any(a["title"] and a["ticks"] for a in chart["axes"] if a["id"][0] == "y"), chart
        styles: dict[tuple[str, str, str], str] = {}
        for trace in chart["traces"]:
            key = (trace["mode"], trace["color"], trace["dash"])
            assert styles.setdefault(key, trace["variant"]) == trace["variant"], (chart, key)
        assert not any("&quot;" in text or "&lt;" in text for text in chart["legend"])
        assert not chart["scrolls"], chart["title"]  # the whole legend shows
    if kind == "sweep":
        legend = {text for chart in charts for text in chart["legend"]}
        assert f"{QUOTED} · features on" in legend  # shown as written, escaped once
    assert shots[0].stat().st_size > 20_000


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs the system Chromium (apt-get install chromium)"
)
def test_the_responsiveness_section_renders_in_chromium_with_titled_ticked_axes(probed, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    shots = [tmp_path / "report-responsiveness.png", ROOT / "test-artifacts"]
    shots[1].mkdir(exist_ok=True)
    shots[1] = shots[1] / shots[0].name
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((probed / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        charts = page.eval_on_selector_all("#responsiveness .js-plotly-plot", READ_CHARTS)
        answer = page.inner_text("#answer")
        for shot in shots:
            page.locator("#responsiveness").screenshot(path=str(shot))
        browser.close()
    print(f"the responsiveness section: {shots[0]} and {shots[1]}")
    assert errors == []
    assert answer.startswith("Of 3 controls, ")
    [chart] = charts
    assert chart["title"].startswith("What each control prevented")
    for axis in chart["axes"]:
        assert axis["ticks"], axis  # every panel keeps its own ticks (their scales differ)
    assert all(a["title"] == "hours since the control" for a in chart["axes"] if a["id"][0] == "x")
    titles = {axis["id"]: axis["title"] for axis in chart["axes"]}
    assert titles["y"] == "impressions per probe user"  # the first panel's
    assert chart["legend"] == ["with the control", "without it (twin run)"]
    assert shots[0].stat().st_size > 20_000
