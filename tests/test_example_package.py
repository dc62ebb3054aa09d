"""The example policy package installs, registers through its entry point, and runs by name."""

from __future__ import annotations

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
