"""Faults and misuse found by probing (issue 23): each ends in one clear line, and a fault in one
run fails that run, not the process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.cli import main

BROKEN_MODULES = {
    "probe_syntax": "def f(:\n",
    "probe_raises": "raise RuntimeError('boom at import')\n",
    "probe_exits": "import sys\nsys.exit(3)\n",
    "probe_init": (
        "from policies.builtin import RandomPolicy\n"
        "class P(RandomPolicy):\n"
        "    def __init__(self, params, seed):\n"
        "        raise ValueError('no')\n"
    ),
    "probe_rank_exits": (
        "import sys\n"
        "from policies.builtin import RandomPolicy\n"
        "class P(RandomPolicy):\n"
        "    def rank(self, requests, view):\n"
        "        sys.exit(0)\n"
    ),
}
SMALL = ["--set", "world.users.count=100", "--set", "duration=1h", "--set", "warmup=0s"]


@pytest.fixture
def probes(tmp_path, monkeypatch):
    for name, text in BROKEN_MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.chdir(tmp_path)  # found in the current directory
    yield tmp_path


@pytest.mark.parametrize(
    "target, message",
    [
        ("os:system", "'os:system' is not a policy (builtin_function_or_method without a rank"),
        ("builtins:dict", "'builtins:dict' is not a policy (class dict without a rank method)"),
        ("types:SimpleNamespace", "is not a policy (class SimpleNamespace without a rank"),
        ("probe_syntax:P", "importing 'probe_syntax' failed: SyntaxError: invalid syntax ("),
        ("probe_raises:P", "importing 'probe_raises' failed: RuntimeError: boom at import"),
        ("probe_exits:P", "importing 'probe_exits' failed: it called sys.exit(3)"),
        ("probe_init:P", "stack.policy: creating 'probe_init:P' failed: ValueError: no"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_policy_that_cannot_load_is_one_line_and_exit_2(probes, capsys, target, message, command):
    arguments = [command, "quickstart", "--set", f"stack.policy={target}", *SMALL]
    if command == "run":
        arguments += ["--out", str(probes / "out"), "-q"]
    assert main(arguments) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and message in errors[0], errors


def test_a_policy_calling_sys_exit_fails_its_run_and_the_sweep_goes_on(probes, capsys):
    arguments = ["run", "quickstart", "--set", "stack.policy=probe_rank_exits:P", *SMALL]
    assert main([*arguments, "--out", str(probes / "single"), "-q"]) == 2
    assert "policy 'probe_rank_exits:P' failed in rank at simulated time" in capsys.readouterr().err
    out = probes / "sweep"
    code = main([*arguments, "--set", "replications=2", "--out", str(out)])
    err = capsys.readouterr().err
    for replication in (0, 1):  # both runs ran, and failed alone
        assert f"run default r{replication} failed: policy 'probe_rank_exits:P'" in err
    assert code == 1, "a sweep with failed runs is not a success"
    summary = json.loads((out / "summary.json").read_text())
    assert [run["replication"] for run in summary["failed_runs"]] == [0, 1]


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_a_scenario_path_that_is_not_a_file_says_what_it_is(tmp_path, capsys, kind):
    import os

    path = {"directory": tmp_path, "fifo": tmp_path / "pipe", "device": "/dev/zero"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    assert main(["validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    what = "a directory" if kind == "directory" else "not a regular file"
    assert line == (
        f"recloop: error: {path}: is {what}"
        + ("" if kind == "directory" else " (a device, FIFO or socket)")
        + "; a scenario is a YAML file"
    )  # the path once, not twice


def test_set_values_are_held_to_the_alias_bomb_bound(capsys):
    levels = ["&a [1,1,1,1,1,1,1,1,1]"] + [
        f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg", strict=True)
    ]
    bomb = f"description=[{', '.join(levels)}, [{', '.join(['*g'] * 9)}]]"  # 9^8 values
    assert main(["validate", "quickstart", "--set", bomb]) == 2
    assert "expands to more than 1,000,000 values through YAML aliases" in capsys.readouterr().err


def test_a_union_error_names_the_member_meant_and_no_internal_path(capsys):
    canary = "stack.layers.retrain.rollout={canary: {fraction: 2, for: 1h}}"
    assert main(["validate", "quickstart", "--set", canary]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "recloop: error: quickstart: stack.layers.retrain.rollout.canary.fraction: Input should "
        "be less than 1 (got 2)"
    ]


@pytest.mark.parametrize("field", ["name", "interventions"])
def test_names_and_labels_with_control_characters_are_refused(capsys, field):
    value = {
        "name": "name=a\x1b[31mred",
        # YAML's own escape for ESC: the label holds a terminal title sequence
        "interventions": 'interventions=[{kind: catalog_burst, at: 1h, label: "a\\e]0;x"}]',
    }[field]
    assert main(["validate", "quickstart", "--set", value]) == 2
    err = capsys.readouterr().err
    assert "must not contain control characters (found \\x1b)" in err
    assert "\x1b" not in err  # echoed escaped, never raw


TINY_RUN = ["--set", "world.users.count=100", "--set", "duration=30m", "--set", "warmup=0s", "-q"]


def test_out_never_mixes_two_scenarios(tmp_path, capsys):
    out = tmp_path / "results"
    sweep = ["--set", "variants={grid: {stack.layers.retrain.every: [20m, 1h]}}"]
    assert main(["run", "quickstart", *TINY_RUN, *sweep, "--out", str(out)]) == 0
    assert len(list((out / "variants").iterdir())) == 2
    # another scenario is refused, and nothing of the first is touched
    other = ["run", "layers-tour", *TINY_RUN, "--out", str(out)]
    assert main(other) == 2
    assert (
        "holds the results of another scenario ('quickstart'); choose a fresh --out, or add "
        "--force" in capsys.readouterr().err
    )
    assert len(list((out / "variants").iterdir())) == 2
    # --force replaces them whole: no variant folder of the first is left among the new
    assert main([*other, "--force"]) == 0
    assert [p.name for p in (out / "variants").iterdir()] == ["00-default"]
    # the same scenario again (a re-run) replaces its own results without --force
    assert main(["run", "layers-tour", *TINY_RUN, "--out", str(out)]) == 0
    # a folder recloop did not write is refused
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["run", "quickstart", *TINY_RUN, "--out", str(foreign)]) == 2
    assert "not empty and not a recloop results directory" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found += [int(child) for child in children]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc (Linux)")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_every_worker_at_once_and_counts_true(tmp_path, stop):
    from tests.test_reliability import SWEEP, start, wait_for_runs, write

    out = tmp_path / "out"
    process = start(
        ["run", str(write(tmp_path, SWEEP)), "--out", str(out), "-q", "--workers", "2"], tmp_path
    )
    wait_for_runs(out, 1, process)
    workers = _children(process.pid)
    assert workers, "the sweep runs on worker processes"
    sent = time.monotonic()
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    deadline = sent + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "a worker outlived the sweep by 10 s"
    assert process.returncode == 130 and "Traceback" not in err, err
    finished = len(list((out / "variants").glob("*/r*/summary.json")))
    assert f"interrupted; {finished} of 8 runs are finished" in err, err
    assert not list(out.rglob(".*.tmp"))


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB filesystem, full long before a run's event log is: a real ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_fails_cleanly_and_leaves_a_resumable_directory(small_disk, workers):
    out = small_disk / "out"
    arguments = ["run", "quickstart", *TINY_RUN, "--set", "output.event_log=disk"]
    arguments += ["--set", "replications=2", "--workers", str(workers), "--out", str(out)]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "recloop"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
    assert done.returncode != -signal.SIGBUS
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors and all("cannot reserve" in line and "No space left" in line for line in errors)
    assert (out / "scenario.yaml").is_file()  # resumable: recloop run --resume finds its plan
    assert not list(out.rglob(".*.tmp"))


def test_damaged_results_files_are_one_line_and_a_damaged_run_is_run_again(tmp_path, capsys):
    out = tmp_path / "results"
    sweep = ["--set", "replications=2"]
    assert main(["run", "quickstart", *TINY_RUN, *sweep, "--out", str(out)]) == 0
    runs = out / "runs.parquet"
    runs.write_bytes(runs.read_bytes()[:100])  # truncated after it was written
    assert main(["report", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"recloop: error: {runs}: unreadable (")
    # a run whose summary.json is damaged is run again on --resume; the other is kept
    damaged = out / "variants" / "00-default" / "r1" / "summary.json"
    kept = out / "variants" / "00-default" / "r0" / "summary.json"
    damaged.write_text('{"row": ')
    kept_mtime = kept.stat().st_mtime_ns
    (out / "summary.json").unlink()  # as if the sweep had been interrupted
    assert main(["report", str(out)]) == 2
    assert f"an unfinished sweep; finish it with recloop run --resume {out}" in (
        capsys.readouterr().err
    )
    assert main(["run", "--resume", str(out), "-q"]) == 0
    assert json.loads(damaged.read_text())["row"]["replication"] == 1
    assert kept.stat().st_mtime_ns == kept_mtime


def test_thousands_of_bad_keys_are_summed_up_after_the_first_fifty(tmp_path, capsys):
    keys = "\n".join(f"bogus_{index}: 1" for index in range(5000))
    path = tmp_path / "many.yaml"
    path.write_text(f"name: many\nduration: 1h\nstack: {{policy: random}}\n{keys}\n")
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 51 and lines[-1].endswith("... and 4,950 more problems")


def test_resuming_a_finished_sweep_changes_nothing_and_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "quickstart", *TINY_RUN, "--set", "replications=2", "--out", str(out)]) == 0
    before = (out / "summary.json").read_bytes()
    assert main(["run", "--resume", str(out)]) == 0
    assert f"{out} is finished (2 runs, none failed): nothing to resume" in capsys.readouterr().err
    assert (out / "summary.json").read_bytes() == before  # its wall time included
