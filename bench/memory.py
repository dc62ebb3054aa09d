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
from typing import Any

from record import RESULTS, measure_in_fresh_process, measure_in_this_process, write_results


def overrides(users: int, days: float, event_log: str) -> list[str]:
    """The quickstart world, retrained hourly on a one-day window (a bounded training set)."""
    return [
        f"world.users.count={users}",
        f"duration={days}d",
        "warmup=0s",
        "stack.layers.retrain.window=1d",
        f"output.event_log={event_log}",
    ]


def measure_one(users: int, days: float, event_log: str) -> dict[str, Any]:
    """Run one configuration in this process; peaks in MiB."""
    row = measure_in_this_process(overrides(users, days, event_log))
    return {"event_log": event_log, "simulated_days": days, **row}


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
            row = measure_in_fresh_process(__file__, [str(args.users), str(days), event_log])
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
