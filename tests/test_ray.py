"""The Ray backend: a sweep on a local Ray instance (2 CPUs) gives the local results; a run whose
worker dies is re-run alone; resume works the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from policies.builtin import EmbeddingPolicy
from sim.sweeps.plan import plan_runs
from sim.sweeps.sweep import run_plans, run_sweep
from tests.conftest import tiny

ray = pytest.importorskip("ray")

TABLES = ("runs", "propagation", "exposure", "timeseries", "layers")


def assert_same_tables(left: Path, right: Path) -> None:
    for name in TABLES:
        expected = pd.read_parquet(left / f"{name}.parquet")
        got = pd.read_parquet(right / f"{name}.parquet")
        drop = [c for c in expected.columns if "wall_seconds" in c]
        pd.testing.assert_frame_equal(expected.drop(columns=drop), got.drop(columns=drop))


class DiesOnce(EmbeddingPolicy):
    """Kills its own worker process the first time it ranks (a lost node), then behaves."""

    def rank(self, requests, view):
        marker = Path(os.environ["RECLOOP_TEST_MARKER"])
        if not marker.exists():
            marker.write_text("died once")
            os._exit(1)
        return super().rank(requests, view)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray") / "marker"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RECLOOP_TEST_MARKER": str(marker)}},
    )
    os.environ["RECLOOP_TEST_MARKER"] = str(marker)
    yield marker
    ray.shutdown()


def test_a_sweep_on_ray_gives_the_local_results(local_ray, tmp_path):
    scenario = tiny("variants={grid: {stack.layers.retrain.every: [20m, 1h]}}", "duration=2h")
    run_sweep(scenario, tmp_path / "local")
    run_sweep(scenario, tmp_path / "ray", backend="ray")
    assert_same_tables(tmp_path / "local", tmp_path / "ray")


def test_a_lost_worker_reruns_only_its_run_and_resume_skips_finished_runs(local_ray, tmp_path):
    scenario = tiny(
        "stack.policy.name=tests.test_ray:DiesOnce",
        "variants={grid: {stack.layers.retrain.every: [20m, 1h]}}",
        "duration=2h",
    )
    _, _, plans = plan_runs(scenario)
    outcomes = run_plans(plans, tmp_path / "ray", backend="ray")
    assert [outcome.error for outcome in outcomes] == [None, None]
    assert local_ray.read_text() == "died once"  # one worker did die, and its run was redone

    first = plans[0].folder
    finished = (tmp_path / "ray" / first / "summary.json").stat().st_mtime_ns
    (tmp_path / "ray" / plans[1].folder / "summary.json").unlink()  # as if interrupted
    resumed = run_plans(plans, tmp_path / "ray", backend="ray", resume=True)
    assert [outcome.error for outcome in resumed] == [None, None]
    assert (tmp_path / "ray" / first / "summary.json").stat().st_mtime_ns == finished
    assert [o.row for o in resumed][0] == outcomes[0].row


def test_an_adaptive_sweep_on_ray_gives_the_local_results(local_ray, tmp_path):
    rule = "{min: 2, max: 3, until: {metric: ctr, relative_half_width: 0.000001}}"
    scenario = tiny(f"replications={rule}", "duration=1h", "world.users.count=150")
    local = run_sweep(scenario, tmp_path / "local", workers=2)
    on_ray = run_sweep(scenario, tmp_path / "ray", backend="ray", workers=2)
    assert local["replications"] == on_ray["replications"] == 3
    assert local["replication_plan"] == on_ray["replication_plan"]
    assert on_ray["replication_plan"]["stopped"] == "max reached"
    assert_same_tables(tmp_path / "local", tmp_path / "ray")
