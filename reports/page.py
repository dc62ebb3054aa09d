"""The HTML report: one self-contained file that answers a results directory's question.

Built from the directory's files alone (``recloop report DIR`` rebuilds it for any run, from any
machine). The first screen holds the question (the scenario's name and description), the answer
(the effect of each lever with its interval and cost, from ``summary["effects"]`` when the sweep
wrote it) and a one-line-per-variant table; the charts and every metric follow. Every string a
user wrote is escaped once for where it lands (HTML, or a Plotly string), so a scenario named
``<script>`` shows as text and a label with a ``"`` shows a ``"``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from reports.data import ReportData, duration, load_report_data, time_text
from reports.encoding import BOUNDS, DASHES, encoding_key, level_columns, levels_of
from reports.figures import (
    absorption_figure,
    cost_harm_figure,
    exposure_figure,
    suppression_figure,
    timeseries_figure,
    twin_exposure_figure,
)

__all__ = [
    "ReportData",
    "load_report_data",
    "build_report",
    "headline",
    "reliability",
    "responsiveness_section",
]

#: Full table: metric, title, format, direction (-1: lower is better, 1: higher is better).
TABLE_METRICS = (
    ("bad_impressions", "bad impressions", "{:,.0f}", -1),
    ("repeat_offences_per_negative", "repeat offences / negative", "{:.2f}", -1),
    ("ctr", "CTR", "{:.2%}", 1),
    ("regret_per_request", "regret (clicks / request)", "{:.4f}", -1),
    ("sessions_lost", "sessions lost", "{:,.0f}", -1),
    ("churned_users", "churned users", "{:,.0f}", -1),
    ("top1pct_item_share", "impressions on top 1% of items", "{:.1%}", -1),
    ("item_coverage", "catalogue shown per day", "{:.1%}", 1),
    ("topic_gini", "topic Gini", "{:.3f}", -1),
    ("cost_per_day", "cost units / day", "{:,.0f}", -1),
    ("propagation_efficiency", "propagation efficiency", "{:.2f}", 1),
)
#: The first screen's table: the harm, its change, and what a team weighs against it.
COMPACT_METRICS = ("repeat_offences_per_negative", "ctr", "churned_users", "cost_per_day")
SVG_DASH = {
    "solid": "",
    "dash": "6,3",
    "dot": "2,3",
    "dashdot": "6,3,2,3",
    "longdash": "10,4",
    "longdashdot": "10,4,2,4",
}
assert set(SVG_DASH) == set(DASHES)
NEVER_FIRES = (
    " <small class='never' title='this cadence never fires within the measured period: the "
    "level changes nothing'>(never fires)</small>"
)


def esc(text: Any) -> str:
    """User text as safe HTML."""
    return html.escape(str(text), quote=True)


def _harm_metric(data: ReportData) -> tuple[str, str]:
    if "bad_impressions" in data.runs.columns and data.runs["bad_impressions"].notna().any():
        return "bad_impressions", "bad impressions after the interventions"
    return "repeat_offences_per_negative", "repeat offences per explicit negative"


#: How a sentence names a headline metric whose table title is terse.
HEADLINE_TITLES = {"regret_per_request": "regret per request"}
#: Metrics counted in units, for which "fewest" reads right (else "lowest").
COUNTED = {"bad_impressions", "repeat_offences_per_negative", "sessions_lost", "churned_users"}


def _headline_metric(data: ReportData) -> tuple[str, str, int]:
    """What the first sentence and the first column compare variants on, its title and its
    direction: the scenario's ``metrics.headline`` when the runs measured it, else the harm."""
    chosen = data.summary.get("headline_metric")
    if chosen and chosen in data.runs.columns and data.runs[chosen].notna().any():
        title, direction = next((t, d) for m, t, _, d in TABLE_METRICS if m == chosen)
        return chosen, HEADLINE_TITLES.get(chosen, title), direction
    return (*_harm_metric(data), -1)


def _superlative(metric: str, direction: int) -> str:
    if direction > 0:
        return "the highest"
    return "the fewest" if metric in COUNTED else "the lowest"


# --- the answer --------------------------------------------------------------------------------


def headline(data: ReportData) -> list[str]:
    """The answer in plain sentences, most important first: the effect of each lever as the
    sweep wrote it (``summary["effects"]["headline"]``), else the report's own reading."""
    effects = data.summary.get("effects") or {}
    if effects.get("headline"):
        return [str(sentence) for sentence in effects["headline"]]
    if data.probes and len(data.declared) < 2:  # probes on one stack: their answer is the controls
        sentences = _responsiveness_headline(data)
        if sentences:
            return sentences
    if data.single:
        return _single_headline(data)
    return _sweep_headline(data)


def reliability(data: ReportData) -> str | None:
    """The warning a sweep with fewer than 3 replications carries (``None``: no warning)."""
    unreliable = data.summary.get("unreliable")
    if data.single or unreliable is False or (unreliable is None and data.replications >= 3):
        return None
    reason = str(
        data.summary.get("unreliable_reason")
        or f"Only {data.replications} replication{'s' if data.replications > 1 else ''} ran: "
        "an interval from fewer than 3 is "
        "unreliable, so treat every difference here as provisional."
    )
    return reason[:1].upper() + reason[1:]


