"""One test per validation rule: each bad input gets one line naming the path and the value."""

from __future__ import annotations

import pytest

from sim.errors import ScenarioError
from sim.scenario.loader import load_scenario, load_scenario_with_notes, parse_scenario
from sim.serving.runner import check_scenario
from sim.sweeps.plan import plan_runs
from tests.conftest import TINY, tiny


def problems(*overrides: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        check_scenario(tiny(*overrides))
    return caught.value.problems


def test_the_tiny_scenario_is_valid():
    assert tiny().name == "tiny"


def test_unknown_key_names_path_and_nearest_key():
    data = dict(TINY, stack={"polcy": "random"})
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert "stack.polcy: unknown key; did you mean 'policy'?" in caught.value.problems
    assert "stack.policy: required but missing" in caught.value.problems


def test_unknown_nested_key_suggests_from_its_own_section():
    assert problems("world.users.cuont=5") == [
        "world.users.cuont: unknown key; did you mean 'count'?"
    ]


def test_unknown_key_without_a_near_match_has_no_suggestion():
    assert problems("world.zzzz=1") == ["world.zzzz: unknown key"]


def test_missing_required_field():
    data = {key: value for key, value in TINY.items() if key != "duration"}
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert caught.value.problems == ["duration: required but missing"]


def test_bad_duration_names_the_rule_and_value():
    (line,) = problems("duration=5 minutes")
    assert line.startswith("duration: expected a duration such as")
    assert "'5 minutes'" in line


def test_a_bare_number_is_not_taken_as_seconds():
    assert problems("duration=6") == [
        "duration: needs a unit (6s, 6m, 6h or 6d?): a bare number is not taken as seconds"
    ]
    (line,) = problems("stack.layers.retrain.every=1.5")
    assert line.startswith("stack.layers.retrain.every: needs a unit (1.5s, 1.5m")
    assert tiny("warmup=0").warmup == 0.0  # zero needs no unit


def test_every_layer_without_a_trigger_gets_its_default():
    layers = "{retrain: {}, nearline_embeddings: {}, realtime_features: {}, session_context: {}, "
    scenario = tiny(f"stack.layers={layers}profile_memory: {{}}, bandit: {{}}}}")
    assert {name: layer.every for name, layer in scenario.stack.layers.active().items()} == {
        "retrain": 86400.0,
        "nearline_embeddings": 300.0,
        "realtime_features": None,
        "session_context": None,
        "profile_memory": 86400.0,
        "bandit": 60.0,
    }


def test_a_periodic_layer_faster_than_a_second_is_refused_not_left_to_hang():
    (line,) = problems("stack.layers.retrain.every=1ms")
    assert line.startswith("stack.layers.retrain: every 1ms is shorter than 1s: each periodic")
    assert line.endswith("for updates on every event use continuous: true")


def test_switching_policy_by_name_drops_the_old_policys_params_with_a_note():
    scenario, notes = load_scenario_with_notes("quickstart", ["stack.policy.name=random"])
    assert scenario.stack.policy.name == "random" and scenario.stack.policy.params == {}
    (note,) = notes
    assert (
        "stack.policy.params dim, half_life belonged to 'embedding' and were dropped "
        "({'dim': 16, 'half_life': '3d'})" in note
    )
    assert note in scenario.description
    # params set with the new name are kept, the old ones still go
    switched = load_scenario("quickstart", ["stack.policy.name=popular", "stack.policy.params.x=1"])
    assert switched.stack.policy.params == {"x": 1}
    given = load_scenario("quickstart", ["stack.policy={name: embedding, params: {dim: 8}}"])
    assert given.stack.policy.params == {"dim": 8}
    same, notes = load_scenario_with_notes("quickstart", ["stack.policy.name=embedding"])
    assert same.stack.policy.params == {"dim": 16, "half_life": "3d"} and notes == []


def test_a_grid_over_policies_gives_each_its_own_defaults():
    scenario = load_scenario(
        "quickstart", ["variants={grid: {stack.policy.name: [embedding, random, popular]}}"]
    )
    _, _, plans = plan_runs(scenario)
    params = {plan.variant: plan.scenario.stack.policy.params for plan in plans}
    assert params == {
        "policy.name=embedding": {"dim": 16, "half_life": "3d"},
        "policy.name=random": {},
        "policy.name=popular": {},
    }


def test_intervention_times_may_count_from_the_end_of_warm_up():
    scenario = tiny(
        "warmup=2h",
        "duration=8h",
        "interventions=[{kind: catalog_burst, at: +3h, items: 5}, "
        "{kind: catalog_burst, at: +25%, items: 5}, {kind: catalog_burst, at: 1h, items: 5}]",
    )
    assert [event.at for event in scenario.interventions] == [5 * 3600.0, 4 * 3600.0, 3600.0]
    # the resolved scenario writes absolute times, and reads back the same
    again = parse_scenario(scenario.model_dump(mode="json", by_alias=True))
    assert [event.at for event in again.interventions] == [5 * 3600.0, 4 * 3600.0, 3600.0]


def test_a_packaged_sweep_shrinks_without_touching_its_interventions():
    scenario = load_scenario("cadence-sweep", ["duration=12h", "warmup=6h"])
    assert [event.at for event in scenario.interventions] == [9 * 3600.0] * 2  # a quarter in
    assert len(plan_runs(scenario)[2]) == 14 * scenario.replications


def test_every_late_intervention_is_named_in_one_pass():
    assert problems(  # tiny: warmup 1h, duration 4h
        "interventions=[{kind: catalog_burst, at: +4h, items: 5}, "
        "{kind: catalog_burst, at: 1h, items: 5}, {kind: catalog_burst, at: 6h, items: 5}]"
    ) == [
        f"interventions.{index}.at: {at} from the start is not before the end of the run (5h = "
        "warmup 1h + duration 4h)"
        for index, at in ((0, "5h"), (2, "6h"))
    ]
    (line,) = problems("interventions=[{kind: catalog_burst, at: +100%, items: 5}]")
    assert line.startswith("interventions.0.at: expected a time after warm-up such as '+12h'")


def test_out_of_range_number_names_path_rule_and_value():
    assert problems("world.users.count=-5") == [
        "world.users.count: Input should be greater than or equal to 1 (got -5)"
    ]


def test_wrong_type_names_path_and_value():
    (line,) = problems("world.users.count=many")
    assert line.startswith("world.users.count: Input should be a valid integer")
    assert "'many'" in line


def test_nan_is_refused():
    (line,) = problems("world.behavior.noise_sd=.nan")
    assert line.startswith("world.behavior.noise_sd:")


def test_probability_above_one():
    (line,) = problems("world.behavior.churn_prob=1.5")
    assert line.startswith("world.behavior.churn_prob: Input should be less than or equal to 1")


def test_literal_choice():
    (line,) = problems("world.users.sessions_per_day.distribution=poisson")
    assert "world.users.sessions_per_day.distribution" in line and "'poisson'" in line


def test_catalog_smaller_than_slate():
    (line,) = problems("world.catalog.items=3")
    assert "world.catalog.items (3) must be at least stack.slate_size (5)" in line


def test_tick_longer_than_fastest_feedback_path_is_refused_with_the_reason():
    (line,) = problems("tick=1m")
    assert "tick 1m is longer than the fastest feedback path" in line
    assert "world.users.session.gap_min = 10s" in line


def test_tick_zero_is_refused():
    (line,) = problems("tick=0s")
    assert "tick must be positive" in line


def test_explicit_kinds_need_a_weight():
    (line,) = problems(
        "world.behavior.explicit_kinds={dismiss: 0, not_interested: 0, thumbs_down: 0, "
        "block_creator: 0}"
    )
    assert "at least one explicit kind needs a positive weight" in line


def test_unknown_policy_suggests_the_nearest():
    (line,) = problems("stack.policy.name=embeding")
    assert line.startswith(
        "stack.policy.name: unknown policy 'embeding'; did you mean 'embedding'?"
    )


def test_policy_target_that_does_not_import():
    (line,) = problems("stack.policy.name=no_such_module_x:Ranker")
    assert line.startswith("stack.policy.name: cannot import 'no_such_module_x'")


def test_policy_target_missing_attribute():
    (line,) = problems("stack.policy.name=policies.builtin:Nope")
    assert line == "stack.policy.name: 'policies.builtin' has no attribute 'Nope'"


def test_unknown_policy_parameter():
    assert problems("stack.policy.params.dimm=3") == ["stack.policy.params.dimm: unknown parameter"]


def test_invalid_policy_parameter():
    (line,) = problems("stack.policy.params.dim=0")
    assert line.startswith("stack.policy.params.dim: Input should be greater than or equal to 1")


def test_parameters_for_a_policy_without_parameters():
    assert problems("stack.policy={name: random, params: {x: 1}}") == [
        "stack.policy.params.x: unknown parameter"
    ]


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstack:\n  policy: [random\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    (line,) = caught.value.problems
    assert line.startswith(f"{path}:4:1: YAML syntax error")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ScenarioError, match="the file is empty"):
        load_scenario(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="a scenario is a mapping of sections, got list"):
        load_scenario(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError, match="not UTF-8 text"):
        load_scenario(path)


def test_oversized_file(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("#" * 1_000_001)
    with pytest.raises(ScenarioError, match="scenarios are limited to"):
        load_scenario(path)


def test_missing_file():
    with pytest.raises(ScenarioError, match="nope.yaml: no such file"):
        load_scenario("nope.yaml")


def test_unknown_packaged_name_suggests_nearest():
    with pytest.raises(ScenarioError, match="did you mean 'quickstart'"):
        load_scenario("quikstart")


def test_override_without_equals():
    with pytest.raises(ScenarioError, match="expected dotted.path=value"):
        load_scenario("quickstart", ["world.users.count"])


def test_override_through_a_scalar():
    with pytest.raises(ScenarioError, match="--set seed.x: seed is 7, not a section"):
        load_scenario("quickstart", ["seed.x=1"])


def test_overrides_are_validated_like_the_file():
    scenario = load_scenario("quickstart", ["world.users.count=2000", "duration=6h"])
    assert scenario.world.users.count == 2000
    assert scenario.duration == 6 * 3600


def test_an_unknown_key_that_looks_like_a_pydantic_tag_is_named_as_written():
    # found by the fuzz test: keys such as '[' or 'int' used to crash the error formatter
    for key in ("[", "int", "literal['x']"):
        with pytest.raises(ScenarioError) as caught:
            parse_scenario({"name": "x", "duration": "1h", "stack": {"policy": "random"}, key: 1})
        assert caught.value.problems == [f"{key}: unknown key"]


def test_command_line_overrides_are_named_in_the_description():
    """The file's description was written for its own values: a run changed by ``--set`` says
    so, and the resolved scenario loads back unchanged."""
    from sim.scenario.loader import load_scenario, parse_scenario

    plain = load_scenario("quickstart")
    changed = load_scenario("quickstart", ["duration=2h", "world.users.count=100"])
    # what changed first: the report's first screen shows the first paragraph
    assert changed.description == (
        "Changed on the command line: duration=2h; world.users.count=100.\n\n"
        + plain.description.rstrip()
    )
    quick = load_scenario("quickstart", ["duration=2h"], quick=True)
    assert quick.description.startswith("Quick configuration (--quick), not the scenario's own")
    assert "\n\nChanged on the command line: duration=2h.\n\n" in quick.description
    again = parse_scenario(changed.model_dump(mode="json"), "resolved")
    assert again.description == changed.description
