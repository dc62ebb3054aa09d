"""The README's scenario examples are valid as written."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sim.loader import load_scenario, parse_scenario
from sim.runner import check_scenario
from sim.sweep import plan_runs

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", README, re.S)]


def test_the_scenario_example_is_valid():
    full = next(block for block in BLOCKS if "name" in block)
    check_scenario(parse_scenario(full))


def test_the_layers_example_is_valid():
    stack = next(block for block in BLOCKS if "name" not in block)["stack"]
    scenario = load_scenario("quickstart")
    data = scenario.model_dump(mode="json", by_alias=True)
    data["stack"] = {**data["stack"], **stack}
    parsed = parse_scenario(data)
    check_scenario(parsed)
    assert set(parsed.stack.layers.active()) == {
        "bandit",
        "realtime_features",
        "nearline_embeddings",
        "retrain",
        "session_context",
        "profile_memory",
        "online_learning",
    }


def test_the_interventions_and_sweep_example_is_valid():
    sweep = next(block for block in BLOCKS if "interventions" in block)
    data = load_scenario("cadence-sweep").model_dump(mode="json", by_alias=True)
    labels, baseline, plans = plan_runs(parse_scenario({**data, **sweep}))
    assert baseline == "retrain 1d · near-line off" and labels[-2:] == ["frozen", "instant"]
    assert len(plans) == 8 * 3


def test_the_write_your_own_policy_example_works_as_copied(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    module = next(block for block in blocks if block.startswith("# my_ranker.py"))
    (tmp_path / "my_ranker.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    check = next(block for block in blocks if "check_policy(AvoidRejected" in block)
    namespace: dict = {}
    exec(check, namespace)  # noqa: S102 - the README's own example
    from policies.checks import check_policy
    from sim.cli import main

    assert check_policy(namespace["AvoidRejected"], {"penalty": 5}).ok
    command = re.search(r"recloop run quickstart --set stack.policy.name=my_ranker\S+ .*", README)
    assert command is not None
    arguments = command.group(0).split()[2:] + [
        "--set",
        "duration=1h",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(["run", "-q", *arguments]) == 0
