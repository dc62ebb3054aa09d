"""Durations written as strings (``150ms``, ``30s``, ``5m``, ``2h``, ``1d``, ``1w``, ``1mo``).

Simulated time is a float number of seconds everywhere inside recloop; these helpers are the only
place that knows the units.

>>> parse_duration("90s")
90.0
>>> parse_duration("1.5h")
5400.0
>>> format_duration(5400.0)
'90m'
>>> format_duration(parse_duration("1w"))
'1w'
"""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = [
    "UNITS",
    "parse_duration",
    "parse_written_duration",
    "format_duration",
    "humanize_duration",
]

#: Seconds per unit; a month is 30 days.
UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "mo": 30 * 86400.0,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d|w|mo)\s*$")
DURATION_PATTERN = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d|w|mo)\s*$"


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds; a bare number is taken as seconds.

    Raises ``ValueError`` with the rule when the text is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s' or '2h', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(
                f"expected a duration such as '150ms', '30s', '5m', '2h', '1d', '1w' or '1mo', "
                f"got {value!r}"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as '30s' or '2h', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {value!r}")
    return seconds


def parse_written_duration(value: object) -> float:
    """:func:`parse_duration` for what a person wrote (a scenario file, ``--set``): a bare number
    other than 0 is refused, so that ``duration: 6`` cannot silently mean six seconds.

    >>> parse_written_duration("6h"), parse_written_duration(0)
    (21600.0, 0.0)
    >>> parse_written_duration(6)
    Traceback (most recent call last):
    ...
    ValueError: needs a unit (6s, 6m, 6h or 6d?): a bare number is not taken as seconds
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0:
        amount = f"{value:g}"
        raise ValueError(
            f"needs a unit ({amount}s, {amount}m, {amount}h or {amount}d?): a bare number is not "
            "taken as seconds"
        )
    return parse_duration(value)


def format_duration(seconds: float) -> str:
    """The shortest exact string for ``seconds`` in the largest unit that divides it."""
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s", "ms"):
        amount = seconds / UNITS[unit]
        if abs(amount - round(amount)) < 1e-9 and round(amount) >= 1:
            return f"{round(amount)}{unit}"
    return f"{np.format_float_positional(seconds, trim='-')}s"  # shortest that reads back exactly


def humanize_duration(seconds: float) -> str:
    """An approximate, readable duration for reports (three significant figures at most).

    >>> humanize_duration(0.25), humanize_duration(42.0), humanize_duration(269.6)
    ('250ms', '42s', '4.49m')
    >>> humanize_duration(5400.0), humanize_duration(3 * 86400.0)
    ('1.5h', '3d')
    """
    for unit, limit in (("ms", 1.0), ("s", 120.0), ("m", 5400.0), ("h", 172800.0)):
        if abs(seconds) < limit:
            return f"{seconds / UNITS[unit]:.3g}{unit}"
    return f"{seconds / UNITS['d']:.3g}d"
