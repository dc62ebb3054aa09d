"""The report's charts, each built from :class:`~reports.data.ReportData` alone.

Every chart titles both axes and keeps its tick labels (no subplot is drawn without data), draws
each variant in its :mod:`~reports.encoding` style (its ``meta`` names the variant, for tests
and tools), and puts its legend below the plot at full height, never in a scrolling box.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.data import ReportData, duration
from reports.encoding import Style, lighter, merged_label, plot_text

__all__ = [
    "absorption_figure",
    "exposure_figure",
    "suppression_figure",
    "cost_harm_figure",
    "timeseries_figure",
    "twin_exposure_figure",
    "pareto_front",
    "time_ticks",
]

#: Time-axis ticks from a millisecond to a month, for times on a log scale.
TIME_TICKS = (
    (0.001, "1ms"), (0.01, "10ms"), (0.1, "100ms"), (1, "1s"), (10, "10s"), (60, "1m"),
    (120, "2m"), (300, "5m"), (600, "10m"), (1800, "30m"), (3600, "1h"), (2 * 3600, "2h"),
    (6 * 3600, "6h"), (12 * 3600, "12h"), (86400, "1d"), (2 * 86400, "2d"), (7 * 86400, "1w"),
    (30 * 86400, "1mo"),
)  # fmt: skip
#: Points kept per CDF line (quantiles), whatever the number of events.
CDF_POINTS = 200
#: More lines than this and the ranges over replications start hidden (a button shows them):
#: overlapping translucent bands of many colours merge into one wash.
MAX_BANDS = 4
WIDTH = 1180
LEGEND_ROW = 24


#: The ticks kept where a time axis is narrow (a panel of several).
SPARSE_TICKS = ("1ms", "10ms", "100ms", "1s", "10s", "1m", "10m", "1h", "6h", "1d", "1w", "1mo")


def time_ticks(low: float, high: float, sparse: bool = False) -> dict[str, Any]:
    """Tick values and labels for a log time axis from ``low`` to ``high`` seconds, the first
    at or below ``low`` so that the left end is labelled.

    >>> time_ticks(60, 7200)["ticktext"]
    ['1m', '2m', '5m', '10m', '30m', '1h', '2h']
    >>> time_ticks(60, 7200, sparse=True)["ticktext"]
    ['1m', '10m', '1h']
    """
    ticks = [(v, t) for v, t in TIME_TICKS if t in SPARSE_TICKS or not sparse]
    inside = [(v, t) for v, t in ticks if low / 1.001 <= v <= high * 1.001]
    below = [(v, t) for v, t in ticks if v < low / 1.001]
    if below and (not inside or inside[0][0] > low * 1.5):
        inside.insert(0, below[-1])
    return {"tickvals": [v for v, _ in inside], "ticktext": [t for _, t in inside]}


def _trace_style(data: ReportData, variant: str, first: bool) -> dict[str, Any]:
    style: Style = data.styles[variant]
    return {
        "name": plot_text(variant),
        "legendgroup": variant,
        "showlegend": first and not data.single,
        "meta": {"variant": variant},
        "legendrank": 1000 + data.variants.index(variant),
        "line": {"color": style.color, "dash": style.dash, "width": 2},
    }


def _finish(figure: go.Figure, data: ReportData, title: str, height: int) -> go.Figure:
    """Title, template and a legend below the plot, as tall as its entries need."""
    names = [t.name for t in figure.data if t.showlegend is not False and t.name]
    longest = max((len(name) for name in names), default=0)
    per_row = max(1, WIDTH // (7 * longest + 60)) if names else 1
    rows = math.ceil(len(names) / per_row) if names else 0
    figure.update_layout(
        title={"text": title},
        template="plotly_white",
        height=height + LEGEND_ROW * rows,
        margin={"t": 60, "l": 80, "r": 30},
        legend={
            "orientation": "h",
            "yanchor": "top",
            "y": -0.08 - 30 / height,
            "x": 0,
            "maxheight": 1.0,
            "groupclick": "togglegroup",
        },
        showlegend=bool(names),
        hoverlabel={"namelength": -1},
    )
    return figure


# --- propagation -------------------------------------------------------------------------------


def absorption_figure(data: ReportData) -> go.Figure | None:
    """Per layer (a panel each), the CDF of absorption delay of each variant, log time axis.
    ``None`` when no negative event was measured."""
    frame = data.propagation
    frame = frame[frame["absorbed"]] if len(frame) else frame  # absorbed nothing: no panel
    layers = list(dict.fromkeys(frame["layer"].astype(str))) if len(frame) else []
    if not layers:
        return None
    delays = np.maximum(frame["delay_seconds"].dropna().to_numpy(), 1e-3)
    ticks = time_ticks(float(delays.min()), float(delays.max()), sparse=len(layers) > 1)
    figure = make_subplots(
        rows=1, cols=len(layers), subplot_titles=[plot_text(layer) for layer in layers]
    )
    shown: set[str] = set()
    for column, layer in enumerate(layers, start=1):
        for variant in data.variants:
            rows = data.propagation[
                (data.propagation["variant"] == variant)
                & (data.propagation["layer"].astype(str) == layer)
            ]
            absorbed = np.sort(np.maximum(rows["delay_seconds"].dropna().to_numpy(), 1e-3))
            if not absorbed.shape[0]:
                continue
            share = np.arange(1, absorbed.shape[0] + 1) / len(rows)  # unabsorbed stay below 1
            keep = np.unique(np.linspace(0, absorbed.shape[0] - 1, CDF_POINTS).astype(int))
            figure.add_trace(
                go.Scatter(
                    x=absorbed[keep],
                    y=share[keep],
                    mode="lines",
                    **_trace_style(data, variant, variant not in shown),
                ),
                row=1,
                col=column,
            )
            shown.add(variant)
        figure.update_xaxes(type="log", title_text="delay to absorb", row=1, col=column, **ticks)
        figure.update_yaxes(
            title_text="share of negatives absorbed" if column == 1 else "",
            range=[0, 1.02],
            tickformat=".0%",
            row=1,
            col=column,
        )
    if not figure.data:
        return None
    return _finish(figure, data, "How long each layer takes to absorb a negative event", height=430)


def _mean_band(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean of ``y`` over replications at each ``x``, with min and max across them."""
    grouped = frame.groupby(x)[y]
    return pd.DataFrame({"mean": grouped.mean(), "low": grouped.min(), "high": grouped.max()})


