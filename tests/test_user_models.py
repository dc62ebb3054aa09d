"""User models as plug-ins: module:Class targets, parameters, the conformance suite, the CLI."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from sim.cli import main
from sim.domain import Kind
from sim.errors import ScenarioError, UserModelError
from sim.serving.runner import check_scenario, run_scenario
from tests.conftest import tiny
from users.checks import check_user_model
from users.world import SimulatedWorld

#: A user model as a team would write it, in one file: the cascade model (users scan the slate
#: from the top and stop at their first click; Craswell et al., 2008).
CASCADE = '''
"""Cascade users: they scan a slate from the top and stop at their first click."""

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.domain import Kind, Scope
from users import SimulatedWorld


class CascadeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attraction: float = Field(0.3, gt=0, le=1, description="click chance of an item examined")


class Cascade(SimulatedWorld):
    """Users scan the slate top down and click the first attractive item, then stop."""

    Params = CascadeParams

    def react(self, block, slates):
        attracted = block.slot_uniform[..., 1] < self.params.attraction
        above = np.cumsum(attracted, axis=1) - attracted  # attractive items above each slot
        examined = above == 0
        clicked = examined & attracted
        kind = np.where(clicked, Kind.CLICK, np.where(examined, Kind.SKIP, Kind.IMPRESSION))
        scope = np.where(examined & ~clicked, Scope.ITEM, Scope.NONE)
        dwell = np.where(clicked, 60.0 * np.exp(0.5 * block.slot_normal[..., 1]), 0.0)
        return kind.astype(np.int8), scope.astype(np.int8), dwell.astype(np.float32)
'''
SCENARIO = """
name: cascade
seed: 2
duration: 2h
world:
  users: {count: 300, sessions_per_day: {median: 12}}
  catalog: {items: 200, topics: 5, creators: 20}
  model: {name: my_cascade:Cascade, params: {attraction: 0.4}}
stack: {policy: random, slate_size: 5}
"""


@pytest.fixture
def cascade(tmp_path, monkeypatch):
    """The cascade model saved as ``my_cascade.py`` with a scenario beside it; imported."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_cascade.py").write_text(CASCADE)
    (folder / "scenario.yaml").write_text(SCENARIO)
    monkeypatch.syspath_prepend(str(folder))
    yield folder, importlib.import_module("my_cascade").Cascade
    sys.modules.pop("my_cascade", None)


def test_a_user_model_in_one_file_runs_by_module_class_and_passes_the_check(cascade, tmp_path):
    folder, cls = cascade
    report = check_user_model(cls, {"attraction": 0.4})
    assert report.ok, str(report)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "out"
    assert main(["run", str(folder / "scenario.yaml"), "-q", "--out", str(out)]) == 0
    assert (out / "summary.json").is_file()
    result = run_scenario(tiny("world.model={name: my_cascade:Cascade, params: {attraction: 0.4}}"))
    events = result.events
    shown = events.item >= 0
    k = 5
    kind = events.kind[shown].reshape(-1, k)
    # a cascade: examined slots are a prefix, at most one click, and it ends the scan
    assert ((kind == Kind.CLICK).sum(axis=1) <= 1).all()
    examined = kind != Kind.IMPRESSION
    assert (np.diff(examined.astype(int), axis=1) <= 0).all()
    # the first slot is clicked with the attraction chance
    first = kind[:, 0] == Kind.CLICK
    assert abs(first.mean() - 0.4) < 4 * np.sqrt(0.4 * 0.6 / first.shape[0])


def test_a_model_that_changes_react_alone_says_regret_is_not_measured(cascade):
    result = run_scenario(tiny("world.model=my_cascade:Cascade", "metrics.regret=true"))
    assert result.expected_clicks is None
    assert any("regret is not measured" in note for note in result.summary["notes"])


def test_user_model_params_are_validated_with_their_path(cascade):
    with pytest.raises(ScenarioError, match=r"world.model.params.attractio: unknown parameter"):
        check_scenario(tiny("world.model={name: my_cascade:Cascade, params: {attractio: 1}}"))
    with pytest.raises(ScenarioError, match=r"world.model.params.attraction: .*less than or equal"):
        check_scenario(tiny("world.model={name: my_cascade:Cascade, params: {attraction: 2}}"))
    with pytest.raises(ScenarioError, match="user model 'parametric' takes no parameters"):
        check_scenario(tiny("world.model={name: parametric, params: {x: 1}}"))


