"""Label delays and losses (the scenario's ``logging`` section): arrival times, what layers see,
and the absorption delay's split against its analytic distribution."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import torch_ranker
from policies.builtin import EmbeddingPolicy
from policies.torch_ranker import TorchRanker, predict_clicks
from reports.data import duration, load_report_data
from sim.domain import Kind
from sim.errors import ScenarioError
from sim.measuring.metrics import DELAY_PARTS, layer_delay_parts, measure
from sim.scenario.spec import EmpiricalDelay, ExponentialDelay, Logging, LognormalDelay
from sim.serving.eventlog import EventLog
from sim.serving.labels import LabelPipeline, delay_cdf, draw_delays
from sim.serving.runner import run_scenario
from sim.sweeps.results import write_report
from sim.sweeps.sweep import run_sweep
from tests.conftest import tiny
from tests.test_absorption import synthetic_result

#: Kolmogorov's critical value at the 0.1% level (asymptotic, times 1/sqrt(n)).
KS_CRITICAL = 1.949


def ks_statistic(sample: np.ndarray, cdf) -> float:
    """The largest gap between the sample's empirical CDF and ``cdf``."""
    x = np.sort(sample)
    n = x.shape[0]
    expected = cdf(x)
    above = np.arange(1, n + 1) / n - expected
    below = expected - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


# --- the delay distributions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "delay",
    [
        ExponentialDelay(distribution="exponential", mean=600.0),
        LognormalDelay(distribution="lognormal", median=3600.0, sigma=1.2),
        EmpiricalDelay(distribution="empirical", quantiles={0.35: 3600.0, 0.5: 86400.0, 1.0: 9e5}),
    ],
)
def test_drawn_delays_follow_their_distribution(delay):
    sample = draw_delays(delay, 20_000, np.random.default_rng(1))
    d = ks_statistic(sample, lambda x: delay_cdf(delay, x))
    assert d < KS_CRITICAL / math.sqrt(sample.shape[0])


def test_empirical_quantiles_are_hit_exactly():
    delay = EmpiricalDelay(distribution="empirical", quantiles={0.35: 3600.0, 1.0: 7200.0})
    assert delay_cdf(delay, np.array([1800.0, 3600.0, 5400.0, 7200.0])).tolist() == [
        0.175,
        0.35,
        0.675,
        1.0,
    ]


def test_a_constant_delay_and_a_loss_of_one():
    pipeline = LabelPipeline(Logging(delay={"click": 2.0}, loss={"skip": 1.0}))
    kinds = np.array([Kind.CLICK, Kind.SKIP, Kind.IMPRESSION], np.int8)
    arrival = pipeline.arrivals(np.array([5.0, 5.0, 5.0]), kinds, np.random.default_rng(0))
    assert arrival.tolist() == [7.0, np.inf, 5.0]


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('logging={"delay": {"click": 6}}', "logging.delay.click: needs a unit"),
        ('logging={"delay": {"click": "soon"}}', "expected a duration"),
        ('logging={"delay": {"survey": "2s"}}', "logging.delay.survey"),
        ('logging={"delay": {"click": {"distribution": "weibull"}}}', "exponential|lognormal"),
        (
            'logging={"delay": {"click": {"distribution": "exponential", "mean": 5}}}',
            "needs a unit",
        ),
        (
            'logging={"delay": {"click": {"distribution": "lognormal", "median": "1h", '
            '"sigma": 0}}}',
            "sigma",
        ),
        (
            'logging={"delay": {"click": {"distribution": "empirical", '
            '"quantiles": {"0.5": "1h"}}}}',
            "largest probability must be 1",
        ),
        (
            'logging={"delay": {"click": {"distribution": "empirical", '
            '"quantiles": {"0.5": "2h", "1.0": "1h"}}}}',
            "must not decrease",
        ),
        (
            'logging={"delay": {"click": {"distribution": "empirical", "quantiles": {"0": "1h", '
            '"1.0": "2h"}}}}',
            "in (0, 1]",
        ),
        ('logging={"loss": {"click": 1.5}}', "logging.loss.click"),
    ],
)
def test_invalid_logging_is_refused_naming_the_path(override, message):
    with pytest.raises(ScenarioError) as error:
        tiny(override)
    assert message in str(error.value), str(error.value)


# --- the event log -----------------------------------------------------------------------------


def _log(logging: Logging) -> EventLog:
    return EventLog(
        labels=LabelPipeline(logging),
        rng=np.random.default_rng(3),
        control_rng=np.random.default_rng(4),
    )


