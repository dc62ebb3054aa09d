"""Layers as plug-ins: a layer of your own by ``module:Class`` in ``stack.layers``, run with the
built-ins; ``check_layer`` on every built-in and on the example; the errors a scenario gets."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sim.domain import Kind
from sim.errors import ScenarioError
from sim.scenario.spec import Layers
from sim.serving.layers.checks import _versions_problem, _watch, check_layer
from sim.serving.layers.registry import BUILTIN
from sim.serving.layers.runtime import Version
from sim.serving.runner import check_scenario, run_scenario
from tests.conftest import tiny

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_layer"

TALLY = '''
import numpy as np
from sim.serving.layers import BaseLayer

class Tally:
    """Every visible event, counted by kind."""

    def __init__(self):
        self.counts = np.zeros(9, np.int64)

    def describe(self):
        return {"tallied": self.counts.tolist()}


class TallyLayer(BaseLayer):
    """Counts the events it sees, by kind; serving ignores it."""

    incremental = True

    def initial_state(self):
        return Tally()

    def absorb(self, state, events):
        state.counts += np.bincount(events.kind, minlength=9)
'''


@pytest.fixture
def tally_module(tmp_path, monkeypatch):
    (tmp_path / "tally_layer.py").write_text(TALLY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tally_layer:TallyLayer"
    sys.modules.pop("tally_layer", None)


def test_a_layer_from_a_temporary_module_runs_with_the_built_in_layers(tally_module):
    """A plug-in named by ``module:Class`` runs beside the retrain, the real-time features and the
    session context; it absorbs exactly the events visible at its last update (counted by hand
    from the log), and, as serving does not read it, every other column of the event log is
    the same as without it, bit for bit."""
    built_ins = (
        "stack.layers.realtime_features={}",
        "stack.layers.session_context={}",
    )
    tally = f"stack.layers.tally={{name: '{tally_module}', continuous: true, latency: 90s}}"
    scenario = tiny(*built_ins, tally)
    assert list(scenario.stack.layers.active()) == [
        "realtime_features",
        "retrain",
        "session_context",
        "tally",
    ]
    result = run_scenario(scenario)
    plain = run_scenario(tiny(*built_ins))

    versions = [v for v in result.versions if v.layer == "tally"]
    assert versions and all(v.horizon == v.triggered_at - 90 for v in versions)
    last = versions[-1].horizon
    events = result.events
    expected = np.bincount(events.kind[events.time < last], minlength=9)
    assert result.summary["layers"]["tally"]["tallied"] == expected.tolist()

    columns, without = result.events.columns(), plain.events.columns()
    assert set(columns) - set(without) == {"v_tally"}
    for name, column in without.items():
        np.testing.assert_array_equal(columns[name], column, err_msg=name)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_check_layer_passes_for_every_built_in_layer(name):
    report = check_layer(BUILTIN[name])
    assert report.ok, str(report)
    assert len(report.results) == 4


def test_check_layer_passes_for_the_example_and_names_its_target(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from moderation_filter import ModerationFilter

    report = check_layer(ModerationFilter, {"reports": 2})
    assert report.ok, str(report)
    assert str(report).startswith("check_layer(moderation_filter:ModerationFilter): passed")


NOISY = '''
import os
import numpy as np
from sim.serving.layers import Adjustment, BaseLayer

class Shuffle:
    def __init__(self, n_items):
        self.n_items = n_items

    def adjust(self, requests, view):
        seed = int.from_bytes(os.urandom(8), "little")
        return Adjustment(per_item=np.random.default_rng(seed).random(self.n_items) * 100)


class Noisy(BaseLayer):
    """A batch layer whose served state moves items by the operating system's randomness."""

    def compute(self, data):
        return Shuffle(data.catalog.n_items)