def _single_headline(data: ReportData) -> list[str]:
    metrics = data.summary["comparisons"].get(data.summary["baseline"], {})
    harm, harm_title = _harm_metric(data)
    sentences = []
    if harm in metrics:
        value = metrics[harm]["mean"]
        shown = f"{value:,.0f}" if harm == "bad_impressions" else f"{value:,.2f}"
        sentences.append(f"This run counted {shown} {harm_title}.")
    reached, missed = [], []
    for layer in _layers(data):
        median = metrics.get(f"absorption.{layer}.median_seconds")
        share = metrics.get(f"absorption.{layer}.absorbed_share", {}).get("mean")
        if median is not None:
            reached.append(f"{duration(median['mean'])} through {layer}")
        elif share is not None:
            missed.append(f"{layer} absorbed {f'{share:.0%} of them' if share else 'none'}")
    if reached:
        text = "A negative reached what the user is shown in " + _join(reached) + " (medians)"
        sentences.append(text + (f"; {_join(missed)} before the run ended." if missed else "."))
    elif missed:
        sentences.append(f"Before the run ended, {_join(missed)}.")
    resolution = data.summary.get("metric_resolution") or {}
    halved = []
    for name in _interventions(data):
        key = f"{name}.time_to_50pct_seconds"
        if key in metrics:
            halved.append(f"{time_text(metrics[key]['mean'], resolution.get(key))} after {name}")
    if halved:
        sentences.append(f"Bad impressions fell to half their level within {_join(halved)}.")
    return sentences or ["This run measured no negative feedback: there is nothing to answer."]


def _sweep_headline(data: ReportData) -> list[str]:
    summary = data.summary
    comparisons, baseline = summary["comparisons"], summary["baseline"]
    harm, harm_title, direction = _headline_metric(data)
    best_of = _superlative(harm, direction)
    n = data.replications
    candidates = [v for v in data.declared if harm in comparisons.get(v, {})]
    if len(candidates) < 2:
        entry = comparisons.get(baseline, {}).get(harm)
        if entry is None:
            return ["These runs measured no negative feedback: there is nothing to compare."]
        return [
            f"{baseline}: {entry['mean']:,.2f} {harm_title}{_interval(entry)} over {n} "
            "replications. Add variants to compare cadences."
        ]
    pick = min if direction < 0 else max
    best = pick(candidates, key=lambda v: comparisons[v][harm]["mean"])
    if best == baseline:
        runner_up = pick(
            (v for v in candidates if v != baseline), key=lambda v: comparisons[v][harm]["mean"]
        )
        relative = comparisons[runner_up][harm].get("relative")
        return [
            f"The baseline, {baseline}, has {best_of} {harm_title}; the next best, {runner_up}, "
            f"has {_percent(relative)} {'more' if direction < 0 else 'against it'}.",
            _verdict(relative, n),
        ]
    relative = comparisons[best][harm].get("relative")
    return [
        f"{best} has {best_of} {harm_title}: {_percent(relative)} against the baseline "
        f"({baseline}){_cost_phrase(comparisons, best, baseline)}.",
        _verdict(relative, n),
    ]


#: Column titles of the prevented share's horizons (``summary["responsiveness"]`` keys).
HORIZON_TITLES = {
    "1h": "within 1 h",
    "1d": "within 1 day",
    "1w": "within 1 week",
    "end": "to the run's end",
}


def _responsiveness_headline(data: ReportData) -> list[str]:
    """The most and the least effective control, by the share of exposure to their target
    prevented within a day (by the run's end when it ends sooner)."""
    variant = data.summary["baseline"]
    probes = data.probes.get(variant) or next(iter(data.probes.values()))
    horizon = "1d"
    measured = {name: e["prevented_share"].get(horizon, {}) for name, e in probes.items()}
    if not any("value" in share for share in measured.values()):
        horizon = "end"
        measured = {name: e["prevented_share"].get(horizon, {}) for name, e in probes.items()}
    shares = {name: share for name, share in measured.items() if "value" in share}
    if not shares:
        return []
    within = "within a day"
    if horizon == "end":
        frame = data.responsiveness
        ends = frame.loc[
            (frame["variant"] == variant) & (frame["measure"] == "prevented_share"),
            "since_seconds",
        ]
        after = f", {duration(float(ends.max()))} after the control" if len(ends) else ""
        within = f"by the run's end{after}"
    n = data.replications
    twins = f"against twin runs without the control, {n} replication{'s' if n > 1 else ''}"
    ranked = sorted(shares, key=lambda name: -shares[name]["value"])
    best, worst = ranked[0], ranked[-1]

    def share_of(name: str) -> str:
        return (
            f"{_share_text(shares[name])} of their impressions of the {probes[name]['exposure_to']}"
        )

    if len(ranked) == 1:
        return [
            f"{_probe_label(best, probes[best])} prevented {share_of(best)} {within} ({twins})."
        ]
    if shares[best]["value"] == shares[worst]["value"]:
        return [
            f"All {len(ranked)} controls measured prevented {_share_text(shares[best])} of the "
            f"probe users' exposure to what they rejected {within} ({twins})."
        ]
    first = (
        f"Of {len(probes)} controls, {_probe_label(best, probes[best])} prevented the most of the "
        f"probe users' exposure to what they rejected {within}: {share_of(best)}; "
        f"{_probe_label(worst, probes[worst])} the least: {share_of(worst)} ({twins})."
    )
    sentences = [first]
    low, high = shares[best].get("ci_low"), shares[worst].get("ci_high")
    if low is not None and high is not None and low <= high:
        sentences.append(
            "Their 95% intervals overlap: these runs do not tell the two apart; more replications "
            "may."
        )
    unmeasured = [_probe_label(name, probes[name]) for name in probes if name not in shares]
    if unmeasured:
        sentences.append(f"Not measured {within}: {_join(unmeasured)} (see Responsiveness).")
    return sentences


