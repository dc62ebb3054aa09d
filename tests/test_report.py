"""Issue-5 report: figure builders carry the right data, user text is escaped, the command
rebuilds it from the files, and it renders in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reports.page import (
    absorption_figure,
    build_report,
    cost_harm_figure,
    exposure_figure,
    headline,
    load_report_data,
    suppression_figure,
    variant_colors,
)
from sim.cli import main
from sim.results import write_report
from sim.sweep import run_sweep
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A small sweep with interventions, bounds, two replications and hostile text."""
    out = tmp_path_factory.mktemp("sweep")
    run_sweep(
        tiny(
            f"name={HOSTILE}",
            f"description=a <b>bold</b> {HOSTILE} description",
            "duration=3h",
            "stack.layers.retrain.cost={per_run: 10, per_event: 0.001}",
            "stack.layers.realtime_features={cost: {per_event: 0.0001}}",
            "interventions=[{kind: topic_aversion, at: 2h, topic: most_shown, "
            f"label: '{HOSTILE}'}}, {{kind: item_turns_bad, at: 2h, most_shown: 5}}]",
            "variants={cases: [{label: '" + HOSTILE + "', set: {stack.layers.retrain.every: 20m}},"
            " {label: daily-ish, set: {stack.layers.retrain.every: 2h}}]}",
            "bounds={frozen: true, instant: true, instant_every: 10m}",
            "replications=2",
            "metrics.exposure_horizon=1h",
        ),
        out,
    )
    write_report(out)
    return out


def test_colours_are_fixed_per_variant_and_bounds_are_grey_and_black():
    colors = variant_colors(["a", "b", "frozen", "instant", "c"])
    assert colors["frozen"] == "#7f7f7f" and colors["instant"] == "#000000"
    assert len({colors["a"], colors["b"], colors["c"]}) == 3


def test_absorption_cdf_has_a_line_per_variant_and_layer_with_the_runs_delays(sweep):
    data = load_report_data(sweep)
    figure = absorption_figure(data, variant_colors(data.variants))
    names = {trace.name for trace in figure.data}
    assert "daily-ish · retrain" in names and "daily-ish · realtime_features" in names
    trace = next(t for t in figure.data if t.name == "daily-ish · retrain")
    rows = data.propagation[
        (data.propagation.variant == "daily-ish") & (data.propagation.layer == "retrain")
    ]
    assert trace.x[-1] == pytest.approx(rows.delay_seconds.max())
    assert trace.y[-1] == pytest.approx(rows.absorbed.mean())  # censored events stay below 1
    assert np.all(np.diff(trace.y) >= 0)
    assert figure.layout.xaxis.type == "log"


def test_exposure_and_suppression_figures_average_the_replications(sweep):
    data = load_report_data(sweep)
    colors = variant_colors(data.variants)
    exposure = exposure_figure(data, colors)
    mean_line = next(t for t in exposure.data if t.name == "frozen" and t.mode == "lines")
    frozen = data.exposure[(data.exposure.variant == "frozen") & (data.exposure.match == "topic")]
    expected = frozen.dropna().groupby("seconds_since_negative").impressions_per_negative.mean()
    np.testing.assert_allclose(mean_line.y, expected.to_numpy())
    name = "item_turns_bad@2h"
    figure = suppression_figure(data, colors, name)
    line = next(t for t in figure.data if t.name == "instant" and t.mode == "lines")
    rows = data.suppression[
        (data.suppression.variant == "instant") & (data.suppression.intervention == name)
    ]
    per_hour = rows.groupby("seconds_since_intervention").bad_impressions.mean() / 0.5
    np.testing.assert_allclose(line.y, per_hour.to_numpy())
    releases = [t for t in figure.data if t.mode == "markers"]
    assert releases and all(x >= 0 for t in releases for x in t.x)


def test_cost_against_harm_marks_the_pareto_front(sweep):
    data = load_report_data(sweep)
    figure = cost_harm_figure(data, variant_colors(data.variants), "bad_impressions", "bad")
    front = next(t for t in figure.data if t.name == "Pareto front")
    on_front = list(zip(front.x, front.y, strict=True))
    assert on_front and list(front.x) == sorted(front.x)
    assert all(b[1] < a[1] for a, b in zip(on_front, on_front[1:], strict=False))
    for trace in (t for t in figure.data if t.mode == "markers"):
        point = (trace.x[0], trace.y[0])
        # every variant is on the front or dominated by a point of it
        assert point in on_front or any(c <= point[0] and h <= point[1] for c, h in on_front)


def test_user_text_is_escaped_everywhere(sweep):
    page = (sweep / "report.html").read_text()
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    data = load_report_data(sweep)
    for figure in (
        absorption_figure(data, variant_colors(data.variants)),
        exposure_figure(data, variant_colors(data.variants)),
    ):
        assert all("<script>" not in (trace.name or "") for trace in figure.data)


def test_the_headline_answers_from_the_numbers(sweep):
    data = load_report_data(sweep)
    text = headline(data)
    assert "bad impressions" in text and "2 replications" in text
    comparisons = data.summary["comparisons"]
    best = min(
        (v for v in data.variants if v not in ("frozen", "instant")),
        key=lambda v: comparisons[v]["bad_impressions"]["mean"],
    )
    assert best in text


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


def test_a_single_run_also_gets_a_report(tmp_path):
    out = tmp_path / "single"
    run_sweep(tiny("duration=1h"), out)
    page = build_report(out)
    assert "One variant (default)" in page


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs the system Chromium (apt-get install chromium)"
)
def test_every_chart_renders_in_headless_chromium_without_errors(sweep):
    playwright = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((sweep / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        charts = page.eval_on_selector_all(
            ".js-plotly-plot",
            "els => els.map(e => e.querySelectorAll('.scatterlayer .trace path, "
            ".scatterlayer .trace .point').length)",
        )
        title = page.title()
        answer = page.inner_text("#answer")
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(charts) == 6 and all(marks > 0 for marks in charts), charts
    assert title == f"recloop: {HOSTILE}"  # shown as text, not run
    assert answer and (artifacts / "report.png").stat().st_size > 10_000
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["scenario"] == HOSTILE