def _band_traces(
    figure: go.Figure, data: ReportData, variant: str, band: pd.DataFrame, **where: Any
) -> None:
    """The mean line and, over several replications, the range band (translucent fill)."""
    x = band.index.to_numpy()
    style = data.styles[variant]
    if data.replications > 1:
        rgb = tuple(int(style.color[i : i + 2], 16) for i in (1, 3, 5))
        figure.add_trace(
            go.Scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([band["high"].to_numpy(), band["low"].to_numpy()[::-1]]),
                mode="lines",
                fill="toself",
                fillcolor="rgba({}, {}, {}, 0.12)".format(*rgb),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=variant,
                name=plot_text(variant) + " (range)",
                meta={"variant": variant, "band": True},
            ),
            **where,
        )
    figure.add_trace(
        go.Scatter(x=x, y=band["mean"], mode="lines", **_trace_style(data, variant, True)),
        **where,
    )


def _band_switch(figure: go.Figure) -> None:
    """Hide the range bands when there are many lines, with a button to show them."""
    bands = [bool((t.meta or {}).get("band")) for t in figure.data]
    lines = sum(1 for t in figure.data if not (t.meta or {}).get("band"))
    if not any(bands) or lines <= MAX_BANDS:
        return
    for trace, band in zip(figure.data, bands, strict=True):
        if band:
            trace.visible = False
    visible_without = [not band for band in bands]
    figure.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "x": 1,
                "xanchor": "right",
                "y": 1.12,
                "yanchor": "bottom",
                "showactive": True,
                "active": 0,
                "buttons": [
                    {"label": "means", "method": "restyle", "args": [{"visible": visible_without}]},
                    {
                        "label": "means and ranges over replications",
                        "method": "restyle",
                        "args": [{"visible": [True] * len(bands)}],
                    },
                ],
            }
        ]
    )