def test_a_delayed_row_is_visible_once_it_has_arrived():
    from sim.domain import Requests, Responses

    log = _log(Logging(delay={"click": 10.0}))
    requests = Requests(
        times=np.array([0.0, 1.0]),
        users=np.array([0, 1], np.int32),
        sessions=np.array([0, 1], np.int64),
        k=1,
    )
    responses = Responses(
        kind=np.array([[Kind.CLICK], [Kind.SKIP]], np.int8),
        scope=np.zeros((2, 1), np.int8),
        dwell=np.zeros((2, 1), np.float32),
        abandoned=np.zeros(2, bool),
    )
    log.append_slates(requests, np.array([[4], [5]]), responses, {})
    assert len(log.visible(5.0)) == 1  # the skip at 1 s; the click arrives at 10 s
    assert log.visible(5.0).item.tolist() == [5]
    assert log.visible(10.5).item.tolist() == [4, 5]
    assert log.count_visible(5.0) == 1 and log.count_visible(10.5) == 2
    unlabelled = log.unlabelled(5.0)
    assert unlabelled is not None
    assert unlabelled.item.tolist() == [4] and unlabelled.kind.tolist() == [Kind.IMPRESSION]


def test_a_session_end_label_arrives_when_its_session_ends():
    from sim.domain import Requests, Responses

    log = _log(Logging(delay={"short_dwell": "session_end"}))

    def serve(time: float, ended: bool) -> None:
        requests = Requests(
            times=np.array([time]),
            users=np.array([0], np.int32),
            sessions=np.array([7], np.int64),
            k=1,
        )
        responses = Responses(
            kind=np.array([[Kind.SHORT_DWELL]], np.int8),
            scope=np.zeros((1, 1), np.int8),
            dwell=np.ones((1, 1), np.float32),
            abandoned=np.zeros(1, bool),
        )
        log.append_slates(requests, np.array([[1]]), responses, {}, np.array([ended]))

    serve(0.0, False)
    assert np.isnan(log.arrival(slice(None))).all()
    serve(30.0, True)
    assert log.arrival(slice(None)).tolist() == [30.0, 30.0]
    assert len(log.visible(29.0)) == 0 and len(log.visible(31.0)) == 2


def test_a_control_does_not_shift_the_delays_of_later_events():
    """A probe's twin logs no control: every later served event keeps its delay."""
    from sim.domain import Requests, Responses, Scope

    logs = [_log(Logging(delay={"skip": {"distribution": "exponential", "mean": 60.0}}))]
    logs.append(_log(Logging(delay={"skip": {"distribution": "exponential", "mean": 60.0}})))
    requests = Requests(
        times=np.array([0.0]), users=np.array([0], np.int32), sessions=np.array([0]), k=3
    )
    responses = Responses(
        kind=np.full((1, 3), Kind.SKIP, np.int8),
        scope=np.zeros((1, 3), np.int8),
        dwell=np.zeros((1, 3), np.float32),
        abandoned=np.zeros(1, bool),
    )
    for taken, log in enumerate(logs):
        log.append_slates(requests, np.array([[1, 2, 3]]), responses, {})
        if taken:
            one = np.array([0])
            log.append_controls(1.0, one, one, Kind.SKIP, Scope.ITEM, one, {})
        later = Requests(
            times=np.array([2.0]), users=np.array([0], np.int32), sessions=np.array([0]), k=3
        )
        log.append_slates(later, np.array([[1, 2, 3]]), responses, {})
    served = [log.arrival(np.flatnonzero(log.table().position >= 0)) for log in logs]
    np.testing.assert_array_equal(served[0], served[1])


def test_without_logging_the_run_draws_exactly_as_before():
    """An empty logging section and no section give the same log, with no arrival column."""
    plain = run_scenario(tiny("duration=2h"))
    empty = run_scenario(tiny("duration=2h", "logging={}"))
    assert plain.events.arrival is None and empty.events.arrival is None
    for name, column in plain.events.columns().items():
        np.testing.assert_array_equal(column, empty.events.columns()[name], err_msg=name)


# --- the analytic absorption delay -------------------------------------------------------------

PERIOD, LATENCY, COMPUTE, MEAN_DELAY = 1800.0, 120.0, 300.0, 600.0


