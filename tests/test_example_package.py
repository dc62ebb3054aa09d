"""The example policy package installs, registers through its entry point, and runs by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_policy"


def test_the_example_package_installs_and_runs_by_its_entry_point_name(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],  # fmt: skip
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    recloop = [sys.executable, "-m", "sim.cli"]
    listing = subprocess.run(
        [*recloop, "policies"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    line = next(row for row in listing.stdout.splitlines() if row.startswith("recent-dislikes"))
    assert "entry point recent_dislikes:RecentDislikes" in line
    assert "package recloop-recent-dislikes" in line
    run = subprocess.run(
        [
            *recloop,
            "run",
            str(EXAMPLE / "scenario.yaml"),
            "-q",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "duration=3h",
            "--set",
            "world.users.count=500",
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "report.html").is_file()


USER_MODEL = ROOT / "examples" / "custom_user_model"


def installed(package: Path, tmp_path: Path) -> dict[str, str]:
    """``pip install`` the example ``package`` into a folder of ``tmp_path``; the environment
    that imports it, and recloop from this checkout (``ROOT`` after the package)."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(package)],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]))


def test_the_example_user_model_installs_passes_its_check_and_runs_by_name(tmp_path):
    """``pip install`` the package; ``recloop users`` lists it from its entry point; it passes
    ``check_user_model``; its scenario names it ``topic-fatigue`` and runs. recloop itself is
    imported from this checkout (``ROOT`` after the package on ``PYTHONPATH``)."""
    env = installed(USER_MODEL, tmp_path)
    recloop = [sys.executable, "-m", "sim.cli"]
    listing = subprocess.run(
        [*recloop, "users"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    line = next(row for row in listing.stdout.splitlines() if row.startswith("topic-fatigue"))
    assert "entry point topic_fatigue:TopicFatigue" in line
    assert "package recloop-topic-fatigue" in line
    check = (
        "from users.checks import check_user_model\n"
        "from topic_fatigue import TopicFatigue\n"
        "report = check_user_model(TopicFatigue, {'per_impression': 0.4})\n"
        "print(report)\n"
        "raise SystemExit(0 if report.ok else 1)\n"
    )
    checked = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "check_user_model(topic_fatigue:TopicFatigue): passed" in checked.stdout
    run = subprocess.run(
        [*recloop, "run", str(USER_MODEL / "scenario.yaml"), "-q", "--out", str(tmp_path / "out"),
         "--set", "duration=2h", "--set", "warmup=1h", "--set", "world.users.count=500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "report.html").is_file()


def test_the_example_user_model_without_fatigue_is_the_parametric_world(monkeypatch):
    """At ``per_impression: 0`` the example's users are the parametric world's, event for event;
    with fatigue, later slates of a session are clicked less."""
    import numpy as np

    from sim.domain import Kind
    from sim.serving.runner import run_scenario
    from tests.conftest import tiny

    monkeypatch.syspath_prepend(str(USER_MODEL))
    model = "world.model={name: topic_fatigue:TopicFatigue, params: {per_impression: %s}}"
    rested, parametric = run_scenario(tiny(model % 0)), run_scenario(tiny())
    for name, column in parametric.events.columns().items():
        np.testing.assert_array_equal(rested.events.columns()[name], column, err_msg=name)
    tired = run_scenario(tiny(model % 2)).events
    clicks = [(events.kind == Kind.CLICK).sum() for events in (parametric.events, tired)]
    assert clicks[1] < 0.9 * clicks[0]


LAYER = ROOT / "examples" / "custom_layer"


def test_the_example_layer_installs_passes_its_check_and_runs_by_name(tmp_path):
    """``pip install`` the package; ``recloop layers`` lists it from its entry point; it passes
    ``check_layer``; its scenario names it ``moderation`` and runs. recloop itself is imported
    from this checkout (``ROOT`` after the package on ``PYTHONPATH``)."""
    env = installed(LAYER, tmp_path)
    recloop = [sys.executable, "-m", "sim.cli"]
    listing = subprocess.run(
        [*recloop, "layers"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    line = next(row for row in listing.stdout.splitlines() if row.startswith("moderation "))
    assert "entry point moderation_filter:ModerationFilter" in line
    assert "package recloop-moderation" in line
    check = (
        "from sim.serving.layers.checks import check_layer\n"
        "from moderation_filter import ModerationFilter\n"
        "report = check_layer(ModerationFilter, {'reports': 2}, target='moderation')\n"
        "print(report)\n"
        "raise SystemExit(0 if report.ok else 1)\n"
    )
    checked = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "check_layer(moderation): passed" in checked.stdout
    run = subprocess.run(
        [*recloop, "run", str(LAYER / "scenario.yaml"), "-q", "--out", str(tmp_path / "out"),
         "--set", "duration=2h", "--set", "warmup=1h", "--set", "world.users.count=500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(
        (tmp_path / "out" / "variants" / "00-default" / "r0" / "summary.json").read_text()
    )
    assert summary["layers"]["moderation"]["updates"] == 12  # every 10m for the 2h measured