def exposure_figure(data: ReportData, match: str = "topic") -> go.Figure | None:
    """Impressions of the rejected topic (or item) per negative, cumulated over the time since
    it (the mean cumulative function: it never falls). ``None`` when nothing was measured."""
    frame = data.exposure[data.exposure["match"] == match].dropna(
        subset=["impressions_per_negative"]
    )
    if not len(frame):
        return None
    figure = go.Figure()
    for variant in data.variants:
        rows = frame[frame["variant"] == variant]
        if len(rows):
            band = _mean_band(rows, "seconds_since_negative", "impressions_per_negative")
            _band_traces(figure, data, variant, band)
    seconds = frame["seconds_since_negative"]
    _band_switch(figure)
    figure.update_layout(
        xaxis={
            "title": {"text": "time since the negative event (log scale)"},
            "type": "log",
            **time_ticks(float(seconds.min()), float(seconds.max())),
        },
        yaxis={"title": {"text": f"impressions of the same {match} per negative"}},
    )
    return _finish(
        figure,
        data,
        f"Residual exposure to the same {match} after an explicit negative (cumulative)",
        height=450,
    )


def suppression_figure(data: ReportData, intervention: str) -> go.Figure | None:
    """Bad impressions per hour after one intervention; above it, when the baseline released
    versions then, a strip of those releases."""
    frame = data.suppression[data.suppression["intervention"] == intervention]
    if not len(frame):
        return None
    width = np.diff(np.unique(frame["seconds_since_intervention"]))
    bin_seconds = float(width[0]) if width.shape[0] else 3600.0
    at = float(data.summary.get("interventions", {}).get(intervention, 0.0))
    baseline = data.summary["baseline"]
    releases = data.layers[
        (data.layers["variant"] == baseline)
        & (data.layers["replication"] == 0)
        & (data.layers["live_at"] >= at)
    ]
    # continuous layers release every window: a band, not marks
    marked = [(layer, rows) for layer, rows in releases.groupby("layer") if len(rows) <= 400]
    main_row = 2 if marked else 1
    figure = (
        make_subplots(
            rows=2, cols=1, shared_xaxes=True, row_heights=[0.18, 0.82], vertical_spacing=0.04
        )
        if marked
        else make_subplots(rows=1, cols=1)
    )
    for variant in data.variants:
        rows = frame[frame["variant"] == variant]
        if not len(rows):
            continue
        rows = rows.assign(
            hours=rows["seconds_since_intervention"] / 3600.0,
            per_hour=rows["bad_impressions"] / (bin_seconds / 3600.0),
        )
        _band_traces(
            figure, data, variant, _mean_band(rows, "hours", "per_hour"), row=main_row, col=1
        )
    for index, (layer, rows) in enumerate(marked):
        figure.add_trace(
            go.Scatter(
                x=(rows["live_at"] - at) / 3600.0,
                y=[plot_text(layer)] * len(rows),
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 10, "color": "#444"},
                name=f"version releases ({plot_text(baseline)}, replication 0)",
                text=[f"v{v} {c}" for v, c in zip(rows["version"], rows["cohort"], strict=True)],
                showlegend=index == 0,
                legendgroup="releases",
            ),
            row=1,
            col=1,
        )
    _band_switch(figure)
    figure.update_xaxes(
        title_text=f"hours since the intervention ({duration(bin_seconds)} bins)",
        row=main_row,
        col=1,
    )
    figure.update_yaxes(
        title_text="bad impressions per hour", rangemode="tozero", row=main_row, col=1
    )
    if marked:  # the strip shares the plot's x axis, labelled below it
        figure.update_yaxes(title_text="releases", row=1, col=1)
    return _finish(
        figure, data, f"Bad impressions per hour after “{plot_text(intervention)}”", height=460
    )


# --- responsiveness ----------------------------------------------------------------------------

#: Panels per row of the twin exposure chart.
TWIN_COLUMNS = 3


