"""How the report tells variants apart and writes text into charts.

A grid sweep gives each axis its own visual channel, so a reader decodes a line without the
legend: hue for the axis with the most levels, dash (a marker symbol where there is no line) for
the next, and shade for a third (further axes share the dash). No two variants share both colour
and dash; when an encoding cannot guarantee it (more levels than hues), variants fall back to
distinct (colour, dash) pairs in order. The bounds are grey (frozen) and black (instant), solid.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "BOUNDS",
    "Axis",
    "Style",
    "grid_axes",
    "level_columns",
    "levels_of",
    "merged_label",
    "channels",
    "encoding_key",
    "plot_text",
    "lighter",
    "variant_styles",
]

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79",
)  # fmt: skip
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "star", "hexagon")
#: Shades of a hue for a third axis: the hue, lighter, darker (mixed with white or black).
SHADES = ((None, 0.0), ("#ffffff", 0.45), ("#000000", 0.35))
SEPARATOR = " · "


@dataclass(frozen=True)
class Style:
    """How one variant is drawn in every chart."""

    color: str
    dash: str
    symbol: str


BOUNDS = {
    "frozen": Style("#7f7f7f", "solid", "circle-open"),
    "instant": Style("#000000", "solid", "x"),
}


@dataclass(frozen=True)
class Axis:
    """One grid axis: its name (the factor, or the scenario path it sets) and its levels."""

    name: str
    levels: tuple[str, ...]


def plot_text(text: Any) -> str:
    """User text for a Plotly string: ``<``, ``>`` and ``&`` escaped (Plotly renders its
    strings as a subset of HTML and decodes only a few entities, so ``&quot;`` would show).

    >>> plot_text('say "no" <b>')
    'say "no" &lt;b&gt;'
    """
    return html.escape(str(text), quote=False)


def levels_of(variant: str) -> list[str]:
    """A grid variant's level per axis (its label joins them with `` · ``)."""
    return variant.split(SEPARATOR)


def grid_axes(variants: list[str], summary: dict[str, Any], scenario_yaml: str) -> list[Axis]:
    """The grid's axes, from ``summary["effects"]["factors"]`` when written, else from the
    resolved scenario's ``variants.grid``; empty when the variants are not a grid."""
    declared = [v for v in variants if v not in BOUNDS]
    factors = (summary.get("effects") or {}).get("factors") or []
    names = [str(factor["factor"]) for factor in factors]
    if not names:
        try:
            scenario = yaml.safe_load(scenario_yaml) if scenario_yaml else None
        except yaml.YAMLError:
            scenario = None
        grid = ((scenario or {}).get("variants") or {}).get("grid") or {}
        names = [".".join(str(path).split(".")[-2:]) for path in grid]
    split = [levels_of(variant) for variant in declared]
    if not names or any(len(parts) != len(names) for parts in split):
        return []
    return [
        Axis(name, tuple(dict.fromkeys(parts[index] for parts in split)))
        for index, name in enumerate(names)
    ]


def _shade(color: str, shade: int) -> str:
    toward, amount = SHADES[shade]
    if toward is None:
        return color
    mixed = [
        round(int(color[i : i + 2], 16) * (1 - amount) + int(toward[i : i + 2], 16) * amount)
        for i in (1, 3, 5)
    ]
    return "#" + "".join(f"{value:02x}" for value in mixed)


def lighter(color: str) -> str:
    """A variant's colour for its twin run (without the probe users' controls): lighter than any
    shade a grid axis uses, so no variant's own line takes it.

    >>> lighter("#1f77b4")
    '#a5c9e1'
    """
    mixed = [round(int(color[i : i + 2], 16) * 0.4 + 255 * 0.6) for i in (1, 3, 5)]
    return "#" + "".join(f"{value:02x}" for value in mixed)


