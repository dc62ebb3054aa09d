"""Issue-6 plug-in API: the conformance suite passes the built-ins and catches broken policies;
per-request policies, oracles and the listing command work."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from policies.base import BasePolicy, PerRequestPolicy, top_k
from policies.checks import check_policy
from policies.registry import BUILTIN
from sim.cli import main
from sim.domain import Requests, View
from sim.serving.runner import run_scenario
from tests.conftest import tiny


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_built_in_passes_the_conformance_suite(name):
    report = check_policy(BUILTIN[name], target=name)
    assert report.ok, str(report)


class Repeats(BasePolicy):
    """Shows item 0 twice in every slate."""

    name = "repeats"

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        return np.zeros((len(requests), requests.k), np.int64)


class Unseeded(BasePolicy):
    """Ignores its seed."""

    name = "unseeded"

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        scores = np.random.default_rng().random((len(requests), view.catalog.n_items))
        return top_k(scores, requests.k)


class FutureReader(BasePolicy):
    """Finds the world up its call stack and avoids topics users will turn against later."""

    name = "future-reader"

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        scores = self._rng.random((len(requests), view.catalog.n_items))
        frame = sys._getframe()
        while frame is not None and not hasattr(frame.f_locals.get("self"), "world"):
            frame = frame.f_back
        if frame is not None:
            for event in frame.f_locals["self"].world.interventions:
                if event.kind == "topic_aversion":
                    scores -= 10.0 * (view.catalog.topic == event.topic)
        return top_k(scores, requests.k)


class OneAtATime(PerRequestPolicy):
    """The newest live items not of topic 0, one request at a time."""

    name = "one-at-a-time"

    def rank_one(self, user, time, k, view):
        candidates = np.flatnonzero(view.catalog.topic != 0)[::-1]
        return candidates[:k]


@pytest.mark.parametrize(
    ("cls", "failing", "reason"),
    [
        (Repeats, "returns k distinct live items per request", "repeats an item"),
        (Unseeded, "is deterministic under a seed", "served different slates"),
        (FutureReader, "never reads the future", "reads something it should not"),
    ],
)
def test_broken_policies_fail_the_check_that_names_their_fault(cls, failing, reason):
    report = check_policy(cls)
    assert not report.ok
    assert reason in (report.results[failing] or ""), str(report)
    with pytest.raises(AssertionError, match="FAILED"):
        report.raise_if_failed()


def test_a_per_request_policy_runs_and_passes():
    report = check_policy(OneAtATime)
    assert report.ok, str(report)
    result = run_scenario(tiny("stack.policy=tests.test_policy_api:OneAtATime", "duration=1h"))
    shown = result.events.item[result.events.item >= 0]
    assert shown.shape[0] and (result.item_topic[shown] != 0).all()


def test_the_oracle_sees_the_truth_and_is_labelled(tmp_path, capsys):
    oracle = run_scenario(tiny("stack.policy=oracle"))
    random = run_scenario(tiny("stack.policy=random"))
    assert oracle.summary["policy_is_oracle"] and not random.summary["policy_is_oracle"]
    assert oracle.summary["ctr"] > 2 * random.summary["ctr"]
    assert any("is an oracle" in note for note in oracle.summary["notes"])
    out = tmp_path / "o"
    overrides = ["stack.policy=oracle", "duration=1h", "world.users.count=200"]
    arguments = [item for override in overrides for item in ("--set", override)]
    assert main(["run", "-q", "--out", str(out), *arguments, "quickstart"]) == 0
    assert "oracle: ranks by ground truth" in (out / "report.html").read_text()


def test_a_policy_never_sees_the_truth_unless_it_is_an_oracle():
    seen = []

    class Peek(BasePolicy):
        name = "peek"

        def rank(self, requests, view):
            seen.append(view.truth)
            return top_k(self._rng.random((len(requests), view.catalog.n_items)), requests.k)

    globals()["Peek"] = Peek
    try:
        run_scenario(tiny("stack.policy=tests.test_policy_api:Peek", "duration=20m", "warmup=0s"))
    finally:
        del globals()["Peek"]
    assert seen and all(truth is None for truth in seen)


def test_policies_command_lists_where_each_comes_from(capsys):
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    for name in (
        "random",
        "popular",
        "embedding",
        "torch_ranker",
        "oracle",
        "river_online",
        "linucb",
    ):
        assert f"\n{name} " in f"\n{out}"
    assert "[oracle]" in out and "built-in" in out and "module:Class" in out


def test_river_online_says_when_its_layer_is_off():
    result = run_scenario(tiny("stack.policy=river_online", "duration=20m"))
    assert any("'online_learning' layer, which is off" in n for n in result.summary["notes"])


LOCAL_POLICY = """
from policies.builtin import RandomPolicy
from helper_next_to_it import LABEL  # a sibling import: the folder is on sys.path


class Local(RandomPolicy):
    name = LABEL
"""
LOCAL_SCENARIO = """
name: local
duration: 20m
warmup: 0s
world: {users: {count: 100}, catalog: {items: 200, creators: 20}}
stack: {policy: my_local_ranker:Local, slate_size: 5}
variants: {grid: {world.users.count: [100, 120]}}
"""


def test_a_policy_next_to_the_scenario_runs_from_another_folder_without_pythonpath(tmp_path):
    """The README's path: save ``my_ranker.py`` beside the scenario, name it ``module:Class``,
    run the scenario from anywhere; the sweep's spawned workers find it too. The console
    script is run with no ``PYTHONPATH``, so neither folder is on ``sys.path`` by accident."""
    import os
    import subprocess
    from pathlib import Path

    folder, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "my_local_ranker.py").write_text(LOCAL_POLICY)
    (folder / "helper_next_to_it.py").write_text('LABEL = "local"\n')
    (folder / "scenario.yaml").write_text(LOCAL_SCENARIO)
    recloop = str(Path(sys.executable).parent / "recloop")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [recloop, "run", str(folder / "scenario.yaml"), "-q", "--workers", "2"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "runs.parquet").is_file()
    # from the policy's own folder, a packaged scenario finds it in the current directory
    done = subprocess.run(
        [recloop, "validate", "quickstart", "--set", "stack.policy=my_local_ranker:Local"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # and where it is not, the error says where it looked
    done = subprocess.run(
        [recloop, "validate", "quickstart", "--set", "stack.policy=my_local_ranker:Local"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        f"cannot import 'my_local_ranker' (No module named 'my_local_ranker'); looked in "
        f"{elsewhere.resolve()}, sys.path" in done.stderr
    )