def twin_curves(data: ReportData) -> pd.DataFrame:
    """Per variant, probe, replication and twin (``taken``), the probe users' cumulative
    impressions of their target (the item, its topic or its creator, as the control is about)
    per user, at the end of each bin since the control (``hours``), starting from 0 at 0."""
    frame = data.probe_exposure
    if not len(frame):
        return pd.DataFrame()
    frame = frame[(frame["exposure_to"] == frame["about"]) & (frame["users"] > 0)]
    curves = []
    for (variant, probe, replication, taken), rows in frame.groupby(
        ["variant", "probe", "replication", "taken"], sort=False
    ):
        rows = rows.sort_values("since_seconds")
        ends = (rows["since_seconds"] + rows["bin_seconds"]).to_numpy() / 3600.0
        per_user = rows["exposures"].cumsum().to_numpy() / rows["users"].to_numpy()
        curves.append(
            pd.DataFrame(
                {
                    "variant": variant,
                    "probe": probe,
                    "control": rows["control"].iloc[0],
                    "about": rows["about"].iloc[0],
                    "replication": replication,
                    "taken": taken,
                    "hours": np.r_[0.0, ends],
                    "per_user": np.r_[0.0, per_user],
                }
            )
        )
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def twin_exposure_figure(data: ReportData) -> go.Figure | None:
    """One panel per probe: the probe users' cumulative exposure to their target since the
    control, per user, with the control and in the twin run without it (means over
    replications, the range shaded). ``None`` without probes."""
    curves = twin_curves(data)
    if not len(curves):
        return None
    probes = list(dict.fromkeys(curves["probe"]))
    titles = []
    for probe in probes:
        first = curves[curves["probe"] == probe].iloc[0]
        control, about = str(first["control"]), str(first["about"])
        label = control if probe.startswith(control + "@") else probe
        titles.append(plot_text(f"{label}: exposure to the {about}"))
    grid_rows = math.ceil(len(probes) / TWIN_COLUMNS)
    columns = min(len(probes), TWIN_COLUMNS)
    figure = make_subplots(
        rows=grid_rows,
        cols=columns,
        subplot_titles=titles,
        vertical_spacing=0.3 / grid_rows if grid_rows > 1 else 0.2,
        horizontal_spacing=0.07,
    )
    several = len(data.variants) > 1
    for index, probe in enumerate(probes):
        row, col = index // columns + 1, index % columns + 1
        for variant in data.variants:
            style = data.styles[variant]
            for taken in (True, False):
                rows = curves[
                    (curves["probe"] == probe)
                    & (curves["variant"] == variant)
                    & (curves["taken"] == taken)
                ]
                if not len(rows):
                    continue
                band = _mean_band(rows, "hours", "per_user")
                twin = "with the control" if taken else "without it (twin run)"
                name = f"{plot_text(variant)}: {twin}" if several else twin
                color = style.color if taken else lighter(style.color)
                _twin_traces(figure, data, variant, band, name, color, taken, index == 0, row, col)
        figure.update_xaxes(
            title_text="hours since the control" if row == grid_rows else "",
            rangemode="tozero",
            row=row,
            col=col,
        )
        figure.update_yaxes(
            title_text="impressions per probe user" if col == 1 else "",
            rangemode="tozero",
            row=row,
            col=col,
        )
    return _finish(
        figure,
        data,
        "What each control prevented: the probe users' cumulative exposure to their target",
        height=300 * grid_rows + 80,
    )


def _twin_traces(
    figure: go.Figure,
    data: ReportData,
    variant: str,
    band: pd.DataFrame,
    name: str,
    color: str,
    taken: bool,
    legend: bool,
    row: int,
    col: int,
) -> None:
    """One twin's mean line and, over several replications, its range band."""
    x = band.index.to_numpy()
    meta = {"variant": variant, "taken": taken}
    if data.replications > 1:
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        figure.add_trace(
            go.Scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([band["high"].to_numpy(), band["low"].to_numpy()[::-1]]),
                mode="lines",
                fill="toself",
                fillcolor="rgba({}, {}, {}, 0.15)".format(*rgb),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
                name=name + " (range)",
                meta=meta | {"band": True},
            ),
            row=row,
            col=col,
        )
    figure.add_trace(
        go.Scatter(
            x=x,
            y=band["mean"],
            mode="lines",
            name=name,
            legendgroup=name,
            showlegend=legend,
            meta=meta,
            line={
                "color": color,
                "dash": data.styles[variant].dash if taken else "dot",
                "width": 2.5,
            },
            hovertemplate="%{x:.0f} h: %{y:.2f} per user<extra>" + name + "</extra>",
        ),
        row=row,
        col=col,
    )


# --- cost --------------------------------------------------------------------------------------


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


