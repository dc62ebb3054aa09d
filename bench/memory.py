"""Peak memory against simulated days, with the event log in memory and on disk.

    python bench/memory.py [--users 20000] [--days 1 3 7]

Each configuration runs in a fresh process (peaks do not carry over) through the same path as
``recloop run``: simulate, measure, write the results directory. Reported per phase: the peak of
anonymous resident memory (what the process holds; file-backed pages of an on-disk log are the
operating system's cache, dropped under pressure) while serving, and while measuring and writing.
Prints a Markdown table and writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from record import RESULTS, write_results

MIB = 2**20


def overrides(users: int, days: float, event_log: str) -> list[str]:
    """The quickstart world, retrained hourly on a one-day window (a bounded training set)."""
    return [
        f"world.users.count={users}",
        f"duration={days}d",
        "warmup=0s",
        "stack.layers.retrain.window=1d",
        f"output.event_log={event_log}",
    ]


def measure_one(users: int, days: float, event_log: str) -> dict[str, float]:
    """Run one configuration in this process; peaks in MiB."""
    from sim.loader import load_scenario
    from sim.memory import PeakMemory
    from sim.metrics import measure
    from sim.results import write_run
    from sim.runner import run_scenario

    scenario = load_scenario("quickstart", overrides(users, days, event_log))
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
        "event_log": event_log,
        "simulated_days": days,
        "events": len(result.events),
        "requests": result.summary["requests"],
        "serving_peak_mib": round(serving.anon_bytes / MIB),
        "measuring_peak_mib": round(measuring.anon_bytes / MIB),
        "file_cache_peak_mib": round(max(serving.file_bytes or 0, measuring.file_bytes or 0) / MIB),
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=float, nargs="+", default=[1.0, 3.0, 7.0])
    parser.add_argument("--event-log", nargs="+", default=["memory", "disk"])
    parser.add_argument(
        "--child", nargs=3, metavar=("USERS", "DAYS", "EVENT_LOG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        users, days, event_log = args.child
        print(json.dumps(measure_one(int(users), float(days), event_log)))
        return

    RESULTS.mkdir(exist_ok=True)
    rows = []
    print("| event log | days | events | serving peak | measuring + writing peak | wall |")
    print("|---|---:|---:|---:|---:|---:|")
    for event_log in args.event_log:
        for days in args.days:
            child = [sys.executable, __file__, "--child", str(args.users), str(days), event_log]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"| {event_log} | {days:g} | {row['events']:,} | {row['serving_peak_mib']:,} MiB "
                f"| {row['measuring_peak_mib']:,} MiB | {row['wall_seconds']} s |",
                flush=True,
            )
    scenario = "quickstart, retrain hourly on a 1-day window, no warm-up"
    write_results("memory", args.users, scenario, rows)


if __name__ == "__main__":
    main()