def convolution_cdf(x: np.ndarray) -> np.ndarray:
    """P(D + U <= x - d - c) for D ~ Exp(1/MEAN_DELAY) and U ~ Uniform(0, PERIOD)."""
    rate = 1.0 / MEAN_DELAY
    y = np.maximum(np.asarray(x, np.float64) - LATENCY - COMPUTE, 0.0)
    low = np.maximum(y - PERIOD, 0.0)
    return ((y - low) - (np.exp(-rate * low) - np.exp(-rate * y)) / rate) / PERIOD


@pytest.fixture(scope="module")
def delayed_run():
    scenario = tiny(
        "duration=12h",
        "world.users.count=300",
        "world.users.diurnal.amplitude=0",
        "stack.layers.retrain.every=30m",
        "stack.layers.retrain.latency=2m",
        "stack.layers.retrain.compute_time=5m",
        'stack.layers.realtime_features={"latency": "1s"}',
        'logging={"delay": {"skip": {"distribution": "exponential", "mean": "10m"}}, '
        '"loss": {"skip": 0.3}}',
        'metrics.propagation_kinds=["skip", "short_dwell"]',
    )
    result = run_scenario(scenario)
    return scenario, result, measure(result).tables["propagation"].to_pandas()


def test_absorption_delay_matches_the_analytic_convolution(delayed_run):
    """Label delay D ~ Exp, latency d, compute c, period T: absorption delay = D + d + c + the
    wait W for the next trigger once the label is visible. With traffic flat in time, W is
    uniform on (0, T) and independent of D: the delay's distribution is their convolution,
    shifted by d + c (one event per request: the events of one request share their time)."""
    scenario, result, table = delayed_run
    arrived = np.isfinite(result.events.arrival[table.event.to_numpy()])  # lost: see below
    rows = table[
        arrived
        & (table.layer == "retrain")
        & (table.kind == "skip")
        & (table.time < scenario.end - 3 * 3600.0)  # every such event absorbed (P(D > 2h) ~ 0)
    ]
    assert rows.absorbed.all()
    one = rows.drop_duplicates(["time", "user"])
    delays = one.delay_seconds.to_numpy()
    n = delays.shape[0]
    assert n > 1000
    assert ks_statistic(delays, convolution_cdf) < KS_CRITICAL / math.sqrt(n)
    mean = MEAN_DELAY + PERIOD / 2 + LATENCY + COMPUTE
    assert abs(delays.mean() - mean) < 4 * delays.std() / math.sqrt(n)

    # Every event, against the convolution with the run's own triggers: the delay is at most x
    # when the last trigger by t + x - c came after the label was visible, t + D + d.
    triggers = np.sort(
        [v.triggered_at for v in result.versions if v.layer == "retrain" and v.origin == "update"]
    )
    times, every = rows.time.to_numpy(), rows.delay_seconds.to_numpy()

    def given_triggers(x: np.ndarray) -> np.ndarray:
        last = np.searchsorted(triggers, times[None, :] + x[:, None] - COMPUTE, "right") - 1
        trigger = np.where(last >= 0, triggers[np.maximum(last, 0)], -np.inf)
        gap = np.maximum(trigger - times[None, :] - LATENCY, 0.0)
        return (-np.expm1(-gap / MEAN_DELAY)).mean(axis=1)

    grid = np.sort(every)[:: max(1, every.shape[0] // 2000)]
    expected = given_triggers(grid)
    observed = np.searchsorted(np.sort(every), grid, "right") / every.shape[0]
    assert np.abs(observed - expected).max() < KS_CRITICAL / math.sqrt(every.shape[0])

    # the split: the label delay is the exponential part, latency and compute are constants
    label = rows.label_delay_seconds.to_numpy()
    assert ks_statistic(label, lambda x: -np.expm1(-np.maximum(x, 0) / MEAN_DELAY)) < (
        KS_CRITICAL / math.sqrt(label.shape[0])
    )
    np.testing.assert_allclose(rows.latency_seconds, LATENCY)
    np.testing.assert_allclose(rows.compute_seconds, COMPUTE)
    np.testing.assert_allclose(rows.rollout_seconds, 0.0)
    wait = one.trigger_wait_seconds.to_numpy()
    assert ks_statistic(wait, lambda x: np.clip(x / PERIOD, 0, 1)) < KS_CRITICAL / math.sqrt(n)
    parts = rows[[f"{part}_seconds" for part in DELAY_PARTS]].sum(axis=1)
    np.testing.assert_allclose(parts, rows.delay_seconds, atol=1e-6)


def test_lost_share_is_binomial_and_no_layer_sees_a_lost_event(delayed_run):
    _, result, table = delayed_run
    events = result.events
    skip = events.kind == Kind.SKIP
    lost = np.isinf(events.arrival)
    n = int(skip.sum())
    share = float(lost[skip].mean())
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n), (share, n)
    assert not lost[~skip].any()  # only the kind with a loss loses events
    lost_rows = np.flatnonzero(lost)
    mine = table[table.event.isin(lost_rows)]
    assert len(mine) > 100 and set(mine.layer) == {"retrain", "realtime_features"}
    assert not mine.absorbed.any()  # neither the batch nor the incremental layer absorbed any


class _SpyFits(EmbeddingPolicy):
    """The embedding policy, keeping every arrival time a fit was handed."""

    name = "spy_labels"
    seen: list = []

    def fit(self, data):
        _SpyFits.seen.append((data.horizon, data.events.arrival, data.unlabelled))
        return super().fit(data)


def test_a_fit_sees_only_arrived_events_and_never_a_lost_one():
    _SpyFits.seen.clear()
    result = run_scenario(
        tiny(
            "stack.policy.name=tests.test_labels:_SpyFits",
            'logging={"delay": {"click": "20m"}, "loss": {"skip": 0.5}}',
        )
    )
    assert len(_SpyFits.seen) >= 5
    for horizon, arrival, unlabelled in _SpyFits.seen:
        assert arrival is not None and (arrival < horizon).all()
        assert unlabelled is not None and (unlabelled.kind == Kind.IMPRESSION).all()
    # the last fit's unlabelled impressions are exactly the late clicks and the lost skips
    horizon, arrival, unlabelled = _SpyFits.seen[-1]
    events = result.events
    before = events.time < horizon
    assert len(arrival) + len(unlabelled) == int(before.sum())
    waiting = before & ~(events.arrival < horizon)
    assert set(np.unique(events.kind[waiting]).tolist()) <= {Kind.CLICK, Kind.SKIP}


# --- delayed feedback in the torch ranker ------------------------------------------------------


class _SpyRanker(TorchRanker):
    """The torch ranker, keeping what every fit was handed."""

    name = "spy_delayed_ranker"
    seen: list = []

    def fit(self, data):
        _SpyRanker.seen.append(data)
        return super().fit(data)


@pytest.fixture(scope="module")
def long_delay():
    """A run whose clicks arrive after an exponential delay of 3 h (the run measures 6 h), and
    the last retrain's input."""
    _SpyRanker.seen.clear()
    result = run_scenario(
        tiny(
            "stack.policy.name=tests.test_labels:_SpyRanker",
            "stack.policy.params={}",
            "duration=6h",
            'logging={"delay": {"click": {"distribution": "exponential", "mean": "3h"}}}',
        )
    )
    return result, _SpyRanker.seen[-1]


def _fit(data, strategy: str, epochs: int = 20):
    params = TorchRanker.Params(
        delayed_feedback=strategy,
        maturity=7200.0,
        epochs=epochs,
        batch_size=512,
        negative_weight=1.0,
    )
    return TorchRanker(params, seed=1).fit(data)


def test_corrected_training_is_better_calibrated_than_naive_under_a_long_delay(long_delay):
    """Predicted against realized click rate on every examined impression before the horizon,
    with every label (the log at the end of the run): the naive model learned the rate of
    clicks that had arrived; the corrected one the rate of clicks."""
    result, data = long_delay
    events = result.events
    truth = events.take(np.flatnonzero(events.time < data.horizon))
    late = (truth.kind == Kind.CLICK) & ~(truth.arrival < data.horizon)
    assert late.sum() > 200  # many clicks had not arrived when the model was trained
    gaps = {}
    for strategy in ("naive", "corrected"):
        _, predicted, clicked = predict_clicks(_fit(data, strategy), truth, data.catalog, 3600.0)
        gaps[strategy] = abs(predicted.mean() - clicked.mean())
    # measured: 0.026 against 0.038 (the estimated delay distribution ends at the longest delay
    # the run could observe, 7 h, so the corrected model still underestimates a little)
    assert gaps["corrected"] < 0.8 * gaps["naive"], gaps


def test_the_strategies_train_on_what_they_say(long_delay, monkeypatch):
    _, data = long_delay
    seen = {}

    def spy(events, topic, half_life, watches=False, pending=None):
        seen["rows"], seen["pending"] = len(events), pending
        seen["times"] = events.time
        return examples(events, topic, half_life, watches, pending)

    examples = torch_ranker._examples
    monkeypatch.setattr(torch_ranker, "_examples", spy)
    _fit(data, "arrived", epochs=1)
    assert seen["rows"] == len(data.events) and seen["pending"] is None
    _fit(data, "naive", epochs=1)
    assert seen["rows"] == len(data.events) + len(data.unlabelled)
    assert int(seen["pending"].sum()) == len(data.unlabelled)
    assert (np.diff(seen["times"]) >= 0).all()  # merged in time order
    # wait: the same rows, of which only examples older than the maturity are trained on
    model = _fit(data, "wait", epochs=1)
    assert model.validation_log_loss is not None
    # nothing old enough yet: the model already served stays
    young = dataclasses.replace(data, horizon=float(data.events.time.min()) + 60.0)
    assert (
        TorchRanker(TorchRanker.Params(delayed_feedback="wait"), seed=1).fit(
            dataclasses.replace(young, previous=model)
        )
        is model
    )


def test_without_label_delays_every_strategy_is_todays_training():
    data_plain = _SpyRanker.seen  # reuse nothing: build a run without delays
    data_plain.clear()
    run_scenario(
        tiny(
            "stack.policy.name=tests.test_labels:_SpyRanker",
            "stack.policy.params={}",
            "duration=1h",
        )
    )
    data = _SpyRanker.seen[-1]
    assert data.unlabelled is None and data.events.arrival is None
    base = _fit(data, "arrived", epochs=1)
    for strategy in ("naive", "corrected", "wait"):
        other = _fit(data, strategy, epochs=1)
        np.testing.assert_array_equal(base.users, other.users, err_msg=strategy)


# --- the split in the results and the report ---------------------------------------------------


def test_propagation_parquet_has_the_split_and_the_report_shows_it_per_layer(tmp_path):
    out = tmp_path / "delayed"
    run_sweep(
        tiny(
            "duration=2h",
            "stack.layers.realtime_features={}",
            'logging={"delay": {"dismiss": "10m", "thumbs_down": "10m", "not_interested": "10m", '
            '"short_dwell": "10m", "block_creator": "10m"}}',
        ),
        out,
    )
    write_report(out)
    table = pq.read_table(out / "propagation.parquet").to_pandas()
    columns = [f"{part}_seconds" for part in DELAY_PARTS]
    assert set(columns) <= set(table.columns)
    absorbed = table[table.absorbed]
    assert len(absorbed) > 20
    np.testing.assert_allclose(absorbed[columns].sum(axis=1), absorbed.delay_seconds, atol=1e-6)
    np.testing.assert_allclose(absorbed.label_delay_seconds, 600.0)  # a constant delay
    assert table[~table.absorbed][columns].isna().all().all()  # unabsorbed: no split
    events = pq.read_table(next(out.glob("**/events.parquet"))).to_pandas()
    delayed = events.kind.isin(
        ["dismiss", "thumbs_down", "not_interested", "short_dwell", "block_creator"]
    )
    np.testing.assert_allclose(events.arrival[delayed] - events.time[delayed], 600.0)
    np.testing.assert_array_equal(events.arrival[~delayed], events.time[~delayed])
    assert not events.lost.any()

    page = (out / "report.html").read_text(encoding="utf-8")
    section = page.split("id='delay-split'")[1].split("</section>")[0]
    data = load_report_data(out)
    for layer in ("retrain", "realtime_features"):
        rows = absorbed[absorbed.layer == layer]
        cells = _cells(section, f"<th class='level'>{layer}</th>")
        expected = [duration(rows[column].mean()) for column in columns]
        assert cells[: len(columns) + 1] == [*expected, duration(rows.delay_seconds.mean())]
    # the feature store waits 10 min for the label and 1 s for itself: the label dominates
    assert "label delay (" in section.split("realtime_features")[1].split("</tr>")[0]
    assert data.single


def _cells(section: str, head: str) -> list[str]:
    """The text of the cells after ``head`` in its row of ``section``."""
    row = section.split(head)[1].split("</tr>")[0]
    return [re.sub("<[^>]+>", "", cell.split(">", 1)[1]) for cell in row.split("</td>")[:-1]]


# --- the definition with arrivals, brute force -------------------------------------------------


def brute_force_arrived(result, layer: str, rows: np.ndarray) -> np.ndarray:
    """The definition with label delays, event by event: a version covers an event that
    arrived before its horizon and (batch) happened after its input start, or (incremental)
    arrived after it."""
    events = result.events
    record = result.absorption[layer]
    canary = result.canary_users.get(layer)
    delays = np.full(rows.shape[0], np.inf)
    missed = set(record.missed.tolist())
    changed = {version: set(users.tolist()) for version, users in record.changed_users.items()}
    for index, row in enumerate(rows.tolist()):
        t, arrival, user = float(events.time[row]), float(events.arrival[row]), events.user[row]
        admitted = record.reads.admits(
            events.kind[[row]],
            events.item[[row]],
            events.position[[row]],
            events.scope[[row]],
            events.user[[row]],
        )[0]
        if row in missed or not admitted:
            continue
        start = arrival if record.incremental else t
        for v in result.versions:
            if v.layer != layer:
                continue
            if v.cohort == "canary" and not (canary is not None and canary[user]):
                continue
            if v.changed == "none" or not (v.since <= start and arrival < v.horizon):
                continue
            if v.changed == "some" and not record.incremental and user not in changed[v.version]:
                continue
            delays[index] = min(delays[index], v.live_at - t)
    return delays


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_layer_delays_with_label_delays_equal_the_definition(data):
    result, rows = synthetic_result(data.draw)
    n = len(result.events)
    late = data.draw(st.lists(st.sampled_from([0, 0, 3, 10, 25, -1]), min_size=n, max_size=n))
    delay = np.array([np.inf if d < 0 else d for d in late], float)
    result.events = dataclasses.replace(result.events, arrival=result.events.time + delay)
    expected = brute_force_arrived(result, "x", rows)
    parts = layer_delay_parts(result, "x", rows)
    np.testing.assert_array_equal(parts["delay"], expected)
    absorbed = np.isfinite(expected)
    total = sum(parts[part][absorbed] for part in DELAY_PARTS)
    np.testing.assert_allclose(total, expected[absorbed])
    assert np.isnan(parts["label_delay"][~absorbed]).all()
    assert not absorbed[np.isinf(delay[rows])].any()  # a lost event: never


def test_every_layer_absorbs_by_the_definition_with_arrivals_and_never_before_them():
    """Every kind of layer (batch, incremental, continuous, event-count and drift triggers,
    a canary) on a log with delays of every form: each absorption is the definition's, and none
    comes before the event's arrival plus the layer's latency."""
    result = run_scenario(
        tiny(
            "stack.layers.retrain={every: 30m, latency: 2m, compute_time: 5m, window: 40m, "
            "rollout: {canary: {fraction: 0.3, for: 10m}}}",
            "stack.layers.nearline_embeddings={on_drift: {check_every: 5m, min_gap: 10m}, "
            "latency: 1m, compute_time: 1m}",
            "stack.layers.realtime_features={}",
            "stack.layers.session_context={every: 20m, include_skips: true}",
            "stack.layers.profile_memory={after_events: 300, retention: 1h, slots: 2}",
            "stack.layers.bandit={every: 10m, position: 1}",
            "world.behavior.explicit_prob=0.3",
            "duration=3h",
            'logging={"delay": {"skip": {"distribution": "exponential", "mean": "5m"}, '
            '"short_dwell": "session_end", "dismiss": "3m", "abandon": "1m", "click": '
            '{"distribution": "lognormal", "median": "10m", "sigma": 1.0}}, '
            '"loss": {"not_interested": 0.3, "thumbs_down": 0.3}}',
        )
    )
    events = result.events
    negative = ~np.isin(events.kind, [Kind.IMPRESSION, Kind.CLICK])
    rows = np.flatnonzero(negative & (events.time >= 1800))
    rows = rows[:: max(1, rows.shape[0] // 1500)]
    latency = {name: spec.latency for name, spec in result.scenario.stack.layers.active().items()}
    for layer in result.absorption:
        parts = layer_delay_parts(result, layer, rows)
        np.testing.assert_array_equal(
            parts["delay"], brute_force_arrived(result, layer, rows), err_msg=layer
        )
        absorbed = np.isfinite(parts["delay"])
        assert absorbed.any(), layer
        arrival = events.arrival[rows][absorbed]
        live = events.time[rows][absorbed] + parts["delay"][absorbed]
        assert (live >= arrival + latency[layer]).all(), layer
        for part in DELAY_PARTS:
            assert (parts[part][absorbed] >= -1e-9).all(), (layer, part)