def _probe_label(name: str, entry: dict[str, Any]) -> str:
    """A probe by its control when its name is the default (control@time)."""
    return str(entry["control"]) if name.startswith(f"{entry['control']}@") else name


def _share_text(share: dict[str, Any]) -> str:
    text = _percent_value(share["value"])
    if share.get("ci_low") is not None:
        text += f" [{_percent_value(share['ci_low'])}, {_percent_value(share['ci_high'])}]"
    return text


def _percent_value(value: float) -> str:
    """A share as a percentage with at most one decimal.

    >>> _percent_value(0.995342), _percent_value(1.0), _percent_value(-1.163734)
    ('99.5%', '100%', '-116.4%')
    """
    text = f"{100 * value:.1f}".removesuffix(".0")
    return ("0" if text == "-0" else text) + "%"


def _cost_phrase(comparisons: dict[str, Any], variant: str, baseline: str) -> str:
    cost = comparisons[variant].get("cost_per_day", {}).get("mean")
    base = comparisons[baseline].get("cost_per_day", {}).get("mean")
    if cost is None or base is None or cost == base == 0:  # nothing costs: nothing to say
        return ""
    if base > 0:
        return f", at {cost / base:,.1f}× its compute cost per day"
    return f", at {cost:,.0f} compute cost units per day (the baseline: {base:,.0f})"


def _percent(relative: dict[str, Any] | None) -> str:
    if relative is None:
        return "an unknown change"
    text = f"{100 * relative['mean']:+.0f}%"
    if relative.get("ci95"):
        low, high = (100 * bound for bound in relative["ci95"])
        text += f" [{low:+.0f}%, {high:+.0f}%]"
    return text


def _verdict(relative: dict[str, Any] | None, n: int) -> str:
    if relative is None or not relative.get("ci95"):
        return f"With {n} replication(s) there is no interval: no claim of a difference."
    low, high = relative["ci95"]
    if high < 0:
        return f"The 95% interval over {n} replications lies below 0%: a real reduction."
    if low > 0:
        return f"The 95% interval over {n} replications lies above 0%: a real increase."
    return (
        f"The 95% interval over {n} replications includes 0%: not distinguishable from the "
        "baseline."
    )


def _interval(entry: dict[str, Any]) -> str:
    return f" [{entry['ci95'][0]:,.2f}, {entry['ci95'][1]:,.2f}]" if entry.get("ci95") else ""


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _layers(data: ReportData) -> list[str]:
    frame = data.propagation
    return list(dict.fromkeys(frame["layer"].astype(str))) if len(frame) else []


def _interventions(data: ReportData) -> list[str]:
    frame = data.suppression
    return list(dict.fromkeys(frame["intervention"])) if len(frame) else []


# --- tables ------------------------------------------------------------------------------------


def _formatter(data: ReportData, metric: str, fmt: str) -> Any:
    resolution = (data.summary.get("metric_resolution") or {}).get(metric)

    def show(value: float) -> str:
        return time_text(value, resolution) if fmt == "hours" else fmt.format(value)

    return show


def _swatch(data: ReportData, variant: str) -> str:
    style = data.styles[variant]
    return (
        "<svg class='swatch' width='30' height='12' aria-hidden='true'><line x1='1' y1='6' "
        f"x2='29' y2='6' stroke='{style.color}' stroke-width='3' "
        f"stroke-dasharray='{SVG_DASH[style.dash]}'/></svg>"
    )


def _row_head(data: ReportData, variant: str) -> str:
    """The variant's cells: one per grid axis (its level), or its label; with its line style."""
    baseline = data.summary["baseline"]
    note = " <small>(baseline)</small>" if variant == baseline and not data.single else ""
    note += " <small>(bound)</small>" if variant in BOUNDS else ""
    if variant in data.summary.get("oracle_variants", []):
        note += " <small title='oracle: ranks by ground truth, an upper bound'>(oracle)</small>"
    swatch = _swatch(data, variant)
    if data.axes and variant not in BOUNDS:
        factors = (data.summary.get("effects") or {}).get("factors") or []
        silent = [set(factor.get("never_fires") or []) for factor in factors]
        cells = [
            esc(cell[level])
            + (NEVER_FIRES if index < len(silent) and level in silent[index] else "")
            for index, ((_, cell), level) in enumerate(
                zip(level_columns(data.axes), levels_of(variant), strict=True)
            )
        ]
        cells[0], cells[-1] = swatch + cells[0], cells[-1] + note
        return "".join(f"<th scope='row'>{cell}</th>" for cell in cells)
    span = f" colspan='{len(data.axes)}'" if len(data.axes) > 1 else ""
    return f"<th scope='row'{span}>{swatch}{esc(variant)}{note}</th>"


