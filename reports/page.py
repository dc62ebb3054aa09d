"""The HTML report: one self-contained file that answers a results directory's question.

Built from the directory's files alone (``recloop report DIR`` rebuilds it for any run, from any
machine). Every string a user wrote (names, descriptions, labels) is HTML-escaped before it
reaches the page or a chart, so a scenario named ``<script>`` shows as text. Colours are fixed per
variant across every chart.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from reports.results import ResultsError, read_summary

__all__ = [
    "ReportData",
    "load_report_data",
    "build_report",
    "variant_colors",
    "absorption_figure",
    "exposure_figure",
    "suppression_figure",
    "cost_harm_figure",
    "business_figure",
    "pareto_front",
    "headline",
]

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79",
)  # fmt: skip
BOUND_COLORS = {"frozen": "#7f7f7f", "instant": "#000000"}
LAYER_DASH = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot", "5px,2px")
#: Time-axis ticks from a millisecond to a month, for delays on a log scale.
TIME_TICKS = (
    (0.001, "1ms"), (0.01, "10ms"), (0.1, "100ms"), (1, "1s"), (10, "10s"), (60, "1m"),
    (600, "10m"), (3600, "1h"), (6 * 3600, "6h"), (86400, "1d"), (7 * 86400, "1w"),
    (30 * 86400, "1mo"),
)  # fmt: skip
#: Points kept per CDF line (quantiles), whatever the number of events.
CDF_POINTS = 200


def esc(text: Any) -> str:
    """User text as safe HTML (also inside Plotly strings, which render entities as text)."""
    return html.escape(str(text), quote=True)


@dataclass
class ReportData:
    """Everything the report reads, loaded once from a results directory."""

    folder: Path
    summary: dict[str, Any]
    scenario_yaml: str
    runs: pd.DataFrame
    propagation: pd.DataFrame
    exposure: pd.DataFrame
    suppression: pd.DataFrame
    timeseries: pd.DataFrame
    layers: pd.DataFrame

    @property
    def variants(self) -> list[str]:
        return list(self.summary["variants"])


def load_report_data(folder: str | Path) -> ReportData:
    """Read a results directory (raises :class:`ResultsError` naming a missing file)."""
    folder = Path(folder)
    summary = read_summary(folder)

    def table(name: str) -> pd.DataFrame:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise ResultsError(f"{path}: missing; the report needs the whole results directory")
        return pd.read_parquet(path)

    scenario = folder / "scenario.yaml"
    return ReportData(
        folder=folder,
        summary=summary,
        scenario_yaml=scenario.read_text(encoding="utf-8") if scenario.is_file() else "",
        runs=table("runs"),
        propagation=table("propagation"),
        exposure=table("exposure"),
        suppression=table("suppression"),
        timeseries=table("timeseries"),
        layers=table("layers"),
    )


def variant_colors(variants: list[str]) -> dict[str, str]:
    """A fixed colour per variant: the palette in order, grey and black for the bounds."""
    colors: dict[str, str] = {}
    index = 0
    for variant in variants:
        if variant in BOUND_COLORS:
            colors[variant] = BOUND_COLORS[variant]
        else:
            colors[variant] = PALETTE[index % len(PALETTE)]
            index += 1
    return colors


def _time_axis(title: str) -> dict[str, Any]:
    return {
        "type": "log",
        "title": {"text": title},
        "tickvals": [value for value, _ in TIME_TICKS],
        "ticktext": [label for _, label in TIME_TICKS],
    }


# --- figures ---------------------------------------------------------------------------------


def absorption_figure(data: ReportData, colors: dict[str, str]) -> go.Figure:
    """CDF of absorption delay per layer (dash) and variant (colour), log time axis."""
    figure = go.Figure()
    frame = data.propagation
    layers = sorted(frame["layer"].astype(str).unique()) if len(frame) else []
    for variant in data.variants:
        for index, layer in enumerate(layers):
            rows = frame[(frame["variant"] == variant) & (frame["layer"].astype(str) == layer)]
            if not len(rows):
                continue
            delays = np.sort(rows["delay_seconds"].dropna().to_numpy())
            delays = np.maximum(delays, 1e-3)  # a zero delay sits at the axis' left end
            if not delays.shape[0]:
                continue
            share = np.arange(1, delays.shape[0] + 1) / len(rows)  # unabsorbed stay below 1
            keep = np.unique(np.linspace(0, delays.shape[0] - 1, CDF_POINTS).astype(int))
            figure.add_trace(
                go.Scatter(
                    x=delays[keep],
                    y=share[keep],
                    mode="lines",
                    name=f"{esc(variant)} · {esc(layer)}",
                    legendgroup=esc(variant),
                    line={"color": colors[variant], "dash": LAYER_DASH[index % len(LAYER_DASH)]},
                )
            )
    figure.update_layout(
        title={"text": "How long each layer takes to absorb a negative event"},
        xaxis=_time_axis(
            "delay from the event to the layer's state covering it, live for the user"
        ),
        yaxis={"title": {"text": "share of negative events absorbed"}, "range": [0, 1.02]},
    )
    return figure


def _mean_band(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean of ``y`` over replications at each ``x``, with min and max across them."""
    grouped = frame.groupby(x)[y]
    return pd.DataFrame({"mean": grouped.mean(), "low": grouped.min(), "high": grouped.max()})


