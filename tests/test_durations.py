import pytest

from sim.scenario.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("150ms", 0.15),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1mo", 2592000),
        ("1.5h", 5400),
        (" 2 h ", 7200),
        (12, 12.0),
        (0.5, 0.5),
    ],
)
def test_parses_every_unit(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["", "5", "5 minutes", "-1h", "1y", "h", True, None, [1], float("nan"), float("inf"), -3]
)
def test_rejects_what_is_not_a_duration(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("seconds", [0.15, 1, 59, 60, 90, 3600, 5400, 86400, 604800, 1.25])
def test_format_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