def cost_harm_figure(data: ReportData, harm: str, harm_title: str) -> go.Figure | None:
    """Compute cost per day against harm, per variant (mean and range), each point labelled,
    the Pareto front drawn. ``None`` for fewer than two variants or when nothing costs."""
    runs = data.runs[data.runs["status"] == "ok"]
    if "cost_per_day" not in runs.columns or harm not in runs.columns:
        return None
    points = runs.groupby("variant")[["cost_per_day", harm]].agg(["mean", "min", "max"])
    points = points.reindex([v for v in data.variants if v in points.index]).dropna(
        subset=[("cost_per_day", "mean"), (harm, "mean")]
    )
    cost = points[("cost_per_day", "mean")].to_numpy(float)
    value = points[(harm, "mean")].to_numpy(float)
    if len(points) < 2 or not (cost > 0).any():
        return None
    x, xaxis = _cost_axis(cost)
    figure = go.Figure()
    for index, (variant, row) in enumerate(points.iterrows()):
        style = data.styles[str(variant)]
        figure.add_trace(
            go.Scatter(
                x=[x[index]],
                y=[value[index]],
                mode="markers",
                name=plot_text(variant),
                legendgroup=str(variant),
                meta={"variant": str(variant)},
                marker={
                    "color": style.color,
                    "size": 12,
                    "symbol": style.symbol,
                    "line": {"width": 1, "color": "#fff"},
                },
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [row[(harm, "max")] - value[index]],
                    "arrayminus": [value[index] - row[(harm, "min")]],
                    "color": style.color,
                },
                hovertext=[f"{plot_text(variant)}<br>{cost[index]:,.0f} cost units/day"],
            )
        )
    front = pareto_front(cost, value)
    figure.add_trace(
        go.Scatter(
            x=x[front],
            y=value[front],
            mode="lines",
            name="Pareto front",
            line={"color": "#444", "dash": "dot"},
        )
    )
    low = float(points[(harm, "min")].min())  # the bars' ends, not only the means
    high = float(points[(harm, "max")].max())
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 1.0)
    yrange = [low - pad, high + pad]
    figure.update_layout(
        xaxis=xaxis,
        yaxis={"title": {"text": plot_text(harm_title)}, "range": yrange},
        annotations=_direct_labels(data, points.index.tolist(), x, value, xaxis, yrange),
    )
    return _finish(figure, data, f"Compute cost against harm ({plot_text(harm_title)})", 520)


