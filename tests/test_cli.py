"""The ``recloop`` command as a user runs it: results on disk, clear errors, exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from reports.results import read_events, read_run_summary, run_folder
from sim.cli import main, scenario_schema
from sim.scenario.loader import load_scenario, packaged_scenarios
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


class ExplodingPolicy:
    """A custom policy that fails in rank, to check the error a user gets."""

    name = "exploding"

    def __init__(self, params=None, seed=0):
        pass

    def rank(self, requests, view):
        raise RuntimeError("boom")


def write_tiny(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def test_run_writes_a_results_directory_pandas_can_read(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["run", str(write_tiny(tmp_path)), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        f"results: {out}",
        f"report: {out / 'report.html'}",
    ]
    summary = read_run_summary(out)
    events = read_events(out).to_pandas()
    layers = pd.read_parquet(out / "layers.parquet")
    assert set(layers.variant) == {"default"} and set(layers.replication) == {0}
    assert summary["impressions"] == int(
        (events.time >= 3600).sum() - (events.kind == "abandon")[events.time >= 3600].sum()
    )
    assert summary["ctr"] == round(summary["clicks"] / summary["impressions"], 6)
    assert set(events.kind.unique()) <= {
        "impression",
        "click",
        "skip",
        "short_dwell",
        "dismiss",
        "not_interested",
        "thumbs_down",
        "block_creator",
        "abandon",
    }
    assert list(layers.version) == list(range(1, len(layers) + 1))
    assert summary["tick_seconds"] == 10.0 and summary["timing_error_bound_seconds"] == 0.0
    assert summary["recloop_version"] != "unknown"
    # the resolved scenario loads back to the same scenario
    assert load_scenario(out / "scenario.yaml") == load_scenario(tmp_path / "tiny.yaml")
    assert load_scenario(run_folder(out) / "scenario.yaml") == load_scenario(tmp_path / "tiny.yaml")
    assert not list(out.rglob("*.tmp"))
    assert (out / "summary.json").stat().st_mode & 0o044 == 0o044  # readable by others


def test_run_respects_output_events_false(tmp_path):
    out = tmp_path / "r"
    stale = out / "variants" / "00-default" / "r0" / "events.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    (out / "scenario.yaml").write_text("name: tiny\n")  # an earlier run of the same scenario
    path = write_tiny(tmp_path, output={"events": False})
    assert main(["run", str(path), "--out", str(out), "-q"]) == 0
    assert run_folder(out) == stale.parent
    assert not stale.exists()
    assert "events.parquet" not in read_run_summary(out)["files"]


def test_set_overrides_apply_to_the_run(tmp_path):
    out = tmp_path / "r"
    code = main(
        [
            "run",
            str(write_tiny(tmp_path)),
            "-q",
            "--out",
            str(out),
            "--set",
            "world.users.count=150",
            "--set",
            "duration=1h",
        ]
    )
    assert code == 0
    summary = read_run_summary(out)
    assert summary["users"] == 150 and summary["simulated"] == "1h"


def test_bad_scenario_exits_2_with_one_line_per_problem(tmp_path, capsys):
    path = write_tiny(tmp_path, duration="soon", stack={"polcy": "random"})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(err) == [
        "recloop: error: duration: expected a duration such as '150ms', '30s', '5m', '2h', "
        "'1d', '1w' or '1mo', got 'soon'",
        "recloop: error: stack.polcy: unknown key; did you mean 'policy'?",
        "recloop: error: stack.policy: required but missing",
    ]
    assert not Path("runs/tiny").exists()


def test_an_unusable_out_path_fails_before_simulating(tmp_path, capsys):
    taken = tmp_path / "a-file"
    taken.write_text("")
    assert main(["run", str(write_tiny(tmp_path)), "--out", str(taken)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"recloop: error: --out {taken}: exists and is not a directory"
    )


def test_failing_policy_names_policy_hook_and_time(tmp_path, capsys):
    path = write_tiny(tmp_path, stack={"policy": "tests.test_cli:ExplodingPolicy", "slate_size": 5})
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "policy 'exploding' failed in rank at simulated time" in err
    assert "RuntimeError: boom" in err
    assert "Traceback" not in err


def test_validate_reports_ok_and_problems(tmp_path, capsys):
    good = write_tiny(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nduration: 1h\nstack: {policy: random, slate_size: 0}\n")
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert f"{good}: ok" in captured.out
    assert (
        f"recloop: error: {bad}: stack.slate_size: Input should be greater than or equal to 1"
        in captured.err
    )


def test_schema_is_json_schema_and_the_shipped_copy_is_current(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["title"] == "recloop scenario"
    assert {"name", "duration", "stack"} <= set(printed["required"])
    shipped = json.loads((ROOT / "scenarios" / "scenario.schema.json").read_text())
    assert shipped == scenario_schema(), "run `make schema` to regenerate the shipped schema"


def test_every_packaged_scenario_validates(capsys):
    assert main(["scenarios"]) == 0
    listing = capsys.readouterr().out.split("\n\n", 1)[1]  # after the header
    entries = re.findall(r"^(\S+)  \((quick[^,]+), (full[^)]+)\)\n((?:    .*\n)+)", listing, re.M)
    names = [name for name, *_ in entries]
    assert names == sorted(packaged_scenarios()) and "quickstart" in names
    for _, _, _, sentence in entries:  # one full sentence each
        assert " ".join(sentence.split()).endswith(".")
    assert main(["validate", *names]) == 0


def test_console_script_end_to_end(tmp_path):
    """The installed `recloop` command, as a user types it, from another directory."""
    exe = shutil.which("recloop", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = dict(os.environ, PYTHONPATH="")
    done = subprocess.run(
        [
            exe,
            "run",
            "quickstart",
            "--set",
            "world.users.count=300",
            "--set",
            "duration=1h",
            "--set",
            "warmup=0s",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[0] == "results: runs/quickstart"
    assert (tmp_path / "runs" / "quickstart" / "report.html").is_file()
    events = read_events(tmp_path / "runs" / "quickstart").to_pandas()
    assert np.isfinite(events.time).all() and len(events) > 0
    assert "requests/s" in done.stderr


def test_a_failing_run_fails_alone_and_the_sweep_lists_it(tmp_path, capsys):
    cases = {
        "cases": [
            {"label": "fine", "set": {"duration": "1h"}},
            {"label": "broken", "set": {"stack.policy": "tests.test_cli:ExplodingPolicy"}},
        ]
    }
    path = write_tiny(tmp_path, variants=cases)
    out = tmp_path / "r"
    assert main(["run", str(path), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "recloop: error: run broken r0 failed: policy" in err and "boom" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [run["variant"] for run in summary["failed_runs"]] == ["broken"]
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs.status) == ["ok", "failed"]
    assert read_run_summary(out, "fine")["requests"] > 0


def test_policies_with_a_name_lists_its_parameters(capsys):
    assert main(["policies", "torch_ranker"]) == 0
    out = capsys.readouterr().out
    assert "example_age" in out and "False" in out and "learn a bias by the item's age" in out
    assert main(["policies", "random"]) == 0
    assert "no parameters" in capsys.readouterr().out
    assert main(["policies", "no-such-policy"]) == 2
    assert "unknown policy 'no-such-policy'" in capsys.readouterr().err


def test_a_run_off_a_terminal_reports_progress_in_lines(tmp_path, capsys, monkeypatch):
    """Under nohup or into a log file there is no progress bar: a plain line every
    ``LINE_EVERY`` seconds of wall time says how far the run has got."""
    from sim import cli

    monkeypatch.setattr(cli._Progress, "LINE_EVERY", 0.0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "simulated hours after" in x]
    assert len(lines) > 10
    hours = [float(line.split()[1].split("/")[0]) for line in lines]
    assert hours == sorted(hours) and lines[-1].split()[1].endswith("/5.0")


def test_a_long_run_off_a_terminal_reports_each_step_after_serving(tmp_path, capsys, monkeypatch):
    """Measuring a week of a million users takes minutes: off a terminal, a run that has lasted
    ``LINE_EVERY`` says which step it is in, in order, up to writing the report."""
    from sim import cli

    monkeypatch.setattr(cli._Progress, "LINE_EVERY", 0.0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    steps = [line.split(" after ")[0] for line in err.splitlines() if " of wall time" in line]
    steps = [step for step in steps if "simulated hours" not in step]
    assert steps[0] == "recloop: measuring business outcomes"
    assert "recloop: measuring residual exposure" in steps
    assert steps[-2:] == ["recloop: writing the results", "recloop: writing the report"]
    assert err.index("simulated hours after") < err.index("measuring business outcomes")


def test_a_short_run_off_a_terminal_prints_no_step_lines(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    assert "measuring" not in capsys.readouterr().err