def _band_traces(
    figure: go.Figure, band: pd.DataFrame, name: str, color: str, **where: Any
) -> None:
    x = band.index.to_numpy()
    figure.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([band["high"].to_numpy(), band["low"].to_numpy()[::-1]]),
            fill="toself",
            fillcolor=color,
            opacity=0.15,
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        ),
        **where,
    )
    figure.add_trace(
        go.Scatter(
            x=x, y=band["mean"], mode="lines", name=name, legendgroup=name, line={"color": color}
        ),
        **where,
    )


def exposure_figure(data: ReportData, colors: dict[str, str], match: str = "topic") -> go.Figure:
    """Impressions of the rejected topic (or item) per negative, against time since it."""
    figure = go.Figure()
    frame = data.exposure[data.exposure["match"] == match].dropna(
        subset=["impressions_per_negative"]
    )
    for variant in data.variants:
        rows = frame[frame["variant"] == variant].assign(
            hours=lambda f: f["seconds_since_negative"] / 3600.0
        )
        if len(rows):
            band = _mean_band(rows, "hours", "impressions_per_negative")
            _band_traces(figure, band, esc(variant), colors[variant])
    figure.update_layout(
        title={"text": f"Residual exposure to the same {match} after an explicit negative"},
        xaxis={"title": {"text": "hours since the negative event"}, "type": "log"},
        yaxis={"title": {"text": f"impressions of the same {match} per negative (cumulative)"}},
    )
    return figure


def suppression_figure(data: ReportData, colors: dict[str, str], intervention: str) -> go.Figure:
    """Bad impressions per hour after one intervention, with the baseline's releases marked."""
    frame = data.suppression[data.suppression["intervention"] == intervention]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2])
    for variant in data.variants:
        rows = frame[frame["variant"] == variant]
        if not len(rows):
            continue
        width = np.diff(np.unique(rows["seconds_since_intervention"]))
        bin_hours = (float(width[0]) if width.shape[0] else 3600.0) / 3600.0
        rows = rows.assign(
            hours=rows["seconds_since_intervention"] / 3600.0,
            per_hour=rows["bad_impressions"] / bin_hours,
        )
        _band_traces(figure, _mean_band(rows, "hours", "per_hour"), esc(variant), colors[variant],
                     row=1, col=1)  # fmt: skip
    at = _intervention_time(data, intervention)
    baseline = data.summary["baseline"]
    releases = data.layers[
        (data.layers["variant"] == baseline)
        & (data.layers["replication"] == 0)
        & (data.layers["live_at"] >= at)
    ]
    for index, (layer, rows) in enumerate(releases.groupby("layer")):
        if len(rows) > 400:  # continuous layers release every window: a band, not marks
            continue
        figure.add_trace(
            go.Scatter(
                x=(rows["live_at"] - at) / 3600.0,
                y=[esc(layer)] * len(rows),
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 12, "color": "#444"},
                name=f"{esc(layer)} releases ({esc(baseline)}, r0)",
                text=[f"v{v} {c}" for v, c in zip(rows["version"], rows["cohort"], strict=True)],
                showlegend=index == 0,
                legendgroup="releases",
            ),
            row=2,
            col=1,
        )
    figure.update_layout(
        title={"text": f"Bad impressions per hour after “{esc(intervention)}”"},
        yaxis={"title": {"text": "bad impressions per hour"}},
        xaxis2={"title": {"text": "hours since the intervention"}},
        yaxis2={"title": {"text": "releases"}},
    )
    return figure


