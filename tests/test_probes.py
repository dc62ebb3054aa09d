"""Probes: users take a control at a time; twin runs without it measure what it prevented."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sim.cli import responsiveness_table
from sim.domain import Kind, Scope
from sim.errors import ScenarioError
from sim.measuring.responsiveness import exposure_table, responsiveness
from sim.serving.layers import PolicyFit
from sim.serving.runner import run_scenario
from sim.sweeps.plan import plan_runs
from tests.conftest import tiny

PROBED = (
    "probes=[{control: not_interested, at: +1h, users: 60}, "
    "{control: dismiss, at: +1h, users: 0.1, target: most_shown_topic}]",
)


def twins(*overrides: str):
    taken = run_scenario(tiny(*PROBED, *overrides))
    withheld = run_scenario(tiny(*PROBED, *overrides, "probes_withheld=true"))
    return taken, withheld


def test_relative_probe_times_resolve_and_bad_probes_are_named():
    scenario = tiny(*PROBED)
    assert [probe.at for probe in scenario.probes] == [7200.0, 7200.0]
    assert [probe.name for probe in scenario.probes] == ["not_interested@2h", "dismiss@2h"]
    assert scenario.probes[1].count(400) == 40
    with pytest.raises(ScenarioError, match=r"probes.0.at: 30m .* not in the measured period"):
        tiny("probes=[{control: dismiss, at: 30m, users: 5}]")
    with pytest.raises(ScenarioError, match="neither a count"):
        tiny("probes=[{control: dismiss, at: +1h, users: 2.5}]")
    with pytest.raises(ScenarioError, match="control"):
        tiny("probes=[{control: shout, at: +1h, users: 5}]")


def test_twins_are_bitwise_identical_before_the_probe_and_differ_by_the_controls():
    taken, withheld = twins()
    at = 7200.0
    before = int(np.searchsorted(taken.events.time, at))
    assert before == int(np.searchsorted(withheld.events.time, at)) > 0
    for name, column in taken.events.columns().items():
        assert np.array_equal(column[:before], withheld.events.columns()[name][:before]), name
    # the controls: one row per probe user at the probe time, outside any slate
    controls = taken.events.slice(before)
    controls = controls.slice(0, int(np.count_nonzero(controls.position == -1)))
    first, second = taken.probes
    assert first.users.shape[0] == 60 and second.users.shape[0] == 40
    assert not np.intersect1d(first.users, second.users).shape[0]  # one control per user
    row = controls.kind == Kind.NOT_INTERESTED
    assert np.array_equal(np.sort(controls.user[row]), first.users)
    assert set(controls.scope[row].tolist()) == {Scope.TOPIC}
    assert np.count_nonzero(controls.kind == Kind.DISMISS) == 40
    # the twin chose the same users and targets, and logged nothing
    for ours, theirs in zip(taken.probes, withheld.probes, strict=True):
        assert np.array_equal(ours.users, theirs.users)
        assert np.array_equal(ours.item, theirs.item)
        assert ours.taken and not theirs.taken
    after = withheld.events.slice(before)
    assert not np.any((after.position == -1) & (after.kind != Kind.ABANDON))


def test_each_target_is_the_item_the_user_was_shown_most_in_the_hour_before():
    taken, _ = twins()
    events, probe = taken.events, taken.probes[0]
    recent = (events.time >= probe.at - 3600) & (events.time < probe.at) & (events.position >= 0)
    for user, item in zip(probe.users[:10], probe.item[:10], strict=True):
        shown = events.item[recent & (events.user == user)]
        counts = np.bincount(shown)
        assert counts[item] == counts.max() and item == np.flatnonzero(counts == counts.max())[0]


def test_a_control_no_layer_reads_gives_exactly_zero_difference_in_every_bin():
    taken, withheld = twins("stack.frozen_after_warmup=true")
    tables = {
        ("v", 0, True): _table(taken),
        ("v", 0, False): _table(withheld),
        ("v", 1, True): _table(taken),
        ("v", 1, False): _table(withheld),
    }
    table, summary = responsiveness(tables, ["v"])
    rows = table.to_pydict()
    curve = [i for i, m in enumerate(rows["measure"]) if m == "exposure_difference"]
    assert curve and all(rows["value"][i] == 0.0 for i in curve)
    assert all(rows["without_control"][i] > 0 for i in curve if rows["exposure_to"][i] == "topic")
    share = summary["v"]["not_interested@2h"]["prevented_share"]["end"]
    assert share["value"] == 0.0 and share["ci_low"] == share["ci_high"] == 0.0


def _table(result) -> pa.Table:
    return exposure_table(
        result.probes, result.events, result.catalog(), result.scenario.end, 3600.0
    )


def test_prevented_share_is_one_minus_with_over_without_within_each_horizon():
    def run(exposures: list[int], users: int = 10) -> pa.Table:
        n = len(exposures)
        return pa.table(
            {
                "probe": ["p"] * n,
                "control": ["dismiss"] * n,
                "about": ["item"] * n,
                "taken": [True] * n,
                "users": [users] * n,
                "exposure_to": ["item"] * n,
                "since_seconds": [3600.0 * b for b in range(n)],
                "bin_seconds": [3600.0] * n,
                "exposures": exposures,
                "impressions": [100] * n,
            }
        )

    tables = {
        ("v", 0, True): run([1, 0, 0]),
        ("v", 0, False): run([4, 4, 2]),
        ("v", 1, True): run([2, 1, 0], users=7),
        ("v", 1, False): run([4, 2, 4], users=7),
    }
    _, summary = responsiveness(tables, ["v"])
    # Fewer users were eligible in the second replication: the summary keeps the range.
    assert (summary["v"]["p"]["users"], summary["v"]["p"]["users_max"]) == (7, 10)
    assert "7 to 10" in responsiveness_table(summary)
    shares = summary["v"]["p"]["prevented_share"]
    # 1h: 1 - 1/4 and 1 - 2/4; end: 1 - 1/10 and 1 - 3/10
    assert shares["1h"]["value"] == pytest.approx(0.625)
    assert shares["end"]["value"] == pytest.approx(0.8)
    assert shares["1d"]["missing"].startswith("the run ends 3h after the control")


def test_a_sweep_pairs_every_run_with_its_twin():
    labels, _, plans = plan_runs(tiny(*PROBED, "replications=2"))
    assert labels == ["default"]
    assert [(p.replication, p.twin) for p in plans] == [
        (0, False),
        (0, True),
        (1, False),
        (1, True),
    ]
    assert plans[0].scenario.seed == plans[1].scenario.seed
    assert plans[1].scenario.probes_withheld and not plans[0].scenario.probes_withheld


def test_after_remove_from_history_no_later_version_is_trained_on_the_deleted_events(
    monkeypatch,
):
    fits = []
    original = PolicyFit.compute

    def recording(self, data):
        fits.append((data.horizon, data.events.time, data.events.user, data.events.item))
        return original(self, data)

    monkeypatch.setattr(PolicyFit, "compute", recording)
    deleting = (
        "probes=[{control: remove_from_history, at: +1h, users: 80}]",
        "stack.layers.retrain.phase=7m",
        "stack.layers.realtime_features={}",
        "stack.layers.online_learning={}",
    )
    result = run_scenario(tiny(*deleting))
    probe = result.probes[0]
    at, events = probe.at, result.events
    target = dict(zip(probe.users.tolist(), probe.item.tolist(), strict=True))
    deleted = {
        (t, u, i)
        for t, u, i in zip(
            events.time.tolist(), events.user.tolist(), events.item.tolist(), strict=True
        )
        if t < at and target.get(u) == i
    }
    assert probe.deleted_rows == len(deleted) > 0

    def trained_on_deleted(fit):
        _, times, users, items = fit
        rows = zip(times.tolist(), users.tolist(), items.tolist(), strict=True)
        return any(row in deleted for row in rows)

    later = [fit for fit in fits if fit[0] > at]
    earlier = [fit for fit in fits if at - 3600 < fit[0] <= at]
    assert later and not any(trained_on_deleted(fit) for fit in later)
    assert earlier and all(trained_on_deleted(fit) for fit in earlier)  # not vacuous

    # retrain every 30m from warm-up end + 7m (1h7m, 1h37m, 2h7m, ...), latency 2m, compute
    # 5m; deleted at 2h: the first trigger whose horizon is past it is 2h7m (wait 5m after the
    # deletion reaches it at 2h2m): delay = latency + wait + compute = 2m + 5m + 5m
    delays = result.summary["deletions"]["remove_from_history@2h"]["delay_seconds"]
    assert delays["retrain"] == 120 + 300 + 300
    # continuous stores forget at the first window whose horizon is past the deletion
    assert 1.0 < delays["realtime_features"] <= 1.0 + result.scenario.tick_seconds
    assert "cannot take events back" in delays["online_learning"]["missing"]


def test_a_snooze_hides_the_topic_for_its_duration_then_lets_it_back():
    snoozing = "probes=[{control: snooze, for: 1h, at: +1h, users: 80, target: most_shown_topic}]"
    result = run_scenario(tiny(snoozing, "stack.layers.retrain.every=1d"))
    table = _table(result).to_pydict()
    topic = [
        (since, exposures)
        for since, exposures, to in zip(
            table["since_seconds"], table["exposures"], table["exposure_to"], strict=True
        )
        if to == "topic"
    ]
    assert topic[0] == (0.0, 0)  # hidden for the hour after
    assert sum(exposures for since, exposures in topic if since >= 3600) > 0  # then back
    with pytest.raises(ScenarioError, match="needs its duration"):
        tiny("probes=[{control: snooze, at: +1h, users: 5, target: most_shown_topic}]")
    with pytest.raises(ScenarioError, match="hides a topic or a creator"):
        tiny("probes=[{control: snooze, for: 1h, at: +1h, users: 5}]")
    with pytest.raises(ScenarioError, match="only a snooze has a duration"):
        tiny("probes=[{control: dismiss, for: 1h, at: +1h, users: 5}]")


def test_the_command_line_table_gives_each_controls_prevented_shares_and_deletion_delays():
    summary = {
        "default": {
            "dismiss@2h": {
                "control": "dismiss",
                "exposure_to": "item",
                "users": 20,
                "prevented_share": {
                    "1h": {"value": 0.9, "ci_low": 0.8, "ci_high": 1.0, "n": 3},
                    "1d": {"n": 0, "missing": "the run ends 5h after the control, before 1d"},
                    "end": {"value": 0.75, "n": 1},
                },
                "deletion_delay_seconds": {
                    "retrain": {"mean": 5400.0, "ci_low": 5400.0, "ci_high": 5400.0, "n": 3},
                    "online_learning": {"missing": "cannot take events back"},
                },
            }
        }
    }
    text = responsiveness_table(summary)
    row = next(line for line in text.splitlines() if line.strip().startswith("dismiss "))
    assert row.split()[:6] == ["dismiss", "item", "20", "90%", "[80%,", "100%]"]
    assert row.split()[6:] == ["n/a", "75%"]
    assert "retrain after 1.5h" in text and "online_learning never" in text


def test_the_responsiveness_preset_probes_every_control_and_has_a_quick_configuration():
    from pathlib import Path

    from sim.scenario.loader import load_scenario
    from sim.scenario.spec import CONTROLS

    path = Path(__file__).parents[1] / "scenarios" / "responsiveness.yaml"
    full, quick = load_scenario(str(path)), load_scenario(str(path), quick=True)
    assert sorted(probe.control for probe in full.probes) == sorted(CONTROLS)
    assert set(full.stack.layers.active()) == {
        "retrain",
        "nearline_embeddings",
        "realtime_features",
        "profile_memory",
    }
    assert full.stack.layers.retrain.every == 86400.0
    # the quick run still measures a whole day after the controls
    assert all(quick.end - probe.at >= 86400.0 for probe in quick.probes)