def _level_heads(data: ReportData) -> str:
    heads = [heading for heading, _ in level_columns(data.axes)] or ["variant"]
    return "".join(f"<th class='level'>{esc(heading)}</th>" for heading in heads)


def _best(data: ReportData, metric: str, direction: int) -> str | None:
    comparisons = data.summary["comparisons"]
    values = {
        v: comparisons[v][metric]["mean"] for v in data.declared if metric in comparisons.get(v, {})
    }
    if len(set(values.values())) < 2 or metric == "propagation_efficiency":
        return None
    pick = min if direction < 0 else max
    return pick(values, key=lambda v: values[v])


def compact_table(data: ReportData) -> str:
    """The first screen's table: one line per variant; intervals and paired deltas in each
    cell's tooltip and behind the "intervals" switch."""
    comparisons = data.summary["comparisons"]
    harm, _, direction = _headline_metric(data)
    titles = {metric: title for metric, title, _, _ in TABLE_METRICS}
    formats = {metric: (fmt, direction) for metric, _, fmt, direction in TABLE_METRICS}
    columns: list[tuple[str, str, str, int]] = [(harm, titles[harm], formats[harm][0], direction)]
    if not data.single:
        columns.append((harm, "vs baseline", "relative", direction))
    for metric in COMPACT_METRICS:
        if metric != harm and any(metric in c for c in comparisons.values()):
            columns.append((metric, titles[metric], *formats[metric]))
    for name in _interventions(data):
        key = f"{name}.time_to_50pct_seconds"
        if any(key in c for c in comparisons.values()):
            columns.append((key, f"{name}: time to 50%", "hours", -1))
    if "cost_per_day" not in data.runs or not data.runs["cost_per_day"].fillna(0).gt(0).any():
        columns = [c for c in columns if c[0] != "cost_per_day"]  # nothing costs: no column
    head = _level_heads(data) + "".join(f"<th>{esc(title)}</th>" for _, title, _, _ in columns)
    rows = []
    for variant in data.variants:
        cells = [_row_head(data, variant)]
        for metric, _, fmt, direction in columns:
            entry = comparisons.get(variant, {}).get(metric)
            if fmt == "relative":
                cells.append(_relative_cell(entry))
            elif entry is None:
                cells.append("<td class='na'>n/a</td>")
            else:
                best = _best(data, metric, direction) == variant
                cells.append(_compact_cell(data, entry, metric, fmt, best))
        kind = " class='bound'" if variant in BOUNDS else ""
        kind = (
            " class='baseline'" if variant == data.summary["baseline"] and not data.single else kind
        )
        rows.append(f"<tr{kind}>{''.join(cells)}</tr>")
    return (
        f"<table class='compact' id='variants'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _compact_cell(
    data: ReportData, entry: dict[str, Any], metric: str, fmt: str, best: bool
) -> str:
    show, plain = _formatter(data, metric, fmt), _formatter(data, "", fmt)
    text = show(entry["mean"])
    tip = [f"mean {text}"]
    extra = ""
    if entry["n"] < data.replications:
        extra += f" <small class='partial'>(in {entry['n']} of {data.replications})</small>"
        tip.append(f"reached in {entry['n']} of {data.replications} replications")
    if entry.get("ci95"):
        interval = f"[{show(entry['ci95'][0])}, {show(entry['ci95'][1])}]"
        tip.append(f"95% interval {interval}")
        extra += f" <small class='ci'>{interval}</small>"
    delta = entry.get("delta")
    if delta is not None:
        change = f"Δ {plain(delta['mean'])}"
        if delta.get("ci95"):
            change += f" [{plain(delta['ci95'][0])}, {plain(delta['ci95'][1])}]"
        tip.append(f"paired difference from the baseline {change}")
        extra += f" <small class='ci'>{esc(change)}</small>"
    mark = " <span class='best' title='best among the variants'>★</span>" if best else ""
    title = esc("; ".join(tip)) if len(tip) > 1 else ""
    return f"<td title='{title}'{' class=best-cell' if best else ''}>{esc(text)}{extra}{mark}</td>"


def _relative_cell(entry: dict[str, Any] | None) -> str:
    relative = (entry or {}).get("relative")
    if relative is None:
        return "<td class='na'>—</td>"
    interval = ""
    if relative.get("ci95"):
        low, high = (100 * bound for bound in relative["ci95"])
        interval = f"[{low:+.0f}%, {high:+.0f}%]"
    mean = f"{100 * relative['mean']:+.0f}%"
    title = (
        esc(f"paired change from the baseline {mean}, 95% interval {interval}") if interval else ""
    )
    small = f" <small class='ci'>{interval}</small>" if interval else ""
    return f"<td title='{title}'>{mean}{small}</td>"