def _intervention_time(data: ReportData, intervention: str) -> float:
    return float(data.summary.get("interventions", {}).get(intervention, 0.0))


def pareto_front(cost: np.ndarray, harm: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both cost and harm, by increasing cost.

    >>> pareto_front(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 12.0, 5.0, 6.0])).tolist()
    [0, 2]
    """
    order = np.lexsort((harm, cost))
    front, best = [], np.inf
    for index in order:
        if harm[index] < best:
            front.append(int(index))
            best = harm[index]
    return np.array(front, int)


def cost_harm_figure(
    data: ReportData, colors: dict[str, str], harm: str, harm_title: str
) -> go.Figure:
    """Compute cost per day against harm, per variant (mean and range), Pareto front drawn."""
    figure = go.Figure()
    runs = data.runs[data.runs["status"] == "ok"]
    points = runs.groupby("variant")[["cost_per_day", harm]].agg(["mean", "min", "max"])
    points = points.reindex([v for v in data.variants if v in points.index])
    for variant, row in points.iterrows():
        figure.add_trace(
            go.Scatter(
                x=[row[("cost_per_day", "mean")]],
                y=[row[(harm, "mean")]],
                mode="markers",
                name=esc(variant),
                marker={"color": colors[str(variant)], "size": 12},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [row[(harm, "max")] - row[(harm, "mean")]],
                    "arrayminus": [row[(harm, "mean")] - row[(harm, "min")]],
                },
            )
        )
    cost = points[("cost_per_day", "mean")].to_numpy(float)
    value = points[(harm, "mean")].to_numpy(float)
    front = pareto_front(cost, value)
    figure.add_trace(
        go.Scatter(
            x=cost[front],
            y=value[front],
            mode="lines",
            name="Pareto front",
            line={"color": "#444", "dash": "dot"},
        )
    )
    positive = cost[cost > 0]
    figure.update_layout(
        title={"text": f"Compute cost against harm ({esc(harm_title)})"},
        xaxis={
            "title": {"text": "compute cost units per simulated day"},
            "type": "log" if positive.shape[0] == cost.shape[0] and cost.shape[0] else "linear",
        },
        yaxis={"title": {"text": esc(harm_title)}},
    )
    return figure


BUSINESS_PANELS = (
    ("ctr", "CTR"),
    ("sessions", "sessions started per bin"),
    ("churned_users", "users churned per bin"),
    ("topic_gini", "topic concentration (Gini)"),
)
#: Shown when the runs measured it (``metrics.regret``), and when fresh items were shown.
REGRET_PANEL = ("regret_per_request", "regret: expected clicks lost per request")
FRESH_PANEL = ("fresh_impression_share", "share of impressions on fresh items")


def business_figure(data: ReportData, colors: dict[str, str]) -> go.Figure:
    """CTR, sessions, churn, topic concentration and, when there is something to show, regret
    and the share of fresh items over simulated time, per variant."""
    frame = data.timeseries.assign(hours=data.timeseries["start_seconds"] / 3600.0)
    panels: tuple[tuple[str, str], ...] = BUSINESS_PANELS
    if REGRET_PANEL[0] in frame.columns and frame[REGRET_PANEL[0]].notna().any():
        panels = (*panels, REGRET_PANEL)
    if FRESH_PANEL[0] in frame.columns and frame[FRESH_PANEL[0]].fillna(0).gt(0).any():
        panels = (*panels, FRESH_PANEL)
    grid_rows = (len(panels) + 1) // 2
    figure = make_subplots(rows=grid_rows, cols=2, subplot_titles=[title for _, title in panels])
    for index, (column, _) in enumerate(panels):
        row, col = index // 2 + 1, index % 2 + 1
        for variant in data.variants:
            series = frame[frame["variant"] == variant].dropna(subset=[column])
            if not len(series):
                continue
            mean = series.groupby("hours")[column].mean()
            figure.add_trace(
                go.Scatter(
                    x=mean.index,
                    y=mean.to_numpy(),
                    mode="lines",
                    name=esc(variant),
                    legendgroup=esc(variant),
                    showlegend=index == 0,
                    line={"color": colors[variant]},
                ),
                row=row,
                col=col,
            )
        figure.update_xaxes(title_text="simulated hours", row=row, col=col)
    figure.update_layout(
        title={"text": "Business and health metrics over time"}, height=310 * grid_rows
    )
    return figure


# --- the page --------------------------------------------------------------------------------

#: Table columns: metric, title, format, direction (-1: lower is better, 1: higher is better).
TABLE_METRICS = (
    ("bad_impressions", "bad impressions", "{:,.0f}", -1),
    ("repeat_offences_per_negative", "repeat offences / negative", "{:.2f}", -1),
    ("ctr", "CTR", "{:.4f}", 1),
    ("regret_per_request", "regret (clicks / request)", "{:.4f}", -1),
    ("sessions_lost", "sessions lost", "{:,.0f}", -1),
    ("churned_users", "churned users", "{:,.0f}", -1),
    ("top1pct_item_share", "impressions on top 1% of items", "{:.1%}", -1),
    ("item_coverage", "catalogue shown per day", "{:.1%}", 1),
    ("topic_gini", "topic Gini", "{:.3f}", -1),
    ("cost_per_day", "cost units / day", "{:,.0f}", -1),
    ("propagation_efficiency", "propagation efficiency", "{:.2f}", 1),
)


def _harm_metric(data: ReportData) -> tuple[str, str]:
    if "bad_impressions" in data.runs.columns and data.runs["bad_impressions"].notna().any():
        return "bad_impressions", "bad impressions after the interventions"
    return "repeat_offences_per_negative", "repeat offences per explicit negative"


def headline(data: ReportData) -> str:
    """One paragraph answering the scenario's question from the numbers (plain text)."""
    summary = data.summary
    comparisons = summary["comparisons"]
    baseline = summary["baseline"]
    harm, harm_title = _harm_metric(data)
    candidates = [
        v for v in summary["variants"] if v not in BOUND_COLORS and harm in comparisons.get(v, {})
    ]
    n = summary["replications"]
    if len(candidates) < 2:
        base = comparisons.get(baseline, {}).get(harm)
        if base is None:
            return "This run has no harm metric to compare: it measured no negative feedback."
        return (
            f"One variant ({baseline}): {harm_title} {base['mean']:,.2f} over {n} "
            f"replication(s). Add variants to compare cadences."
        )
    best = min(candidates, key=lambda v: comparisons[v][harm]["mean"])
    if best == baseline:
        others = [v for v in candidates if v != baseline]
        runner_up = min(others, key=lambda v: comparisons[v][harm]["mean"])
        relative = comparisons[runner_up][harm].get("relative")
        text = (
            f"The baseline, {baseline}, has the fewest {harm_title}; the next best, {runner_up}, "
            f"differs by {_percent(relative)}"
        )
        return text + f" ({_significance(relative, n)})."
    entry = comparisons[best][harm]
    relative = entry.get("relative")
    cost_base = comparisons[baseline].get("cost_per_day", {}).get("mean")
    cost_best = comparisons[best].get("cost_per_day", {}).get("mean")
    cost = ""
    if cost_base and cost_best is not None:
        cost = f" and costs {cost_best / cost_base:,.1f}× the baseline's compute per day"
    return (
        f"Moving from {baseline} to {best} changes {harm_title} by {_percent(relative)}{cost} "
        f"({_significance(relative, n)})."
    )


