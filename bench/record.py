"""Writing a benchmark's figures to bench/results/, with the machine they came from."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sim.sweeps.results import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(name: str, users: int, scenario: str, rows: list[dict[str, Any]]) -> Path:
    """``bench/results/NAME.json``: the rows, the scenario in words, the machine; atomically."""
    RESULTS.mkdir(exist_ok=True)
    report = {"users": users, "scenario": scenario, "machine": machine(), "rows": rows}
    path = RESULTS / f"{name}.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    return path


MIB = 2**20


def measure_in_this_process(overrides: list[str]) -> dict[str, Any]:
    """Run the quickstart with ``overrides`` as ``recloop run`` does (simulate, measure, write a
    results directory) and report its size, wall time and peak memory (MiB) per phase: the peak
    of anonymous resident memory while serving, and while measuring and writing."""
    from sim.measuring.metrics import measure
    from sim.scenario.loader import load_scenario
    from sim.serving.memory import PeakMemory
    from sim.serving.runner import run_scenario
    from sim.sweeps.results import write_run

    scenario = load_scenario("quickstart", overrides)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as folder:
        started = time.perf_counter()
        with PeakMemory() as serving:
            result = run_scenario(scenario, scratch=folder)
        with PeakMemory() as measuring:
            metrics = measure(result)
            write_run(result, metrics, folder, {})
        wall = time.perf_counter() - started
    if serving.anon_bytes is None or measuring.anon_bytes is None:
        raise SystemExit("needs Linux (/proc/self/status) to sample resident memory")
    return {
        "events": len(result.events),
        "requests": result.summary["requests"],
        "serving_wall_seconds": result.summary["wall_seconds"],
        "requests_per_second": result.summary["requests_per_second"],
        "serving_peak_mib": round(serving.anon_bytes / MIB),
        "measuring_peak_mib": round(measuring.anon_bytes / MIB),
        "file_cache_peak_mib": round(max(serving.file_bytes or 0, measuring.file_bytes or 0) / MIB),
        "wall_seconds": round(wall, 1),
    }


def measure_in_fresh_process(script: str, arguments: list[str]) -> dict[str, Any]:
    """Run ``script --child ARGUMENTS`` (which prints one JSON object last) in a new Python, so
    that memory peaks do not carry over between configurations."""
    child = [sys.executable, script, "--child", *arguments]
    done = subprocess.run(child, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
