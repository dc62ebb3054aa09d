"""The table world: items (and their click probabilities) from a team's own table."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import stats

from sim.cli import main
from sim.domain import EXPLICIT_NEGATIVE_KINDS, Kind
from sim.errors import ScenarioError
from sim.scenario.loader import load_scenario
from sim.serving.rng import Streams
from sim.serving.runner import check_scenario, run_scenario
from users.table_world import TableWorld

N_ITEMS = 80
#: Spread over the range a logged-bandit dataset has, and beyond.
CLICK_PROB = np.round(np.linspace(0.01, 0.6, N_ITEMS), 6)


def write_items(path, columns):
    """A CSV of ``columns`` (name -> values)."""
    names = list(columns)
    lines = [",".join(names)]
    for row in zip(*(columns[name] for name in names), strict=True):
        lines.append(",".join(str(value) for value in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario_file(folder, world, name="table", **top):
    data = {
        "name": name,
        "seed": 5,
        "duration": "3h",
        "world": world,
        "stack": {"policy": "random", "slate_size": 3},
        **top,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def click_world(tmp_path, count=4000, **extra):
    write_items(
        tmp_path / "items.csv",
        {"item": range(N_ITEMS), "click_prob": CLICK_PROB, "topic": np.arange(N_ITEMS) % 5},
    )
    world = {
        "users": {"count": count, "sessions_per_day": {"median": 24}, **extra.pop("users", {})},
        "catalog": {"table": "items.csv", "topics": 5},
        "behavior": {"examine_decay": 1, **extra.pop("behavior", {})},
    }
    return scenario_file(tmp_path, world, **extra)


def per_item(events, rows=None):
    """Impressions and clicks (a short dwell is a click) of each item."""
    rows = np.ones(len(events), bool) if rows is None else rows
    shown = rows & (events.item >= 0)
    clicked = shown & np.isin(events.kind, (Kind.CLICK, Kind.SHORT_DWELL))
    impressions = np.bincount(events.item[shown], minlength=N_ITEMS)
    clicks = np.bincount(events.item[clicked], minlength=N_ITEMS)
    return impressions, clicks


def outside(clicks, impressions, prob, level):
    """Items whose click count falls outside the central binomial interval of ``level``."""
    low = stats.binom.ppf((1 - level) / 2, impressions, prob)
    high = stats.binom.isf((1 - level) / 2, impressions, prob)
    return np.flatnonzero((clicks < low) | (clicks > high))


def test_each_item_is_clicked_at_its_click_prob(tmp_path):
    """80 items, examine_decay 1, random slates of 3: each item's click count lies in its
    binomial interval. Over 80 items, per-item 99% intervals miss 0.8 items on average (at most
    4 misses has probability 0.998), so the strict check is Bonferroni's: every item within its
    1 - 0.01/80 interval, a 1% chance of any miss in all."""
    result = run_scenario(load_scenario(click_world(tmp_path)))
    impressions, clicks = per_item(result.events)
    assert impressions.min() > 2000  # random slates show every item about equally
    assert len(outside(clicks, impressions, CLICK_PROB, 1 - 0.01 / N_ITEMS)) == 0
    assert len(outside(clicks, impressions, CLICK_PROB, 0.99)) <= 4
    # every impression is examined: nothing is left as a mere impression
    assert not (result.events.kind == Kind.IMPRESSION).any()


def test_a_segment_scales_its_users_click_prob(tmp_path):
    """Two segments, half the users each, click at 0.5 and 1.5 times the table's chance: each
    segment's clicks lie within 4 sd of the sum of its impressions' scaled chances."""
    write_items(tmp_path / "segments.csv", {"segment": ["light", "heavy"], "share": [0.5, 0.5],
                                            "click_scale": [0.5, 1.5]})  # fmt: skip
    scenario = load_scenario(click_world(tmp_path, users={"segments": "segments.csv"}))
    result = run_scenario(scenario)
    segment = TableWorld(scenario, Streams(scenario.seed)).segment
    assert 0.45 < segment.mean() < 0.55
    events = result.events
    for index, scale in enumerate((0.5, 1.5)):
        impressions, clicks = per_item(events, segment[events.user] == index)
        chance = CLICK_PROB * scale
        expected = (impressions * chance).sum()
        sd = np.sqrt((impressions * chance * (1 - chance)).sum())
        assert abs(clicks.sum() - expected) < 4 * sd, (index, clicks.sum(), expected, sd)


def test_negative_prob_gives_explicit_negatives_at_that_rate(tmp_path):
    negative = np.full(N_ITEMS, 0.2)
    write_items(tmp_path / "items.csv", {"item": range(N_ITEMS), "click_prob": CLICK_PROB,
                                         "negative_prob": negative})  # fmt: skip
    world = {
        "users": {"count": 600, "sessions_per_day": {"median": 24}},
        "catalog": {"table": "items.csv"},
        "behavior": {"examine_decay": 1, "explicit_kinds": {"dismiss": 1, "not_interested": 0,
                                                           "thumbs_down": 0, "block_creator": 0}},
    }  # fmt: skip
    events = run_scenario(load_scenario(scenario_file(tmp_path, world))).events
    unclicked = np.isin(events.kind, (Kind.SKIP, *EXPLICIT_NEGATIVE_KINDS))
    explicit = np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS)
    assert set(np.unique(events.kind[explicit])) == {Kind.DISMISS}
    n, k = unclicked.sum(), explicit.sum()
    assert abs(k / n - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)


def test_without_negative_prob_there_are_no_explicit_negatives(tmp_path):
    events = run_scenario(load_scenario(click_world(tmp_path, count=300))).events
    assert not np.isin(events.kind, EXPLICIT_NEGATIVE_KINDS).any()
    assert (events.kind == Kind.SKIP).any()


def test_the_oracle_ranks_by_click_prob_and_regret_is_exact(tmp_path):
    """With examine_decay 1 the oracle's expected clicks per request are the three highest
    click probabilities' sum, and a random slate's expected clicks are 3 times the mean."""
    path = click_world(tmp_path, count=300, metrics={"regret": True})
    oracle = run_scenario(load_scenario(path, ["stack.policy=oracle"]))
    _, served, best = oracle.expected_clicks
    top3 = np.sort(CLICK_PROB)[-3:].sum()
    np.testing.assert_allclose(best, top3)
    np.testing.assert_allclose(served, top3)
    random = run_scenario(load_scenario(path))
    _, served, best = random.expected_clicks
    np.testing.assert_allclose(best, top3)
    assert abs(served.mean() - 3 * CLICK_PROB.mean()) < 0.02


def test_a_table_without_click_prob_gives_the_items_attributes(tmp_path):
    """Topics, creators and arrival times come from the table; users respond as in the
    parametric world. Items created after 0 arrive then, in id order."""
    n = 30
    created = [-3600.0] * 25 + [1800.0, 1800.0, 3600.0, 5400.0, 7200.0]
    write_items(tmp_path / "items.csv", {"item": range(n), "topic": [i % 3 for i in range(n)],
                                         "creator": [i % 4 for i in range(n)],
                                         "created_at": created})  # fmt: skip
    world = {
        "users": {"count": 200},
        "catalog": {"table": "items.csv", "topics": 3, "creators": 4},
    }
    scenario = load_scenario(scenario_file(tmp_path, world))
    assert scenario.world.model.name == "table"
    result = run_scenario(scenario)
    np.testing.assert_array_equal(result.item_topic, [i % 3 for i in range(n)])
    np.testing.assert_array_equal(result.item_creator, [i % 4 for i in range(n)])
    np.testing.assert_array_equal(result.item_created_at, created)
    assert result.summary["items_at_start"] == 25 and result.summary["items_at_end"] == 30
    first_shown = {item: result.events.time[result.events.item == item].min() for item in (25, 29)}
    assert first_shown[25] >= 1800 and first_shown[29] >= 7200


def test_tables_are_read_relative_to_the_scenario_file(tmp_path, monkeypatch):
    folder, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    path = click_world(folder, count=100)
    monkeypatch.chdir(elsewhere)
    scenario = load_scenario(str(path))
    assert scenario.world.catalog.table == str(folder / "items.csv")
    assert main(["run", str(path), "-q", "--out", "out", "--set", "duration=30m"]) == 0
    resolved = yaml.safe_load((elsewhere / "out" / "scenario.yaml").read_text())
    assert resolved["world"]["catalog"] == {**resolved["world"]["catalog"],
                                            "table": str(folder / "items.csv")}  # fmt: skip
    assert "items" not in resolved["world"]["catalog"]  # the table's rows are the items
    assert load_scenario(str(elsewhere / "out" / "scenario.yaml")).world == scenario.world
    # a path on the command line is the shell's: relative to the current directory
    write_items(elsewhere / "mine.csv", {"item": range(5), "click_prob": [0.1] * 5})
    again = load_scenario(str(path), ["world.catalog.table=mine.csv"])
    assert again.world.catalog.table == str(elsewhere / "mine.csv")


# --- validation: one line naming the file, the row and the column --------------------------


def items_with(tmp_path, text, world=None, **top):
    (tmp_path / "items.csv").write_text(text)
    world = {"catalog": {"table": "items.csv", "topics": 3, "creators": 4}, **(world or {})}
    return scenario_file(tmp_path, world, **top)


GOOD = "item,click_prob\n0,0.1\n1,0.2\n2,0.3\n3,0.4\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "item,clik_prob\n0,0.1\n",
            "column 'clik_prob': unknown column; did you mean 'click_prob'?",
        ),
        ("click_prob\n0.1\n", "no column 'item'"),
        ("item,click_prob\n", "no rows"),
        (
            "item,click_prob\n0,0.1\n1,0.2\n0,0.3\n",
            "row 3 (line 4), column item: item 0 appears again (first in row 1)",
        ),
        (
            "item,click_prob\n0,0.1\n1,0.2\n5,0.3\n",
            "row 3 (line 4), column item: 5 is not an item id of this table: ids are 0 to 2",
        ),
        (
            "item,click_prob\n0,0.1\n1,1.4\n2,0.3\n",
            "row 2 (line 3), column click_prob: 1.4 is not a probability (0 to 1)",
        ),
        ("item,click_prob\n0,0.1\n1,\n2,0.3\n", "row 2 (line 3), column click_prob: missing value"),
        (
            "item,click_prob\n0,0.1\n1,high\n2,0.3\n",
            "row 2 (line 3), column click_prob: 'high' is not a number",
        ),
        (
            "item,click_prob\n0,0.1\n1.5,0.2\n2,0.3\n",
            "row 2 (line 3), column item: 1.5 is not a whole number",
        ),
        (
            "item,click_prob,topic\n0,0.1,0\n1,0.2,3\n2,0.3,1\n",
            "row 2 (line 3), column topic: 3 does not exist (world.catalog.topics is 3",
        ),
        (
            "item,creator\n0,0\n1,1\n2,9\n",
            "row 3 (line 4), column creator: 9 does not exist (world.catalog.creators is 4",
        ),
        (
            "item,created_at\n0,0\n1,60\n2,0\n3,0\n",
            "row 2 (line 3), column created_at: item 1 arrives during the run (at 60 s) but "
            "item 3 (row 4) is live from the start",
        ),
        (
            "item,created_at\n0,0\n1,0\n2,0\n3,120\n4,60\n",
            "row 5 (line 6), column created_at: item 4 arrives at 60 s, before item 3",
        ),
        (
            "item,click_prob\n0,0.1\n1,0.2\n",
            "2 items are live at the start, fewer than stack.slate_size (3)",
        ),
        ("item,negative_prob\n0,0.1\n1,0.2\n2,0.3\n", "column negative_prob: it needs click_prob"),
    ],
)
def test_a_bad_item_table_is_one_line_naming_file_row_and_column(tmp_path, text, message):
    scenario = load_scenario(items_with(tmp_path, text))
    with pytest.raises(ScenarioError) as error:
        check_scenario(scenario)
    (line,) = error.value.problems
    assert line.startswith(str(tmp_path / "items.csv")) and message in line, line


def test_a_bad_table_exits_2_with_one_line_through_the_cli(tmp_path, capsys):
    path = items_with(tmp_path, "item,click_prob\n0,0.1\n1,1.4\n2,0.3\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"recloop: error: {path}: {tmp_path / 'items.csv'}: row 2 (line 3), column click_prob: "
        "1.4 is not a probability (0 to 1)"
    ]
    assert main(["run", str(path), "-q", "--out", str(tmp_path / "out")]) == 2
    assert "column click_prob" in capsys.readouterr().err


@pytest.mark.parametrize(
    "segments, message",
    [
        ("segment,share,click_scale\na,0.5,1\nb,0.4,1\n", "column share sums to 0.9, not 1"),
        (
            "segment,share,click_scale\na,0.5,1\nb,0.5,3\n",
            "row 2 (line 3), column click_scale: 3 times item 3's click_prob 0.4 is 1.2, not "
            "a probability",
        ),
        (
            "segment,share,click_scale\na,0.5,1\na,0.5,1\n",
            "row 2 (line 3), column segment: segment 'a' appears again",
        ),
        ("segment,share\na,1\n", "no column 'click_scale'"),
        (
            "segment,share,click_scale\na,1,-1\n",
            "row 1 (line 2), column click_scale: -1 must not be negative",
        ),
    ],
)
def test_a_bad_segment_table_names_file_row_and_column(tmp_path, segments, message):
    (tmp_path / "segments.csv").write_text(segments)
    path = items_with(tmp_path, GOOD, world={"users": {"segments": "segments.csv"}})
    with pytest.raises(ScenarioError) as error:
        check_scenario(load_scenario(path))
    (line,) = error.value.problems
    assert line.startswith(str(tmp_path / "segments.csv")) and message in line, line


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"world": {"catalog": {"table": "items.csv", "items": 10}}},
            "world.catalog: items: a table's rows are the catalogue",
        ),
        (
            {"world": {"catalog": {"table": "items.csv"}, "model": "parametric"}},
            "catalog.table: the parametric user model draws its world and reads no table",
        ),
        (
            {"world": {"catalog": {"table": "items.xlsx"}}},
            "a table is a .parquet or .csv file, not .xlsx",
        ),
        ({"world": {"catalog": {"table": "missing.csv"}}}, "missing.csv: no such file"),
        (
            {"interventions": [{"kind": "topic_aversion", "at": "1h", "topic": 0}]},
            "interventions.0: topic_aversion changes utilities, which a world of given click "
            "probabilities",
        ),
        (
            {"interventions": [{"kind": "catalog_burst", "at": "1h", "items": 5}]},
            "interventions.0: a catalog_burst draws new items",
        ),
    ],
)
def test_what_a_table_world_cannot_do_is_refused(tmp_path, change, message):
    (tmp_path / "items.csv").write_text(GOOD)
    (tmp_path / "items.xlsx").write_text("")
    data = {"name": "t", "duration": "3h", "stack": {"policy": "random", "slate_size": 3},
            "world": {"catalog": {"table": "items.csv"}}, **change}  # fmt: skip
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as error:
        check_scenario(load_scenario(path))
    assert message in str(error.value), str(error.value)


def test_a_parquet_table_reads_like_its_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item": [2, 0, 1], "click_prob": [0.3, 0.1, 1.4]}),
                   tmp_path / "items.parquet")  # fmt: skip
    world = {"catalog": {"table": "items.parquet"}}
    path = scenario_file(tmp_path, world)
    with pytest.raises(ScenarioError, match=r"items.parquet: row 3, column click_prob: 1.4"):
        check_scenario(load_scenario(path))


def test_a_sweep_over_tables_reads_each_relative_to_the_scenario(tmp_path, monkeypatch):
    from sim.sweeps.plan import plan_runs

    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).write_text(GOOD)
    world = {"catalog": {"table": "a.csv"}}
    variants = {"grid": {"world.catalog.table": {"low": "a.csv", "high": "b.csv"}}}
    path = scenario_file(tmp_path, world, variants=variants)
    monkeypatch.chdir(tmp_path.parent)
    labels, _, plans = plan_runs(load_scenario(str(path)))
    tables = {plan.variant: plan.scenario.world.catalog.table for plan in plans}
    assert tables == {"low": str(tmp_path / "a.csv"), "high": str(tmp_path / "b.csv")}
    cases = {"cases": [{"label": "c", "set": {"world.catalog.table": "c.csv"}}]}
    path = scenario_file(tmp_path, world, name="cases", variants=cases)
    (plan,) = plan_runs(load_scenario(str(path)))[2]
    assert plan.scenario.world.catalog.table == str(tmp_path / "c.csv")