'''


def test_check_layer_fails_a_layer_that_is_not_deterministic(tmp_path, monkeypatch):
    (tmp_path / "noisy_layer.py").write_text(NOISY)
    monkeypatch.syspath_prepend(str(tmp_path))
    from noisy_layer import Noisy  # type: ignore[import-not-found]

    report = check_layer(Noisy)
    assert not report.ok
    assert report.results["deterministic under a seed"] == (
        "two runs with the same seed recorded different versions"
    )
    assert report.results["causal: reads no event before time + latency"] is None


def test_the_causality_watch_catches_an_event_read_before_time_plus_latency():
    """An update triggered at 1000 s with a 60 s latency may read events before 940 s only: in
    a batch layer's compute, and in what an incremental layer takes to absorb."""
    given: dict[str, np.ndarray] = {}
    runtime = SimpleNamespace(
        spec=SimpleNamespace(latency=60.0),
        kind=SimpleNamespace(compute=lambda data: "state", incremental=False),
        _take_new=lambda now: (0, 0.0, SimpleNamespace(time=given["times"])),
    )
    late: list[str] = []
    _watch(runtime, late)
    assert runtime.kind.incremental is False  # the rest of the kind is the kind's
    for times in ([100.0, 939.5], [100.0, 940.0, 950.0]):
        given["times"] = np.array(times)
        data = SimpleNamespace(now=1000.0, events=SimpleNamespace(time=given["times"]))
        assert runtime.kind.compute(data) == "state"
        runtime._take_new(1000.0)
    message = "an event at 940.000s read by an update triggered at 1000.000s, latency 60s"
    assert late == [message, message]


def _version(number: int, triggered: float, horizon: float, live: float) -> Version:
    return Version("x", number, triggered, horizon, live, "all", 1, 0.0, 0.0)


def test_the_version_records_are_checked_against_timing_and_served_versions():
    """Triggered at 1000 s with a 60 s latency and a 30 s compute time: a version covers events
    before 940 s, goes live at 1030 s at the earliest, and serves no event before it is live."""
    spec = SimpleNamespace(latency=60.0, compute_time=30.0)
    events = type("Events", (), {})()
    events.time = np.array([10.0, 2000.0, 2100.0])
    events.versions = {"x": np.array([0, 1, 1], np.int32)}
    good = [_version(1, 1000.0, 940.0, 1030.0)]
    assert _versions_problem(events, good, "x", spec) is None
    assert _versions_problem(events, [], "x", spec) == (
        "it published no version in the check's 3 hours"
    )
    early = [_version(1, 1000.0, 950.0, 1030.0)]
    assert "covers events past its trigger minus latency" in _versions_problem(
        events, early, "x", spec
    )
    fast = [_version(1, 1000.0, 940.0, 1010.0)]
    assert "went live before its compute time" in _versions_problem(events, fast, "x", spec)
    late = [_version(1, 1000.0, 940.0, 2050.0)]
    assert _versions_problem(events, late, "x", spec) == (
        "version 1 served an event at 2000.000s, before it went live"
    )
    events.versions = {"x": np.array([0, 2, 2], np.int32)}
    assert _versions_problem(events, good, "x", spec) == (
        "events were served by version 2, which no version record has"
    )


def test_the_moderation_example_never_serves_an_item_after_its_removal_is_live(monkeypatch):
    """Each moderation version removes the items that at least ``reports`` distinct users had
    reported before its horizon (counted here from the event log); no request served after the
    version went live shows any of them."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    layer = (
        "stack.layers.moderation={name: 'moderation_filter:ModerationFilter', "
        "params: {reports: 2, kinds: [thumbs_down, dismiss, not_interested]}, every: 20m, "
        "latency: 10m, compute_time: 5m}"
    )
    result = run_scenario(tiny(layer, "world.behavior.explicit_prob=0.4"))
    events = result.events
    reported = np.isin(events.kind, [Kind.THUMBS_DOWN, Kind.DISMISS, Kind.NOT_INTERESTED])
    removals = 0
    for version in (v for v in result.versions if v.layer == "moderation"):
        assert version.horizon == version.triggered_at - 600
        # the common warm-up's bootstrap is live at once; an update after its compute time
        compute = 300 if version.origin == "update" else 0
        assert version.live_at == version.triggered_at + compute
        before = reported & (events.time < version.horizon) & (events.item >= 0)
        pairs = np.unique(np.stack([events.item[before], events.user[before]]), axis=1)
        items, counts = np.unique(pairs[0], return_counts=True)
        removed = items[counts >= 2]
        served_after = events.item[(events.time >= version.live_at) & (events.item >= 0)]
        assert not np.isin(served_after, removed).any()
        removals = max(removals, removed.shape[0])
    assert removals > 0  # the check above had items to look for


def test_every_built_in_layer_is_a_field_of_stack_layers_in_a_file_of_its_own():
    """The registry's built-ins are the schema's ``stack.layers`` fields, each validated by the
    layer's own ``Params``, and no two share a file."""
    assert set(BUILTIN) == set(Layers.model_fields)
    for name, field in Layers.model_fields.items():
        assert typing.get_args(field.annotation) == (BUILTIN[name].Params, type(None))
    files = {inspect.getsourcefile(cls) for cls in BUILTIN.values()}
    assert len(files) == len(BUILTIN)


def test_a_custom_layer_is_listed_in_the_active_layers_after_the_built_ins():
    layers = Layers.model_validate(
        {"mine": {"name": "a:B", "every": "1h"}, "retrain": {}, "bandit": {"enabled": False}}
    )
    assert list(layers.active()) == ["retrain", "mine"]
    assert layers.active()["mine"].every == 3600.0


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        (
            "stack.layers.retrian={every: 1h}",
            "stack.layers: unknown layer 'retrian'; did you mean 'retrain'? (a layer of your own "
            "needs name: module:Class; recloop layers lists the installed ones)",
        ),
        (
            "stack.layers.Mine={name: 'a:B'}",
            "stack.layers: layer name 'Mine' must be lowercase letters, digits and _, starting "
            "with a letter (it names event-log columns and results rows)",
        ),
        (
            "stack.layers.snooze={name: 'a:B'}",
            "stack.layers: layer name 'snooze' is reserved (the probes' snoozes)",
        ),
        (
            "stack.layers.mine={name: 'a:B', evry: 1h}",
            "stack.layers.mine.evry: unknown key; did you mean 'every'?",
        ),
        (
            "stack.layers.retrain={name: 'a:B'}",
            "stack.layers.retrain.name: unknown key",
        ),
    ],
)
def test_a_layer_section_is_refused_with_one_line_naming_path_and_value(override, problem):
    with pytest.raises(ScenarioError) as caught:
        tiny(override)
    assert caught.value.problems == [problem]


BROKEN = '''
from pydantic import BaseModel, ConfigDict
from sim.serving.layers import BaseLayer