def _percent(relative: dict[str, Any] | None) -> str:
    if relative is None:
        return "an unknown share"
    text = f"{100 * relative['mean']:+.0f}%"
    if relative["ci95"]:
        low, high = (100 * bound for bound in relative["ci95"])
        text += f" [{low:+.0f}%, {high:+.0f}%]"
    return text


def _significance(relative: dict[str, Any] | None, n: int) -> str:
    if relative is None or not relative["ci95"]:
        return f"{n} replication(s): no interval, so no claim of a difference"
    low, high = relative["ci95"]
    if low > 0 or high < 0:
        return f"the 95% interval over {n} replications excludes no change"
    return f"the 95% interval over {n} replications includes no change: not distinguishable"


def _table(data: ReportData) -> str:
    comparisons = data.summary["comparisons"]
    baseline = data.summary["baseline"]
    replications = int(data.summary["replications"])
    metrics = [m for m in TABLE_METRICS if any(m[0] in c for c in comparisons.values())]
    for name in _harmful_interventions(data):
        for percent in (50, 10):
            key = f"{name}.time_to_{percent}pct_seconds"
            if any(key in c for c in comparisons.values()):
                metrics.append((key, f"{name}: time to {percent}%", "hours", -1))
    best: dict[str, str] = {}
    for metric, _, _, direction in metrics:
        values = {
            v: c[metric]["mean"]
            for v, c in comparisons.items()
            if metric in c and v not in BOUND_COLORS  # the bounds are references, not choices
        }
        if len(set(values.values())) > 1 and metric != "propagation_efficiency":
            pick = min if direction < 0 else max
            best[metric] = pick(values, key=lambda v: values[v])
    head = "".join(f"<th>{esc(title)}</th>" for _, title, _, _ in metrics)
    rows = []
    for variant in data.variants:
        cells = []
        for metric, _, fmt, _ in metrics:
            entry = comparisons.get(variant, {}).get(metric)
            if entry is None:
                cells.append('<td class="na">n/a</td>')
                continue
            cells.append(_cell(entry, fmt, best.get(metric) == variant, replications))
        label = esc(variant) + (" <small>(baseline)</small>" if variant == baseline else "")
        label += " <small>(bound)</small>" if variant in BOUND_COLORS else ""
        if variant in data.summary.get("oracle_variants", []):
            label += " <small>(oracle: ranks by ground truth, an upper bound)</small>"
        kind = " class='bound'" if variant in BOUND_COLORS else ""
        rows.append(f"<tr{kind}><th scope='row'>{label}</th>{''.join(cells)}</tr>")
    return (
        "<table class='variants'><thead><tr><th>variant</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _format(value: float, fmt: str) -> str:
    return f"{value / 3600.0:,.1f} h" if fmt == "hours" else fmt.format(value)


def _cell(entry: dict[str, Any], fmt: str, best: bool, replications: int) -> str:
    text = _format(entry["mean"], fmt)
    if entry["n"] < replications:  # e.g. suppression reached in only some replications
        text += f" <small class='partial'>(in {entry['n']} of {replications})</small>"
    if entry["ci95"]:
        low, high = entry["ci95"]
        text += f" <small>[{_format(low, fmt)}, {_format(high, fmt)}]</small>"
    delta = entry.get("delta")
    if delta is not None:
        change = f"Δ {_format(delta['mean'], fmt)}"
        if delta["ci95"]:
            change += f" [{_format(delta['ci95'][0], fmt)}, {_format(delta['ci95'][1], fmt)}]"
        text += f"<br><small class='delta'>{change}</small>"
    marker = " <span class='best' title='best value'>★</span>" if best else ""
    return f"<td{' class=best-cell' if best else ''}>{text}{marker}</td>"


def _harmful_interventions(data: ReportData) -> list[str]:
    frame = data.suppression
    return list(dict.fromkeys(frame["intervention"])) if len(frame) else []


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem}.answer{font-size:1.15rem;background:#f3f6fa;border-left:4px solid #1f77b4;
padding:.8rem 1rem}.variants{border-collapse:collapse;font-size:.85rem;margin:1rem 0}
.variants th,.variants td{border:1px solid #ddd;padding:.35rem .5rem;text-align:right;
vertical-align:top}.variants th[scope=row]{text-align:left}.best-cell{background:#eef8ee}
.best{color:#2ca02c}.na{color:#999}.bound{color:#666;font-style:italic}.how{color:#555;font-size:.9rem;margin-top:.6rem}
pre{background:#f7f7f7;padding:1rem;overflow:auto;font-size:.8rem}.chart{margin:1.5rem 0 2.5rem}
"""


def build_report(folder: str | Path, plotlyjs: str = "inline") -> str:
    """The report of a results directory as one HTML page (``plotlyjs``: inline or cdn)."""
    data = load_report_data(folder)
    summary = data.summary
    colors = variant_colors(data.variants)
    harm, harm_title = _harm_metric(data)
    charts: list[tuple[go.Figure, str]] = [
        (
            absorption_figure(data, colors),
            "Each line is one layer (dash) of one variant (colour): the share of negative events "
            "its served state had absorbed by the delay on the x-axis. Lines that end below 1 "
            "left events unabsorbed when the run ended.",
        ),
        (
            exposure_figure(data, colors),
            "After a user says no, how many more impressions of that topic they got, cumulated "
            "over the time since; the band spans the replications. Flatter is faster "
            "suppression; the frozen and instant bounds frame what propagation can achieve.",
        ),
    ]
    for name in _harmful_interventions(data):
        charts.append(
            (
                suppression_figure(data, colors, name),
                "Bad impressions per hour from the intervention on (band: range over "
                "replications); the marks below are the baseline's version releases, where a "
                "faster layer should bend the curve down.",
            )
        )
    if "cost_per_day" in data.runs.columns:
        charts.append(
            (
                cost_harm_figure(data, colors, harm, harm_title),
                "Each point is a variant (bars: range over replications). Points on the dotted "
                "Pareto front are the only ones worth their cost; anything above it pays more "
                "for the same harm or suffers more harm for the same cost.",
            )
        )
    charts.append(
        (
            business_figure(data, colors),
            "Means over replications per bin of simulated time. A faster loop that narrows "
            "what users see shows up as rising topic concentration.",
        )
    )
    include = plotlyjs
    blocks = []
    for index, (figure, how) in enumerate(charts):
        figure.update_layout(template="plotly_white", margin={"t": 60})
        body = pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=include if index == 0 else False,
            div_id=f"chart-{index}",
            config={"displaylogo": False, "responsive": True},
        )
        blocks.append(f"<section class='chart'>{body}<p class='how'>{esc(how)}</p></section>")
    if include not in ("inline", "cdn"):
        raise ValueError(f"plotlyjs must be inline or cdn, got {plotlyjs!r}")
    description = esc(summary.get("description", "")).replace("\n", " ")
    question = (
        "How fast does a user's “no” reach what they are shown under each variant, through "
        "which layer, what does the delay cost, and what does speed cost in compute?"
    )
    facts = {
        "recloop version": summary.get("recloop_version"),
        "seed": summary.get("seed"),
        "replications": summary.get("replications"),
        "variants": ", ".join(summary["variants"]),
        "baseline": summary["baseline"],
        "runs": summary.get("runs"),
        "failed runs": len(summary.get("failed_runs", [])),
        "interval": summary.get("interval"),
        "wall time": f"{summary.get('wall_seconds', 0):,.1f} s",
    }
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items())
    failed = "".join(
        f"<li>{esc(run['variant'])} r{esc(run['replication'])}: {esc(run['error'])}</li>"
        for run in summary.get("failed_runs", [])
    )
    notes = "".join(f"<li>{esc(note)}</li>" for note in summary.get("notes", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recloop: {esc(summary["scenario"])}</title><style>{CSS}</style></head>
<body>
<header><h1>{esc(summary["scenario"])}</h1><p>{description}</p>
<p><strong>The question.</strong> {esc(question)}</p>
<p class="answer" id="answer">{esc(headline(data))}</p></header>
<h2>Variants</h2>
<p class="how">Mean over replications [95% interval]; Δ is the paired difference from the
baseline [its interval]; ★ marks the best value among the variants (not the bounds). Times are
until bad impressions fall to 50% or 10% of their level before the intervention; "in k of n" means
only k replications got there before the run ended, and the figure averages those.</p>
{_table(data)}
{"<h3>Failed runs</h3><ul>" + failed + "</ul>" if failed else ""}
{"<ul class='how'>" + notes + "</ul>" if notes else ""}
<h2>Propagation, exposure and cost</h2>
{"".join(blocks)}
<h2>Run</h2>
<table>{fact_rows}</table>
<details><summary>Resolved scenario (runs again as is)</summary>
<pre>{esc(data.scenario_yaml)}</pre></details>
<script type="application/json" id="recloop-summary">{_json_for_script(summary)}</script>
</body></html>
"""


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its ``<script>`` element early."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
