"""Writing a benchmark's figures to bench/results/, with the machine they came from."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from sim.results import atomic_write

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
