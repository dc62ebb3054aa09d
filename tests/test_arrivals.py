"""Arrivals against their analytic rates, and the per-user gap the serving window relies on."""

from __future__ import annotations

import numpy as np
import pytest

from sim.scenario.spec import Users
from users.arrivals import Arrivals

DAY = 86400.0


def draw_all(spec: Users, days: float, seed: int = 0, k: int = 3):
    rng = np.random.default_rng(seed)
    rates = (
        np.full(spec.count, spec.sessions_per_day.median)
        if spec.sessions_per_day.distribution == "constant"
        else spec.sessions_per_day.median
        * np.exp(spec.sessions_per_day.sigma * rng.standard_normal(spec.count))
    )
    arrivals = Arrivals(
        spec, rates, k, days * DAY, np.random.default_rng(seed + 1), np.random.default_rng(seed + 2)
    )
    return arrivals.take(np.inf)


def users(**fields) -> Users:
    return Users.model_validate(fields)


def test_session_count_matches_the_poisson_rate():
    spec = users(
        count=2000,
        sessions_per_day={"distribution": "constant", "median": 5},
        diurnal={"amplitude": 0},
        session={"requests_mean": 1, "gap_min": "1s", "gap_mean": "0s"},
    )
    block = draw_all(spec, days=2)
    expected = 2000 * 5 * 2
    assert abs(block.first.sum() - expected) < 4 * np.sqrt(expected)
    assert (block.first == block.last).all()  # one request per session


def test_requests_per_session_is_geometric_with_the_configured_mean():
    spec = users(
        count=3000,
        sessions_per_day={"distribution": "constant", "median": 2},
        diurnal={"amplitude": 0},
        session={"requests_mean": 5},
    )
    block = draw_all(spec, days=1)
    per_session = np.bincount(block.session)
    assert per_session.min() >= 1
    assert per_session.mean() == pytest.approx(5, rel=0.05)


def test_diurnal_profile_shapes_the_hourly_rate():
    spec = users(
        count=4000,
        sessions_per_day={"distribution": "constant", "median": 4},
        diurnal={"amplitude": 0.8, "peak_hour": 20},
        session={"requests_mean": 1, "gap_min": "1s", "gap_mean": "0s"},
    )
    block = draw_all(spec, days=3)
    hours = (block.time[block.first] % DAY) / 3600
    peak = ((hours >= 19) & (hours < 21)).sum()
    trough = ((hours >= 7) & (hours < 9)).sum()
    # rate ratio of two-hour windows centred on the peak and the trough
    grid = np.linspace(0, 2, 2001)
    profile = lambda centre: (1 + 0.8 * np.cos(2 * np.pi * (centre - 1 + grid - 20) / 24)).mean()  # noqa: E731
    assert peak / trough == pytest.approx(profile(20) / profile(8), rel=0.1)


def test_a_users_requests_are_never_closer_than_gap_min():
    spec = users(
        count=500,
        sessions_per_day={"median": 40, "sigma": 1.5},
        session={"requests_mean": 8, "gap_min": "10s", "gap_mean": "20s"},
    )
    block = draw_all(spec, days=1)
    order = np.lexsort((block.time, block.user))
    same_user = block.user[order][1:] == block.user[order][:-1]
    gaps = np.diff(block.time[order])[same_user]
    assert gaps.min() >= 10.0 - 1e-9


def test_requests_are_in_time_order_and_carry_their_draws():
    spec = users(count=300)
    block = draw_all(spec, days=1, k=4)
    assert (np.diff(block.time) >= 0).all()
    assert block.slot_uniform.shape == (len(block), 4, 4)
    assert ((block.slot_uniform >= 0) & (block.slot_uniform < 1)).all()


def test_taking_in_windows_gives_the_same_requests_as_taking_at_once():
    spec = users(count=300)
    rates = np.full(300, 3.0)
    make = lambda: Arrivals(spec, rates, 2, DAY, np.random.default_rng(1), np.random.default_rng(2))  # noqa: E731
    whole = make().take(np.inf)
    windowed = make()
    parts = [windowed.take(t) for t in [*np.arange(600, DAY + 600, 600), np.inf]]
    np.testing.assert_array_equal(np.concatenate([p.time for p in parts]), whole.time)
    np.testing.assert_array_equal(
        np.concatenate([p.slot_uniform for p in parts]), whole.slot_uniform
    )
