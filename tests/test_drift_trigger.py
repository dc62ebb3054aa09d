"""A layer triggered ``on_drift`` feeds its River detector exactly the negative share of each
check's newly visible impressions, and fires when the detector says so, at most once per
``min_gap``, never after the layer is frozen.

The log is scripted (a share of skips among clicks each minute, plus an abandon row that is no
impression), so the values the detector must see follow by hand from the script."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import simpy
from river import drift

from sim.domain import Kind, Scope
from sim.scenario.spec import DriftTrigger, RetrainLayer
from sim.serving.eventlog import EventLog
from sim.serving.layers import LayerRuntime

PER_MINUTE = 20  # impressions logged each minute, at one second past it
LATENCY = 90.0  # not a multiple of the minute: horizons fall between the scripted times
CHECK = 120.0
START = 600.0  # the layer's active_from (a common warm-up's end)


def scripted_log(shares: list[float]) -> EventLog:
    """Minute ``m`` logs ``shares[m]`` of its impressions as skips, the rest as clicks, then one
    abandon row."""
    log = EventLog(layers=("retrain",))
    users = np.arange(PER_MINUTE)
    for minute, share in enumerate(shares):
        negatives = round(share * PER_MINUTE)
        rows = [
            (Kind.SKIP, users[:negatives]),
            (Kind.CLICK, users[negatives:]),
            (Kind.ABANDON, users[:1]),
        ]
        for kind, chosen in rows:
            if chosen.size:
                served = {"retrain": np.zeros(chosen.size, np.int64)}
                log.append_controls(
                    60.0 * minute + 1, chosen, chosen, kind, Scope.ITEM, chosen, served
                )
    return log


def expected_feed(shares: list[float], end: float) -> list[float]:
    """By hand: a check at ``t`` sees the minutes logged in ``[t' - latency, t - latency)``,
    ``t'`` the check before (the first: ``START``); the abandon rows are not impressions."""
    times = 60.0 * np.arange(len(shares)) + 1
    negatives = np.round(np.array(shares) * PER_MINUTE)
    fed, since, t = [], START - LATENCY, START + CHECK
    while t < end:
        seen = (times >= since) & (times < t - LATENCY)
        if seen.any():
            fed.append(negatives[seen].sum() / (PER_MINUTE * seen.sum()))
        since, t = t - LATENCY, t + CHECK
    return fed


class Recording:
    """River's detectors, recording what they are fed."""

    def __init__(self):
        self.fed: list[float] = []
        self.made: list[str] = []
        outer = self

        def recording(base):
            class Detector(base):
                def update(self, x):
                    outer.fed.append(x)
                    return super().update(x)

            def make():
                outer.made.append(base.__name__)
                return Detector()

            return make

        self.module = SimpleNamespace(
            ADWIN=recording(drift.ADWIN), PageHinkley=recording(drift.PageHinkley)
        )


def run_watch(shares, end, monkeypatch, frozen_from=np.inf, **trigger):
    """The trigger times of a retrain layer watching the scripted log, and what its detector
    was fed."""
    spec = RetrainLayer(
        every=None, latency=LATENCY, on_drift=DriftTrigger(check_every=CHECK, **trigger)
    )
    recording = Recording()
    monkeypatch.setattr(sys.modules[LayerRuntime.__module__], "drift", recording.module)
    runtime = LayerRuntime(
        "retrain",
        spec,
        SimpleNamespace(incremental=False),
        scripted_log(shares),
        SimpleNamespace(n_users=PER_MINUTE),
        lambda *args: None,
        np.random.default_rng(0),
    )
    runtime.active_from, runtime.frozen_from = START, frozen_from
    fired = []

    def update(env):
        fired.append(env.now)
        yield env.timeout(0)

    runtime._update = update
    env = simpy.Environment()
    runtime.start(env)
    env.run(until=end)
    return fired, recording


#: quiet, bad, quiet again, 200 checks each, as River's detectors take tens of values to see a
#: change (ADWIN looks every 32 values; Page-Hinkley's threshold of 50 needs about 90 values of a
#: 0.8 rise); the first ten minutes, before the layer is active, of another share (a watch that
#: read them would feed another first value)
SHARES = [0.5] * 10 + [0.1] * 390 + [0.9] * 400 + [0.1] * 400
END = 60.0 * len(SHARES)


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_the_detector_is_fed_each_checks_new_negative_share(detector, monkeypatch):
    _, recording = run_watch(SHARES, END, monkeypatch, detector=detector)
    assert recording.made == [{"adwin": "ADWIN", "page_hinkley": "PageHinkley"}[detector]]
    np.testing.assert_allclose(recording.fed, expected_feed(SHARES, END))


def detections(detector: str) -> list[float]:
    """When River's own detector, fed the same shares, reports drift (no gap enforced)."""
    found, detect = [], drift.ADWIN() if detector == "adwin" else drift.PageHinkley()
    fed = iter(expected_feed(SHARES, END))
    t = START + CHECK
    while t < END:
        detect.update(next(fed))
        if detect.drift_detected:
            found.append(t)
        t += CHECK
    return found


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_it_fires_at_each_detection_at_most_once_per_min_gap(detector, monkeypatch):
    found = detections(detector)
    assert len(found) >= 2, found  # the script drifts twice
    fired, _ = run_watch(SHARES, END, monkeypatch, detector=detector, min_gap=0)
    assert fired == found
    gap = found[1] - found[0]
    fired, _ = run_watch(SHARES, END, monkeypatch, detector=detector, min_gap=gap)
    assert fired[:2] == found[:2]  # exactly min_gap apart: both fire
    fired, _ = run_watch(SHARES, END, monkeypatch, detector=detector, min_gap=gap + CHECK)
    assert fired[:1] == found[:1] and found[1] not in fired


def test_detectors_disagree_on_the_script():
    """Otherwise the tests above could not tell which detector ran."""
    assert detections("adwin") != detections("page_hinkley")


def test_nothing_fires_once_frozen(monkeypatch):
    found = detections("adwin")
    # frozen one check before the second detection: the check at the freeze is the last
    fired, _ = run_watch(SHARES, END, monkeypatch, frozen_from=found[1] - CHECK, min_gap=0)
    assert fired == [t for t in found if t < found[1]]