def full_table(data: ReportData) -> str:
    """Every metric of every variant with its interval and paired delta."""
    comparisons = data.summary["comparisons"]
    metrics = [m for m in TABLE_METRICS if any(m[0] in c for c in comparisons.values())]
    for name in _interventions(data):
        for percent in (50, 10):
            key = f"{name}.time_to_{percent}pct_seconds"
            if any(key in c for c in comparisons.values()):
                metrics.append((key, f"{name}: time to {percent}%", "hours", -1))
    head = _level_heads(data) + "".join(f"<th>{esc(title)}</th>" for _, title, _, _ in metrics)
    rows = []
    for variant in data.variants:
        cells = [_row_head(data, variant)]
        for metric, _, fmt, direction in metrics:
            entry = comparisons.get(variant, {}).get(metric)
            if entry is None:
                cells.append("<td class='na'>n/a</td>")
                continue
            show = _formatter(data, metric, fmt)
            text = esc(show(entry["mean"]))
            if entry["n"] < data.replications:
                text += f" <small class='partial'>(in {entry['n']} of {data.replications})</small>"
            if entry.get("ci95"):
                low, high = (esc(show(bound)) for bound in entry["ci95"])
                text += f"<br><small>[{low}, {high}]</small>"
            delta = entry.get("delta")
            if delta is not None and delta.get("ci95"):
                plain = _formatter(data, "", fmt)
                low, high = (plain(bound) for bound in delta["ci95"])
                change = f"Δ {plain(delta['mean'])} [{low}, {high}]"
                text += f"<br><small class='delta'>{esc(change)}</small>"
            best = _best(data, metric, direction) == variant
            mark = " <span class='best'>★</span>" if best else ""
            cells.append(f"<td{' class=best-cell' if best else ''}>{text}{mark}</td>")
        kind = " class='bound'" if variant in BOUNDS else ""
        rows.append(f"<tr{kind}>{''.join(cells)}</tr>")
    return (
        f"<table class='full'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --- responsiveness ----------------------------------------------------------------------------


SHARE_NOTE = (
    "<p class='how'>The share of the probe users' impressions of their target (the item they "
    "were shown most in the hour before the control, its topic or its creator, as the control "
    "is about) that the control prevented, against their twin run without it: 1 − with / "
    "without, over the time since the control; mean and 95% interval over replications. A "
    "negative share: the control's users saw more of it.</p>"
)
DELETION_NOTE = (
    "<p class='how'>The deletion delay runs from the deletion to the moment the layer's served "
    "state no longer depends on the deleted events: for a batch layer, its first version "
    "trained without them going live for everyone; for a store, when the entries are dropped. "
    "Mean and 95% interval over replications.</p>"
)


def responsiveness_section(data: ReportData, chart: str = "") -> str:
    """The Responsiveness section: per variant the prevented-share table (cells from
    ``responsiveness.parquet``), the deletion delay per layer of each remove_from_history
    probe, then ``chart`` (the twin exposure chart's HTML); "" without probes."""
    if not data.probes:
        return ""
    parts = ["<section id='responsiveness'><h2>Responsiveness</h2>"]
    method = data.summary.get("responsiveness_method")
    several = len(data.probes) > 1
    explained: set[str] = set()  # each note once, under the first table it explains
    for variant, probes in data.probes.items():
        if several:
            parts.append(f"<h3>{_swatch(data, variant)}{esc(variant)}</h3>")
        parts.append(_prevented_table(data, variant, probes))
        if "shares" not in explained:
            parts.append(SHARE_NOTE)
            explained.add("shares")
        for name, entry in probes.items():
            table = _deletion_table(name, entry)
            parts.append(table)
            if table and "deletion" not in explained:
                parts.append(DELETION_NOTE)
                explained.add("deletion")
    if method:
        parts.append(f"<p class='how'>How: {esc(method)}.</p>")
    parts.append(f"{chart}</section>")
    return "".join(parts)


def _twin_how(data: ReportData) -> str:
    several = len(data.variants) > 1
    return (
        "One panel per control: the probe users' impressions of their target (the item, its "
        "topic or its creator, as the control is about), per user, cumulated over the hours "
        "since the control, with the control (solid) and in the twin run without it (dotted, "
        "lighter)"
        + (", each variant in its colour" if several else "")
        + ("; means over replications, the range shaded" if data.replications > 1 else "")
        + ". The gap between the two lines is the exposure the control prevented."
    )


def _prevented_table(data: ReportData, variant: str, probes: dict[str, Any]) -> str:
    frame = data.responsiveness
    shares = frame[(frame["variant"] == variant) & (frame["measure"] == "prevented_share")]
    # the summary names the horizons; the parquet has a row per horizon, in the same order
    horizons = list(dict.fromkeys(h for entry in probes.values() for h in entry["prevented_share"]))
    titles = [HORIZON_TITLES.get(horizon, f"within {horizon}") for horizon in horizons]
    if "end" in horizons and len(shares):  # the end row's time: the run's end after the control
        end = duration(float(shares["since_seconds"].max())).replace(" ", "\u00a0")
        titles[horizons.index("end")] += f" ({end})"
    head = (
        "<th class='level'>control</th><th class='level'>share counts exposure to</th>"
        + "".join(f"<th>{esc(title)}</th>" for title in ("probe users", *titles))
    )
    rows = []
    for name, entry in probes.items():
        level = entry["exposure_to"]
        mine = shares[(shares["probe"] == name) & (shares["exposure_to"] == level)]
        cells = [
            f"<th scope='row' title='{esc(name)}'>{esc(_probe_label(name, entry))}</th>",
            f"<td class='level'>the {esc(level)}</td>",
            f"<td>{esc(_probe_users(data, variant, name, entry))}</td>",
        ]
        for index, _ in enumerate(horizons):
            row = mine.iloc[index] if len(mine) == len(horizons) else None
            cells.append(_share_cell(data, row, entry.get("missing")))
        rows.append(f"<tr data-probe='{esc(name)}'>{''.join(cells)}</tr>")
    return (
        f"<table class='compact responsiveness' data-variant='{esc(variant)}'><thead><tr>{head}"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _probe_users(data: ReportData, variant: str, name: str, entry: dict[str, Any]) -> str:
    """How many users took the control: the same in every replication, or the range (fewer
    users than asked were eligible in some)."""
    frame = data.probe_exposure
    if not len(frame):
        return str(entry.get("users"))
    users = frame.loc[(frame["variant"] == variant) & (frame["probe"] == name), "users"]
    low, high = int(users.min()), int(users.max())
    return str(low) if low == high else f"{low} to {high}"


def _share_cell(data: ReportData, row: Any, missing: str | None) -> str:
    """A prevented share, its interval and in how many replications it was measured; or n/a
    and why."""
    if row is None or pd.isna(row["value"]):
        reason = None if row is None or pd.isna(row["missing"]) else row["missing"]
        reason = reason or missing or "not in responsiveness.parquet"
        return f"<td class='na'>n/a <small class='reason'>({esc(reason)})</small></td>"
    text = _percent_value(float(row["value"]))
    if not pd.isna(row["ci_low"]):
        text += (
            f" <small>[{_percent_value(float(row['ci_low']))}, "
            f"{_percent_value(float(row['ci_high']))}]</small>"
        )
    if int(row["n"]) < data.replications:
        text += (
            f" <small class='partial' title='the twin run without the control showed the "
            f"target no impression in the others'>(in {int(row['n'])} of "
            f"{data.replications})</small>"
        )
    tip = (
        f"impressions of the target within {duration(float(row['since_seconds']))} of the "
        f"control, summed over the probe users, mean over replications: "
        f"{float(row['with_control']):,.1f} with the control, "
        f"{float(row['without_control']):,.1f} without"
    )
    return f"<td title='{esc(tip)}'>{text}</td>"


def _deletion_table(name: str, entry: dict[str, Any]) -> str:
    """How long a remove_from_history probe's deletion took to leave each layer's served state
    ("" for another control)."""
    delays = entry.get("deletion_delay_seconds")
    if not delays:
        return ""
    rows = []
    for layer, delay in delays.items():
        if "mean" in delay:
            text = esc(duration(float(delay["mean"])))
            if delay.get("ci_low") is not None:
                text += (
                    f" <small>[{esc(duration(float(delay['ci_low'])))}, "
                    f"{esc(duration(float(delay['ci_high'])))}]</small>"
                )
            cell = f"<td>{text}</td>"
        else:
            cell = (
                f"<td class='na'>never <small class='reason'>({esc(delay['missing'])})</small></td>"
            )
        rows.append(f"<tr data-layer='{esc(layer)}'><th scope='row'>{esc(layer)}</th>{cell}</tr>")
    deleted = entry.get("deleted_events") or []
    count = (
        f"It deleted {_join([f'{n:,}' for n in deleted])} events"
        f"{' (per replication)' if len(deleted) > 1 else ''}."
        if deleted
        else ""
    )
    return (
        f"<h3>Deletion delay: {esc(name)}</h3>"
        f"<table class='compact deletion' data-probe='{esc(name)}'><thead><tr>"
        "<th class='level'>layer</th>"
        "<th>served state free of the deleted events after</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>" + (f"<p class='how'>{count}</p>" if count else "")
    )


# --- the page ----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1rem auto;
max-width:1240px;padding:0 1rem;color:#222}
h1{margin:.2rem 0 .3rem;font-size:1.7rem}h2{margin-top:2rem}
.question{margin:.2rem 0;color:#333;display:-webkit-box;-webkit-line-clamp:2;
-webkit-box-orient:vertical;overflow:hidden}
details.more{font-size:.85rem;color:#555;margin:.2rem 0 .6rem}
.answer{font-size:1.08rem;background:#f3f6fa;border-left:4px solid #1f77b4;padding:.5rem 1rem;
margin:.5rem 0}.answer p{margin:.25rem 0}
.warn{background:#fff4e5;border-left:4px solid #e67e00;padding:.3rem 1rem;margin:.4rem 0;
font-size:.95rem}
.meta{color:#555;font-size:.9rem;margin:0}
table.compact,table.full{border-collapse:collapse;font-size:.85rem;margin:.4rem 0}
.compact th,.compact td{border-bottom:1px solid #e3e3e3;padding:.2rem .55rem;text-align:right;
white-space:nowrap}.compact thead th{white-space:normal;max-width:8.5rem;vertical-align:bottom;
overflow-wrap:anywhere}
.compact th[scope=row],.full th[scope=row]{font-weight:normal;text-align:left}
.compact th.level{text-align:left}
.compact .ci{display:none;color:#555}#show-intervals:checked~.scroll .ci{display:inline}
.full th,.full td{border:1px solid #ddd;padding:.3rem .45rem;text-align:right;vertical-align:top}
.baseline th,.baseline td{font-weight:600}.swatch{vertical-align:middle;margin-right:.35rem}
.best-cell{background:#eef8ee}.best{color:#2ca02c}.na{color:#999}
.bound th,.bound td{color:#666;font-style:italic}
.how{color:#555;font-size:.9rem;margin-top:.4rem}.switch{font-size:.85rem;color:#333}
pre{background:#f7f7f7;padding:1rem;overflow:auto;font-size:.8rem}.chart{margin:1.2rem 0 2rem}
.scroll{overflow-x:auto}
.responsiveness td.level,.compact th.level,.deletion th.level{text-align:left}
.reason{color:#777;white-space:normal}
"""


def _charts(data: ReportData) -> list[tuple[go.Figure, str]]:
    harm, harm_title = _harm_metric(data)
    several = len(data.variants) > 1
    band = (
        " (the range over replications: shaded, or behind the chart's button when there are "
        "many lines)"
        if data.replications > 1
        else ""
    )
    charts: list[tuple[go.Figure | None, str]] = [
        (
            absorption_figure(data),
            "One panel per layer: the share of negative events whose effect had reached what "
            "the user is shown by each delay" + (", per variant" if several else "") + ". A "
            "line that ends below 100% left events unabsorbed when the run ended."
            + _unabsorbed_layers(data),
        ),
        (
            exposure_figure(data),
            "After a user says no, how many more impressions of that topic they got, cumulated "
            f"over the time since{band}. Flatter is faster suppression"
            + (
                "; the frozen and instant bounds frame what propagation can achieve."
                if "frozen" in data.variants
                else "."
            ),
        ),
    ]
    for name in _interventions(data):
        figure = suppression_figure(data, name)
        charts.append(
            (
                figure,
                f"Bad impressions per hour from the intervention on{band}"
                + (
                    "; the strip above marks the baseline's version releases, where a layer "
                    "should bend the curve down."
                    if _releases_marked(figure)
                    else "."
                ),
            )
        )
    if several:
        charts.append(
            (
                cost_harm_figure(data, harm, harm_title),
                "Each point is a variant (bars: range over replications). Points on the dotted "
                "Pareto front are the only ones worth their cost; anything above it pays more "
                "for the same harm or suffers more harm for the same cost.",
            )
        )
    charts.append(
        (
            timeseries_figure(data),
            ("Means over replications per bin. " if data.replications > 1 else "Per bin. ")
            + "The tables count the measured period only, after the shaded warm-up.",
        )
    )
    return [(figure, how) for figure, how in charts if figure is not None]


#: The parts of an absorption delay in ``propagation.parquet`` (``<part>_seconds``), as the
#: report names them, in the order they elapse.
DELAY_PARTS = (
    ("label_delay", "label delay"),
    ("latency", "latency"),
    ("trigger_wait", "trigger wait"),
    ("compute", "compute"),
    ("rollout", "rollout"),
)


def delay_split_table(data: ReportData) -> str:
    """Per variant and layer, the mean of each part of the absorption delay over the negatives
    the layer absorbed, and which part dominates: how much of the wait is the label's way to
    the logs and how much the layer's own pipeline. Empty for results without the split (written
    before it existed) or with nothing absorbed."""
    frame = data.propagation
    columns = [f"{part}_seconds" for part, _ in DELAY_PARTS]
    if not len(frame) or any(column not in frame for column in columns):
        return ""
    frame = frame[frame["absorbed"]]
    if not len(frame):
        return ""
    means = frame.groupby(["variant", frame["layer"].astype(str)], observed=True, sort=False)[
        [*columns, "delay_seconds"]
    ].mean()
    parts: tuple[tuple[str, str], ...] = DELAY_PARTS
    no_label_delay = bool((frame["label_delay_seconds"] == 0).all())
    if no_label_delay:  # no logging section: a column of zeros says nothing
        parts = tuple(part for part in DELAY_PARTS if part[0] != "label_delay")
        columns = [f"{part}_seconds" for part, _ in parts]
    heads = "".join(f"<th>{esc(name)}</th>" for _, name in parts)
    # one cell names the variant (its label, not its grid levels: the table above has those)
    columns_span = max(len(level_columns(data.axes)), 1)
    span = f" colspan='{columns_span}'" if columns_span > 1 else ""
    rows = []
    for (variant, layer), row in means.iterrows():
        total = float(row["delay_seconds"])
        cells = "".join(
            f"<td title='{esc(f'{row[column] / total:.0%}' if total > 0 else '')} of the "
            f"delay'>{esc(duration(float(row[column])))}</td>"
            for column in columns
        )
        top = max(parts, key=lambda part: float(row[f"{part[0]}_seconds"]))
        share = float(row[f"{top[0]}_seconds"]) / total if total > 0 else 0.0
        label = (
            ""
            if data.single
            else f"<th scope='row'{span}>{_swatch(data, str(variant))}{esc(variant)}</th>"
        )
        rows.append(
            f"<tr>{label}<th class='level'>{esc(layer)}</th>{cells}"
            f"<td>{esc(duration(total))}</td><td>{esc(top[1])} ({share:.0%})</td></tr>"
        )
    variant_head = "" if data.single else f"<th class='level'{span}>variant</th>"
    return (
        "<section id='delay-split'><h3>Where the absorption delay goes</h3>"
        "<div class='scroll'><table class='split'><thead><tr>"
        f"{variant_head}<th class='level'>layer</th>{heads}<th>total</th><th>largest part</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
        "<p class='how'>Means over the negatives each layer absorbed (all replications): "
        + ("" if no_label_delay else "the label delay (event to its arrival in the logs), ")
        + "the layer's ingestion latency, the wait for its next trigger once the event was "
        "visible, the update's compute, and the rollout until the version served the event's "
        "user (for profile memory, also the wait for the user's next session). The parts sum to "
        "the total."
        + (
            " No label delays were configured (the scenario's <code>logging</code>): every "
            "label reached the logs at once."
            if no_label_delay
            else ""
        )
        + "</p></section>"
    )


def _unabsorbed_layers(data: ReportData) -> str:
    frame = data.propagation
    if not len(frame):
        return ""
    absorbed = frame.groupby(frame["layer"].astype(str), observed=True)["absorbed"].any()
    none = [str(layer) for layer, any_absorbed in absorbed.items() if not any_absorbed]
    return (
        f" No panel for {_join(none)}: it absorbed no negative before the run ended."
        if none
        else ""
    )


def _releases_marked(figure: go.Figure | None) -> bool:
    return figure is not None and any(t.legendgroup == "releases" for t in figure.data)


def _encoding_text(data: ReportData) -> str:
    key = encoding_key(data.axes, data.styles)
    if not key:
        return ""
    parts = [f"{channel}: {esc(name)}" for channel, name in key]
    bounds = [b for b in BOUNDS if b in data.variants]
    tail = (
        f"; {' and '.join(bounds)} {'is' if len(bounds) == 1 else 'are'} grey and black"
        if bounds
        else ""
    )
    return (
        f"<p class='how'>In every chart, {'; '.join(parts)}{tail} (the table's first column "
        "shows each line).</p>"
    )


def build_report(folder: str | Path, plotlyjs: str = "inline") -> str:
    """The report of a results directory as one HTML page (``plotlyjs``: inline or cdn)."""
    if plotlyjs not in ("inline", "cdn"):
        raise ValueError(f"plotlyjs must be inline or cdn, got {plotlyjs!r}")
    data = load_report_data(folder)
    summary = data.summary
    twin = twin_exposure_figure(data)
    charts = _charts(data)
    if twin is not None:  # first on the page: it carries plotly.js
        charts.insert(0, (twin, _twin_how(data)))
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
    twin_chart = blocks.pop(0) if twin is not None else ""
    description = str(summary.get("description") or "").strip()
    first, _, rest = description.partition("\n\n")
    question = " ".join(first.split()) or (
        "How fast does a user's “no” reach what they are shown, through which layer, and what "
        "does the delay cost?"
    )
    more = (
        f"<details class='more'><summary>full description</summary>{esc(description)}</details>"
        if rest or len(question) > 200
        else ""
    )
    sentences = "".join(f"<p>{esc(sentence)}</p>" for sentence in headline(data))
    warning = reliability(data)
    warn = f"<p class='warn' id='unreliable'>{esc(warning)}</p>" if warning else ""
    runs = (
        "one run"
        if data.single
        else f"{len(data.variants)} variant{'s' if len(data.variants) > 1 else ''} × "
        f"{data.replications} replications"
    )
    plan = summary.get("replication_plan") or {}
    if plan.get("stopped") and plan["stopped"] != "fixed":  # replications until a precision
        runs += f" ({plan['stopped']})"
    meta = f"{esc(runs)} · seed {esc(summary.get('seed'))}"
    switch = (
        ""
        if data.single
        else "<input type='checkbox' id='show-intervals'><label class='switch' "
        "for='show-intervals'> show 95% intervals and paired deltas (also on hover)</label>"
    )
    notes = summary.get("notes", [])
    if data.single:
        notes = [note for note in notes if "interval" not in note]  # sweep-only
    notes_html = "".join(f"<li>{esc(note)}</li>" for note in notes)
    failed = "".join(
        f"<li>{esc(run['variant'])} r{esc(run['replication'])}: {esc(run['error'])}</li>"
        for run in summary.get("failed_runs", [])
    )
    facts = {
        "recloop version": summary.get("recloop_version"),
        "seed": summary.get("seed"),
        "replications": summary.get("replications"),
        "baseline": None if data.single else summary["baseline"],
        "runs": summary.get("runs"),
        "failed runs": len(summary.get("failed_runs", [])),
        "interval": None if data.single else summary.get("interval"),
        "wall time": f"{summary.get('wall_seconds', 0):,.1f} s",
    }
    fact_rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items() if v is not None
    )
    table_note = (
        ""
        if data.single
        else "<p class='how'>Means over replications; ★ the best among the variants (not the "
        "bounds). Hover a cell for its 95% interval and paired difference from the baseline.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recloop: {esc(summary["scenario"])}</title><style>{CSS}</style></head>
<body>
<header><h1>{esc(summary["scenario"])}</h1>
<p class="question" id="question">{esc(question)}</p>{more}
<p class="meta">{meta}</p>
<div class="answer" id="answer">{sentences}</div>{warn}</header>
<section id="first-table">{switch}
<div class="scroll">{compact_table(data)}</div>{table_note}</section>
{"<h3>Failed runs</h3><ul>" + failed + "</ul>" if failed else ""}
{"<ul class='how'>" + notes_html + "</ul>" if notes_html else ""}
<details><summary>Every metric{"" if data.single else " with intervals and paired deltas"}</summary>
<div class="scroll">{full_table(data)}</div></details>
{responsiveness_section(data, twin_chart)}
<h2>Propagation, exposure and cost</h2>
{_encoding_text(data)}
{delay_split_table(data)}
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
