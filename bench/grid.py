"""Throughput and peak memory against users, items and simulated days, with every layer on.

    python bench/grid.py [--users 10000 100000] [--items 1000 10000 100000] [--days 1 7]
                         [--max-user-days N] [--event-log auto|memory|disk] [--add]

The quickstart world with every production layer on at realistic cadences (as in
bench/throughput.py, daily retrain), no warm-up. Catalogues of ``--retrieval-from`` items or
more rank through the retrieval stage (FAISS IVF, nprobe 4), where scoring every item stops
paying (bench/catalog.py). Each configuration runs in a fresh process through the same path as
``recloop run`` (simulate, measure, write the results directory; the event log moves to disk
when it would exceed 1 GiB), and reports serving requests/s and the peak of anonymous resident
memory while serving and while measuring. Prints a Markdown table and writes
bench/results/grid.json. ``--max-user-days`` skips configurations of more users x days (a week
of 100,000 users with every layer on would take 10-15 minutes per catalogue size here).
``--event-log disk`` keeps the log out of resident memory whatever its size, so that the serving
peak is the per-user state alone; ``--add`` merges the rows into the existing file, replacing
rows of the same configuration, instead of starting it anew. Every row records its date.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from record import RESULTS, measure_in_fresh_process, measure_in_this_process, write_results
from throughput import overrides

RETRIEVAL = "stack.policy.params.retrieval={index: ivf, nprobe: 4}"


#: The fields that name a configuration: an ``--add`` row replaces a stored row equal on them.
CONFIGURATION = ("users", "items", "simulated_days", "event_log")


def measure_one(
    users: int, items: int, days: float, retrieval: bool, event_log: str
) -> dict[str, Any]:
    settings = overrides(users, items, days, "1d", all_layers=True)
    settings += [RETRIEVAL] * retrieval + [f"output.event_log={event_log}"]
    ranking = "FAISS IVF" if retrieval else "every item"
    row = measure_in_this_process(settings)
    configuration = {"users": users, "items": items, "simulated_days": days, "event_log": event_log}
    return {**configuration, "ranking": ranking, **row, "date": time.strftime("%Y-%m-%d")}


def merged(stored: list[dict[str, Any]], measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``stored`` rows (``event_log`` ``auto`` where they predate it) with ``measured`` ones
    replacing those of the same configuration, in configuration order."""

    def key(row: dict[str, Any]) -> tuple:
        return tuple(row.get(name, "auto") for name in CONFIGURATION)

    rows = {key(row): row for row in stored} | {key(row): row for row in measured}
    return [rows[k] for k in sorted(rows, key=lambda k: (k[2], k[0], k[1], k[3]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--days", type=float, nargs="+", default=[1.0, 7.0])
    parser.add_argument("--retrieval-from", type=int, default=20_000)
    parser.add_argument("--max-user-days", type=float, default=float("inf"))
    parser.add_argument("--event-log", choices=["auto", "memory", "disk"], default="auto")
    parser.add_argument("--add", action="store_true", help="merge into the stored results")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        users, items, days, retrieval, event_log = args.child
        row = measure_one(int(users), int(items), float(days), retrieval == "1", event_log)
        print(json.dumps(row))
        return

    rows = []
    print("| users | items | days | ranking | requests | requests/s | serving peak | measuring |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    for days in args.days:
        for users in args.users:
            for items in args.items:
                if users * days > args.max_user_days:
                    continue
                retrieval = "1" if items >= args.retrieval_from else "0"
                child = [str(users), str(items), str(days), retrieval, args.event_log]
                row = measure_in_fresh_process(__file__, child)
                rows.append(row)
                print(
                    f"| {users:,} | {items:,} | {days:g} | {row['ranking']}, log {args.event_log} "
                    f"| {row['requests']:,} "
                    f"| {row['requests_per_second']:,.0f} | {row['serving_peak_mib']:,} MiB "
                    f"| {row['measuring_peak_mib']:,} MiB |",
                    flush=True,
                )
    scenario = "quickstart, every layer on (daily retrain), no warm-up"
    if args.add and (RESULTS / "grid.json").exists():
        rows = merged(json.loads((RESULTS / "grid.json").read_text())["rows"], rows)
    write_results("grid", max(row["users"] for row in rows), scenario, rows)


if __name__ == "__main__":
    main()