def variant_styles(variants: list[str], axes: list[Axis]) -> dict[str, Style]:
    """A style per variant, fixed across every chart (see the module docstring).

    >>> axes = [Axis("retrain", ("1h", "1d", "7d")), Axis("features", ("on", "off"))]
    >>> styles = variant_styles(["1h · on", "1h · off", "7d · on", "frozen"], axes)
    >>> [(s.color, s.dash) for s in styles.values()]
    [('#1f77b4', 'solid'), ('#1f77b4', 'dash'), ('#2ca02c', 'solid'), ('#7f7f7f', 'solid')]
    """
    declared = [v for v in variants if v not in BOUNDS]
    styles = _grid_styles(declared, axes) if axes else {}
    pairs = {(style.color, style.dash) for style in styles.values()}
    if len(pairs) < len(declared):
        styles = {
            variant: Style(
                PALETTE[index % len(PALETTE)],
                DASHES[(index // len(PALETTE)) % len(DASHES)],
                SYMBOLS[(index // len(PALETTE)) % len(SYMBOLS)],
            )
            for index, variant in enumerate(declared)
        }
    return {v: BOUNDS[v] if v in BOUNDS else styles[v] for v in variants}


def channels(axes: list[Axis]) -> tuple[int, list[int], int | None]:
    """Which axis sets the hue, which set the dash, and which (if any) the shade."""
    order = sorted(range(len(axes)), key=lambda index: -len(axes[index].levels))
    shade = order[2] if len(order) > 2 and len(axes[order[2]].levels) <= len(SHADES) else None
    return order[0], [index for index in order[1:] if index != shade], shade


def encoding_key(axes: list[Axis], styles: dict[str, Style]) -> list[tuple[str, str]]:
    """(channel, axis name) per grid axis, for the text that explains the charts' encoding;
    empty when the styles are not the per-axis encoding (the fallback)."""
    grid = _grid_styles(list(styles), axes) if axes else {}
    if not grid or any(styles.get(variant) != style for variant, style in grid.items()):
        return []
    hue, dashed, shade = channels(axes)
    key = [("colour", axes[hue].name)]
    if shade is not None:
        key.append(("shade", axes[shade].name))
    key += [("dash (marker in the cost chart)", axes[index].name) for index in dashed]
    return key


def _grid_styles(declared: list[str], axes: list[Axis]) -> dict[str, Style]:
    declared = [v for v in declared if v not in BOUNDS]
    hue, dashed, shade = channels(axes)
    dash_keys = list(itertools.product(*(axes[index].levels for index in dashed)))
    styles = {}
    for variant in declared:
        parts = levels_of(variant)
        hue_level = axes[hue].levels.index(parts[hue])
        shade_level = 0 if shade is None else axes[shade].levels.index(parts[shade])
        dash_level = dash_keys.index(tuple(parts[index] for index in dashed))
        if hue_level >= len(PALETTE) or dash_level >= len(DASHES):
            return {}  # not encodable this way: the caller falls back
        styles[variant] = Style(
            _shade(PALETTE[hue_level], shade_level),
            DASHES[dash_level],
            SYMBOLS[dash_level % len(SYMBOLS)],  # markers (no dash) keep the pairs distinct
        )
    return styles


def merged_label(variants: list[str], axes: list[Axis]) -> str:
    """One label for variants drawn at the same point: per axis, their levels joined by ``/``.

    >>> merged_label(["retrain 1d · on", "retrain 7d · on"], [Axis("r", ()), Axis("f", ())])
    'retrain 1d / retrain 7d · on'
    """
    grid = [v for v in variants if v not in BOUNDS]
    if len(grid) < 2 or not axes:
        return " / ".join(variants)
    columns = zip(*(levels_of(variant) for variant in grid), strict=True)
    merged = SEPARATOR.join(" / ".join(dict.fromkeys(column)) for column in columns)
    return " / ".join([merged, *(v for v in variants if v in BOUNDS)])


def level_columns(axes: list[Axis]) -> list[tuple[str, dict[str, str]]]:
    """Per axis, a table heading and each level's cell: the words every level of the axis
    starts with become the heading, so that cells hold only what differs.

    >>> level_columns([Axis("retrain.every", ("retrain 1h", "retrain 1d")), Axis("x", ("a", "b"))])
    [('retrain', {'retrain 1h': '1h', 'retrain 1d': '1d'}), ('x', {'a': 'a', 'b': 'b'})]
    """
    columns = []
    for axis in axes:
        words = [level.split(" ") for level in axis.levels]
        shared = 0
        while all(len(w) > shared + 1 and w[shared] == words[0][shared] for w in words):
            shared += 1
        if shared and len(axis.levels) > 1:
            heading = " ".join(words[0][:shared])
            cells = {
                level: " ".join(w[shared:]) for level, w in zip(axis.levels, words, strict=True)
            }
            columns.append((heading, cells))
        else:
            columns.append((axis.name, {level: level for level in axis.levels}))
    return columns