def _cost_axis(cost: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Costs span decades: a log axis, with zero drawn at its left end and labelled 0."""
    positive, zero = cost[cost > 0], bool((cost <= 0).any())
    if not zero and positive.max() / positive.min() < 20:
        return cost, {"title": {"text": "compute cost units per simulated day"}}
    floor = 10.0 ** (math.floor(math.log10(positive.min())) - 1)
    x = np.where(cost > 0, cost, floor)
    top = math.ceil(math.log10(positive.max() * 1.5))
    decades = [10.0**k for k in range(round(math.log10(floor)) + 1, top + 1)]
    return x, {
        "title": {"text": "compute cost units per simulated day (log scale)"},
        "type": "log",
        "tickvals": [floor] * zero + decades,
        "ticktext": ["0"] * zero + [f"{v:,.0f}" if v >= 1 else f"{v:g}" for v in decades],
        "range": [math.log10(x.min()) - 0.15, math.log10(x.max()) + 0.6],
    }


def _direct_labels(
    data: ReportData,
    variants: list[str],
    x: np.ndarray,
    y: np.ndarray,
    xaxis: dict[str, Any],
    yrange: list[float],
) -> list[dict[str, Any]]:
    """A label beside each point; points drawn at the same place share one label, and labels
    that would overlap are moved apart vertically (positions estimated in pixels)."""
    plot_width, plot_height, line = WIDTH - 110, 380, 15
    if xaxis.get("type") == "log":
        low, high = xaxis["range"]
        px = (np.log10(x) - low) / (high - low) * plot_width
    else:
        span = float(x.max() - x.min()) or 1.0
        px = (x - x.min()) / span * plot_width * 0.9
    py = (y - yrange[0]) / (yrange[1] - yrange[0]) * plot_height
    groups: dict[tuple[int, int], list[int]] = {}
    for index in range(len(variants)):
        groups.setdefault((round(px[index] / 4), round(py[index] / 4)), []).append(index)
    placed: list[tuple[float, float, float]] = []  # (left, right, y) in pixels
    labels = []
    for members in sorted(groups.values(), key=lambda m: py[m[0]]):
        first = members[0]
        text = merged_label([str(variants[i]) for i in members], data.axes)
        left, right = px[first] + 10, px[first] + 10 + 6.5 * len(text)

        def free(at: float, left: float = left, right: float = right) -> bool:
            return not any(a < right and left < b and abs(at - y) < line for a, b, y in placed)

        steps = (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, 6, 7)
        at = next((py[first] + s * line for s in steps if free(py[first] + s * line)), py[first])
        placed.append((left, right, at))
        labels.append(
            {
                "x": math.log10(x[first]) if xaxis.get("type") == "log" else x[first],
                "y": y[first],
                "text": plot_text(text),
                "showarrow": False,
                "xanchor": "left",
                "xshift": 10,
                "yshift": at - py[first],
                "font": {"size": 11, "color": "#333"},
                "bgcolor": "rgba(255, 255, 255, 0.85)",
            }
        )
    return labels


# --- over time ---------------------------------------------------------------------------------

#: Metric, panel title, tick format (``%``: a share shown as a percentage).
TIME_PANELS = (
    ("ctr", "CTR", ".2~%"),
    ("sessions", "sessions started per bin", ",~g"),
    ("churned_users", "users churned per bin", ",~g"),
    ("topic_gini", "topic concentration (Gini)", ".2f"),
    ("regret_per_request", "regret: expected clicks lost per request", ".3f"),
    ("fresh_impression_share", "share of impressions on fresh items", ".2~%"),
)


def timeseries_figure(data: ReportData) -> go.Figure | None:
    """CTR, sessions, churn, topic concentration and, when measured, regret and the share of
    fresh items, per bin of simulated time; the warm-up is shaded and interventions marked."""
    frame = data.timeseries.assign(hours=data.timeseries["start_seconds"] / 3600.0)
    if not len(frame):
        return None
    panels = [
        panel
        for panel in TIME_PANELS
        if panel[0] in frame.columns and frame[panel[0]].fillna(0).ne(0).any()
    ]
    if not panels:
        return None
    starts = np.unique(frame["start_seconds"])
    bin_seconds = float(np.diff(starts)[0]) if starts.shape[0] > 1 else 3600.0
    measured = frame.loc[frame["measured"], "start_seconds"] if "measured" in frame else []
    warm_end = float(min(measured)) / 3600.0 if len(measured) else 0.0
    grid_rows = (len(panels) + 1) // 2
    figure = make_subplots(
        rows=grid_rows,
        cols=2,
        subplot_titles=[title for _, title, _ in panels],
        vertical_spacing=0.12 if grid_rows > 1 else 0.2,
    )
    end = float(frame["hours"].max()) + bin_seconds / 3600.0
    for index, (column, _, tickformat) in enumerate(panels):
        row, col = index // 2 + 1, index % 2 + 1
        for variant in data.variants:
            series = frame[frame["variant"] == variant].dropna(subset=[column])
            if not len(series):
                continue
            mean = series.groupby("hours")[column].mean()
            # a bin's value belongs to the whole bin: steps, drawn to the bin's end
            x = np.append(mean.index.to_numpy(), end)
            y = np.append(mean.to_numpy(), mean.to_numpy()[-1])
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    line_shape="hv",
                    **_trace_style(data, variant, index == 0),
                ),
                row=row,
                col=col,
            )
        figure.update_xaxes(
            title_text=f"simulated hours ({duration(bin_seconds)} bins)",
            range=[0, end],
            row=row,
            col=col,
        )
        figure.update_yaxes(tickformat=tickformat, title_text=_unit(column), row=row, col=col)
    if warm_end > 0:
        figure.add_vrect(
            x0=0,
            x1=warm_end,
            fillcolor="#999",
            opacity=0.15,
            line_width=0,
            row="all",
            col="all",
        )
    for at in data.summary.get("interventions", {}).values():
        figure.add_vline(
            x=float(at) / 3600.0,
            line={"color": "#d62728", "dash": "dot", "width": 1},
            row="all",
            col="all",
        )
    marks = ["shaded: warm-up, not counted in the tables"] if warm_end > 0 else []
    marks += [
        f"red dotted: {plot_text(name)} at {float(at) / 3600.0:g} h"
        for name, at in data.summary.get("interventions", {}).items()
    ]
    _finish(figure, data, "Metrics over time", height=330 * grid_rows + 60)
    figure.update_layout(title={"subtitle": {"text": "; ".join(marks)}}, margin={"t": 100})
    return figure


def _unit(column: str) -> str:
    return {
        "ctr": "clicks / impressions",
        "sessions": "sessions",
        "churned_users": "users",
        "topic_gini": "Gini",
        "regret_per_request": "clicks / request",
        "fresh_impression_share": "share of impressions",
    }[column]