class NotALayer:
    """Has no create method."""

class Counted(BaseLayer):
    """Takes a count."""

    incremental = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        count: int = 1

    def absorb(self, state, events):
        pass
'''


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            "{name: 'nosuch_module_xyz:Layer'}",
            "stack.layers.mine.name: cannot import 'nosuch_module_xyz'",
        ),
        (
            "{name: 'broken_layers:NotALayer'}",
            "stack.layers.mine.name: 'broken_layers:NotALayer' is not a layer (class NotALayer "
            "without a create method)",
        ),
        (
            "{name: 'broken_layers:Counted', params: {count: many}}",
            "stack.layers.mine.params.count: Input should be a valid integer",
        ),
        (
            "{name: 'broken_layers:Counted', params: {cuont: 2}}",
            "stack.layers.mine.params.cuont: unknown parameter",
        ),
        (
            "{name: 'broken_layers:Counted', rollout: {canary: {fraction: 0.1, for: 1h}}}",
            "stack.layers.mine.rollout: the layer's state is updated in place: rollout must be "
            "immediate",
        ),
        (
            "{name: retrain}",
            "stack.layers.mine.name: 'retrain' is a built-in layer: configure it as "
            "stack.layers.retrain",
        ),
        ("{name: moderatoin}", "stack.layers.mine.name: unknown layer 'moderatoin'"),
    ],
)
def test_a_custom_layer_is_checked_before_simulated_time_passes(
    tmp_path, monkeypatch, section, problem
):
    (tmp_path / "broken_layers.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ScenarioError) as caught:
        check_scenario(tiny(f"stack.layers.mine={section}"))
    (line,) = caught.value.problems
    assert line.startswith(problem), line
    sys.modules.pop("broken_layers", None)


def test_recloop_layers_lists_the_built_ins_and_a_plug_ins_parameters():
    recloop = [sys.executable, "-m", "sim.cli"]
    env = {"PYTHONPATH": f"{EXAMPLE}:{ROOT}", "PATH": "/usr/bin:/bin"}
    listing = subprocess.run(
        [*recloop, "layers"], capture_output=True, text=True, check=True, env=env, timeout=120
    ).stdout
    names = [line.split()[0] for line in listing.splitlines()[:-1]]
    assert set(BUILTIN) <= set(names)
    assert "retrain              built-in" in listing
    assert listing.splitlines()[-1] == "or any 'module:Class' as stack.layers.NAME.name"
    own = subprocess.run(
        [*recloop, "layers", "moderation_filter:ModerationFilter"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout
    assert own.splitlines()[1].split()[:2] == ["reports", "3"]
    assert "and in stack.layers.NAME, the runtime's: enabled, every," in own
    bandit = subprocess.run(
        [*recloop, "layers", "bandit"], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert "learning_policy" in bandit and "\n  latency " not in bandit
    assert textwrap.dedent(bandit).startswith("bandit: Layer 0: explore/exploit")


def test_a_layer_next_to_the_scenario_runs_from_another_folder(tmp_path):
    """As for a policy: a layer's module saved beside the scenario is found by its
    ``module:Class`` when the command runs elsewhere, with only recloop on ``PYTHONPATH``."""
    folder, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "tally_layer.py").write_text(TALLY)
    (folder / "scenario.yaml").write_text(
        "name: beside\nduration: 1h\n"
        "world: {users: {count: 100}, catalog: {items: 200, creators: 20}}\n"
        "stack:\n  policy: popular\n  slate_size: 5\n"
        "  layers: {tally: {name: 'tally_layer:TallyLayer', continuous: true}}\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", str(folder / "scenario.yaml"), "-q",
         "--out", str(tmp_path / "out")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    layers = json.loads(
        (tmp_path / "out" / "variants" / "00-default" / "r0" / "summary.json").read_text()
    )["layers"]
    assert layers["tally"]["trigger"] == "continuous" and sum(layers["tally"]["tallied"]) > 0