class WindowMood(SimulatedWorld):
    """One draw of its own per call, a mood shared by every request answered together: answers
    depend on how requests are batched."""

    def __init__(self, scenario, streams, params=None):
        super().__init__(scenario, streams, params)
        self._rng = np.random.default_rng(0)

    def react(self, block, slates):
        kind, scope, dwell = super().react(block, slates)
        if self._rng.random() < 0.2:  # a bad moment: nobody clicks
            kind[kind == Kind.CLICK] = Kind.SKIP
        return kind, scope, dwell


class WrongShape(SimulatedWorld):
    """Drops the last slot of every slate."""

    def react(self, block, slates):
        kind, scope, dwell = super().react(block, slates)
        return kind[:, :-1], scope[:, :-1], dwell[:, :-1]


class Prescient(SimulatedWorld):
    """Averse to an intervention's topic from the start, before it happens."""

    def react(self, block, slates):
        kind, scope, dwell = super().react(block, slates)
        for event in self.interventions:
            if getattr(event, "kind", None) == "topic_aversion":
                kind[self.catalog.topic[slates] == event.topic] = Kind.SKIP
        return kind, scope, dwell


class Failing(SimulatedWorld):
    def react(self, block, slates):
        raise ValueError("no   table loaded")


@pytest.mark.parametrize(
    "cls, failing, reason",
    [
        (WindowMood, "batching changes speed, not answers", "logged other events"),
        (WrongShape, "answers every slate", "kind has shape"),
        (Prescient, "never reads the future", "acts on an intervention before its time"),
        (Failing, "answers every slate", "failed in respond at simulated time"),
    ],
)
def test_broken_user_models_fail_the_check_that_names_their_fault(cls, failing, reason):
    report = check_user_model(cls)
    assert not report.ok
    (name,) = [check for check in report.results if check.startswith(failing)]
    assert reason in (report.results[name] or ""), str(report)
    with pytest.raises(AssertionError, match="FAILED"):
        report.raise_if_failed()


def test_a_failing_user_model_fails_its_run_naming_model_hook_and_time():
    with pytest.raises(UserModelError) as error:
        run_scenario(tiny("world.model=tests.test_user_models:Failing", "duration=20m"))
    message = str(error.value)
    assert message.startswith("user model 'tests.test_user_models:Failing' failed in respond")
    assert "at simulated time" in message and "ValueError: no table loaded" in message


def test_what_is_not_a_user_model_is_refused_naming_what_it_lacks():
    with pytest.raises(ScenarioError) as error:
        check_scenario(tiny("world.model=tests.test_user_models:NotAModel"))
    assert str(error.value) == (
        "world.model.name: 'tests.test_user_models:NotAModel' is not a user model (class "
        "NotAModel without catalog_view, start, next_request_time, take_requests, items, "
        "session_start_times, expected_clicks); a user model implements sim.domain.UserModel, "
        "e.g. a subclass of users.SimulatedWorld overriding react"
    )
    with pytest.raises(ScenarioError, match="unknown user model 'tabel'; did you mean 'table'"):
        check_scenario(tiny("world.model=tabel"))


class NotAModel:
    def respond(self, batch, slates):
        return None


def test_users_command_lists_the_models_and_their_parameters(cascade, capsys):
    assert main(["users"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("parametric ") and "\ntable " in out and "built-in" in out
    assert "module:Class" in out
    assert main(["users", "my_cascade:Cascade"]) == 0
    out = capsys.readouterr().out
    assert "attraction" in out and "0.3" in out and "click chance of an item examined" in out
    assert main(["users", "no-such-model"]) == 2


def test_the_parametric_world_is_the_default_and_its_yaml_is_unchanged():
    scenario = tiny()
    assert scenario.world.model.name == "parametric" and scenario.world.model.params == {}
    assert tiny("world.model=parametric") == scenario == tiny("world.model={name: parametric}")


def test_a_model_that_reads_no_table_refuses_one(cascade, tmp_path):
    (tmp_path / "items.csv").write_text("item,click_prob\n0,0.1\n1,0.2\n2,0.3\n3,0.4\n4,0.5\n")
    table = f"world.catalog={{table: {tmp_path / 'items.csv'}}}"
    scenario = tiny("world.model=my_cascade:Cascade", table)
    message = "world.catalog.table: user model 'my_cascade:Cascade' draws its world and reads no"
    with pytest.raises(ScenarioError, match=message):
        check_scenario(scenario)
    with pytest.raises(ScenarioError, match=message):
        run_scenario(scenario)
