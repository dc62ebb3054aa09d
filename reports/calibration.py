"""The fit report of ``recloop calibrate``: what was fitted from what, and how a log simulated
from the fitted world compares with the log it was fitted to.

Built from plain data (the simulator computes the statistics and the tests), so that this module,
like every report, never imports the simulator.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from reports.page import CSS, esc

__all__ = ["build_calibration_report"]

#: Below this p-value a comparison row is flagged: the simulated log differs from the log.
FLAG_P = 0.01
COLORS = ("#1f4e79", "#d9822b")
NAMES = ("log", "simulated from the fitted world")


def build_calibration_report(data: dict[str, Any], plotlyjs: str = "inline") -> str:
    """One HTML page from :func:`sim.calibrate.report_data`'s mapping."""
    if plotlyjs not in ("inline", "cdn"):
        raise ValueError(f"plotlyjs must be inline or cdn, got {plotlyjs!r}")
    comparison = data.get("comparison")
    charts = _charts(comparison["series"]) if comparison else []
    blocks = []
    for index, (figure, how) in enumerate(charts):
        body = pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=plotlyjs if index == 0 else False,
            div_id=f"chart-{index}",
            config={"displaylogo": False, "responsive": True},
        )
        blocks.append(f"<section class='chart'>{body}<p class='how'>{esc(how)}</p></section>")
    fitted = "".join(
        f"<tr><td>{esc(row['parameter'])}</td><td class='num'>{esc(row['value'])}</td>"
        f"<td class='num'>{_number(row['se'])}</td>"
        f"<td>{esc(row['source'])}</td></tr>"
        for row in data["fitted"]
    )
    missing = "".join(f"<li>{esc(entry)}</li>" for entry in data["not_identified"])
    notes = "".join(f"<li>{esc(entry)}</li>" for entry in data["notes"])
    factorization = "".join(
        f"<tr><td class='num'>{int(row['dimension'])}</td>"
        f"<td class='num'>{row['held_out_log_likelihood']:.5f}</td>"
        f"<td>{'chosen' if row.get('chosen') else ''}</td></tr>"
        for row in data["factorization"]
    )
    factorization_table = (
        "<h2>Preference factorization: held-out log-likelihood per click</h2><table><tr><th>"
        "dimension</th><th>held-out log-likelihood</th><th></th></tr>" + factorization + "</table>"
        if factorization
        else ""
    )
    compared = ""
    if comparison:
        flagged = sum(
            1
            for row in comparison["rows"]
            if row["p_value"] is not None and row["p_value"] < FLAG_P
        )
        compared = (
            f"<h2>The log beside a log simulated from the fitted world</h2><p class='how'>"
            f"{comparison['replications']} simulations of {comparison['simulated_users']:,} "
            "users over the log's duration (rates per user, session and impression do not depend "
            "on the count). Rates differ from one random catalogue to the next as much as from "
            "impression to impression: each rate of the log is tested as one more replication; "
            "distributions by two-sample Kolmogorov-Smirnov tests on the pooled simulations; "
            f"rows with p &lt; {FLAG_P} are marked ⚠ ({flagged} of {len(comparison['rows'])}). "
            "With a large log, a tiny difference is significant: read the values too.</p>"
            "<div class='scroll'><table><tr><th>statistic</th><th>log</th><th>simulated (mean)</th>"
            "<th>test</th><th>p-value</th></tr>"
            + "".join(_comparison_row(row) for row in comparison["rows"])
            + "</table></div>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recloop calibrate: {esc(data["log"])}</title><style>{CSS}</style></head>
<body>
<header><h1>Calibrated from {esc(data["log"])}</h1>
<p class="meta">{data["rows"]:,} rows, {data["users"]:,} users, {data["items"]:,} items over
{data["days"]:.3g} days; fitted in {data["seconds"]:.1f} s; scenario written to
{esc(data["scenario_path"])} (<code>recloop run {esc(data["scenario_path"])}</code>).</p></header>
{compared}
{"".join(blocks)}
<h2>Fitted parameters</h2>
<div class="scroll"><table><tr><th>parameter</th><th>value</th><th>SE</th><th>source</th></tr>
{fitted}</table></div>
<h2>Not identified by the log (recloop's defaults kept)</h2><ul>{missing}</ul>
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
{factorization_table}
<h2>Scenario</h2><pre>{esc(data["scenario"])}</pre>
</body></html>
"""


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _comparison_row(row: dict[str, Any]) -> str:
    p = row["p_value"]
    flag = " ⚠" if p is not None and p < FLAG_P else ""
    return (
        f"<tr><td>{esc(row['statistic'])}{flag}</td><td class='num'>{row['log']:.4g}</td>"
        f"<td class='num'>{row['simulated']:.4g}</td><td>{esc(row['test'])}</td>"
        f"<td class='num'>{_number(p)}</td></tr>"
    )


def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis_title=y_title,
        height=340,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def _charts(series: dict[str, Any]) -> list[tuple[go.Figure, str]]:
    charts = []
    figure = _figure("CTR by position", "position", "clicks per impression")
    for index, values in enumerate(series["ctr_by_position"]):
        figure.add_trace(
            go.Scatter(
                x=list(range(len(values))),
                y=values,
                name=NAMES[index],
                line={"color": COLORS[index]},
            )
        )
    charts.append((figure, "Examination falls with position: examine_decay."))
    for key, title, axis in (
        ("sessions_per_user", "Sessions per user over the log", "sessions (50: 50 or more)"),
        ("session_requests", "Requests per session", "requests (50: 50 or more)"),
    ):
        figure = _figure(title, axis, "share")
        for index, hist in enumerate(series[key]):
            figure.add_trace(
                go.Bar(
                    x=hist["value"], y=hist["share"], name=NAMES[index], marker_color=COLORS[index]
                )
            )
        charts.append((figure, "Users seen at least once; sessions as logged."))
    figure = _figure("Session starts by hour of day", "hour", "share of session starts")
    for index, values in enumerate(series["hourly"]):
        figure.add_trace(
            go.Scatter(
                x=list(range(24)), y=values, name=NAMES[index], line={"color": COLORS[index]}
            )
        )
    charts.append((figure, "The diurnal profile: amplitude and peak hour."))
    figure = _figure("Item popularity", "item rank (share of items)", "share of clicks")
    for index, curve in enumerate(series["popularity"]):
        figure.add_trace(
            go.Scatter(
                x=curve["rank"], y=curve["share"], name=NAMES[index], line={"color": COLORS[index]}
            )
        )
    figure.update_xaxes(type="log")
    figure.update_yaxes(type="log")
    charts.append((figure, "Clicks per item by rank: the popularity exponent and quality spread."))
    kinds = list(series["kind_rates"])
    figure = _figure("Events per impression, by kind", "kind", "rate")
    for index in range(2):
        figure.add_trace(
            go.Bar(
                x=kinds,
                y=[series["kind_rates"][kind][index] for kind in kinds],
                name=NAMES[index],
                marker_color=COLORS[index],
            )
        )
    figure.update_yaxes(type="log")
    charts.append((figure, "Clicks and each negative kind (abandon: per impression too)."))
    return charts
