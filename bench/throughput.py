"""Throughput of recloop against the naive one-process-per-user loop, in the same run.

    python bench/throughput.py [--users 100000] [--items 5000] [--days 1] [--naive-seconds 120]

Prints a Markdown table and writes bench/results/throughput.json. The naive loop is stopped after
``--naive-seconds`` of wall time and its rate measured over what it served.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from naive import run_naive  # noqa: E402

from sim.loader import load_scenario  # noqa: E402
from sim.results import atomic_write  # noqa: E402
from sim.runner import run_scenario  # noqa: E402


def scenario(users: int, items: int, days: float, retrain: str):
    overrides = [
        f"world.users.count={users}",
        f"world.catalog.items={items}",
        f"duration={days}d",
        "warmup=0s",
        "output.events=false",
    ]
    overrides += (
        ["stack.layers.retrain.enabled=false"]
        if retrain == "off"
        else [f"stack.layers.retrain.every={retrain}"]
    )
    return load_scenario("quickstart", overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--retrain", nargs="+", default=["1h", "1d"])
    parser.add_argument("--naive-seconds", type=float, default=120.0)
    args = parser.parse_args()

    rows = []
    for retrain in args.retrain:
        result = run_scenario(scenario(args.users, args.items, args.days, retrain))
        s = result.summary
        served = s["requests"]
        rows.append(
            {
                "engine": f"recloop (retrain every {retrain})",
                "requests": served,
                "simulated_days": args.days,
                "wall_seconds": s["wall_seconds"],
                "requests_per_second": s["requests_per_second"],
                "wall_by_component": s["wall_seconds_by_component"],
                "windows": s["windows"],
            }
        )
        print(f"recloop retrain {retrain}: {s['requests_per_second']:,.0f} requests/s", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # the same single-thread setting recloop runs with
        naive = run_naive(
            scenario(args.users, args.items, args.days, args.retrain[0]), args.naive_seconds
        )
    torch.set_num_threads(threads)
    naive_rate = naive["requests"] / naive["wall_seconds"]
    rows.append(
        {
            "engine": f"naive: one SimPy process per user (retrain every {args.retrain[0]})",
            "requests": naive["requests"],
            "simulated_days": round(naive["simulated_seconds"] / 86400, 4),
            "wall_seconds": round(naive["wall_seconds"], 2),
            "requests_per_second": round(naive_rate, 1),
        }
    )
    machine = {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    report = {
        "users": args.users,
        "items": args.items,
        "machine": machine,
        "rows": rows,
        "speedup_vs_naive": round(rows[0]["requests_per_second"] / naive_rate, 1),
    }
    out = Path(__file__).resolve().parent / "results" / "throughput.json"
    atomic_write(out, lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))
    print(
        f"\n{args.users:,} users x {args.items:,} items, {machine['cpu_cores']} cores, "
        f"{machine['processor']}, {machine['date']}\n"
    )
    print("| engine | requests | simulated days | wall s | requests/s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['engine']} | {row['requests']:,} | {row['simulated_days']} | "
            f"{row['wall_seconds']} | {row['requests_per_second']:,.0f} |"
        )
    print(f"\nrecloop / naive: {report['speedup_vs_naive']}x")


if __name__ == "__main__":
    main()
