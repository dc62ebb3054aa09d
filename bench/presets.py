"""Wall time of every packaged scenario's quick configuration (and, with ``--full``, of the
scenario itself), run as a user runs it: ``recloop run NAME --quick`` in a fresh process.

    python bench/presets.py [NAME ...] [--full] [--workers 2]

Prints a Markdown table and writes the times to ``scenarios/timings.json`` (shipped with the
scenarios: ``recloop scenarios`` shows them) and ``bench/results/presets.json``. Names default to
every packaged scenario; a scenario not measured this time keeps its earlier figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.scenario.loader import packaged_scenarios  # noqa: E402
from sim.sweeps.results import atomic_write  # noqa: E402

TIMINGS = ROOT / "scenarios" / "timings.json"


def wall_seconds(name: str, quick: bool, workers: int) -> float:
    """Seconds for ``recloop run NAME [--quick]`` to finish, from process start to exit."""
    recloop = Path(sys.executable).parent / "recloop"
    with tempfile.TemporaryDirectory() as out:
        command = [str(recloop), "run", name, "-q", "--workers", str(workers), "--out", out]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, *(["--quick"] if quick else [])], capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}{' --quick' * quick} failed:\n{done.stderr}")
    return round(seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="packaged scenarios (default: all)")
    parser.add_argument("--full", action="store_true", help="also time the full scenarios")
    parser.add_argument("--workers", type=int, default=2, help="as users run sweeps (default 2)")
    args = parser.parse_args()
    names = args.names or sorted(packaged_scenarios())
    timings = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {"scenarios": {}}
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    for name in names:
        entry = timings["scenarios"].setdefault(name, {})
        entry["quick_seconds"] = wall_seconds(name, True, args.workers)
        if args.full:
            entry["full_seconds"] = wall_seconds(name, False, args.workers)
        entry.update(workers=args.workers, measured=time.strftime("%Y-%m-%d"), machine=machine)
        full = entry.get("full_seconds")
        print(f"{name}: quick {entry['quick_seconds']} s, full {full or '-'} s", flush=True)
    text = json.dumps(timings, indent=2, sort_keys=True) + "\n"
    atomic_write(TIMINGS, lambda path: path.write_text(text))
    out = ROOT / "bench" / "results" / "presets.json"
    atomic_write(out, lambda path: path.write_text(text))
    print("\n| scenario | quick | full |\n|---|---:|---:|")
    for name in names:
        entry = timings["scenarios"][name]
        full = entry.get("full_seconds")
        print(f"| {name} | {entry['quick_seconds']:.0f} s | {f'{full:.0f} s' if full else '-'} |")


if __name__ == "__main__":
    main()
