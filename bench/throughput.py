"""Throughput of recloop against the naive one-process-per-user loop, in the same run.

    python bench/throughput.py [--users 100000] [--items 5000] [--days 1] [--naive-seconds 120]
                               [--set stack.policy.params.explore=0 ...]

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

from sim.scenario.loader import load_scenario  # noqa: E402
from sim.serving.runner import run_scenario  # noqa: E402
from sim.sweeps.results import atomic_write  # noqa: E402

#: Every production layer on at a realistic cadence (online learning, the counterfactual, off).
ALL_LAYERS = (
    "stack.layers={realtime_features: {latency: 1s}, "
    "nearline_embeddings: {every: 5m, latency: 1m, compute_time: 1m}, "
    "retrain: {every: RETRAIN, latency: 5m, compute_time: 10m}, "
    "session_context: {}, profile_memory: {every: 1d}, "
    "bandit: {every: 1m, latency: 10s, implementation: vectorized}}"
)


def overrides(
    users: int, items: int, days: float, retrain: str, all_layers: bool = False
) -> list[str]:
    """The quickstart scaled, no warm-up, no event file; ``retrain`` cadence (or ``off``); every
    run's extra ``--set`` overrides come after these."""
    overrides = [
        f"world.users.count={users}",
        f"world.catalog.items={items}",
        f"duration={days}d",
        "warmup=0s",
        "output.events=false",
    ]
    if all_layers:
        overrides.append(ALL_LAYERS.replace("RETRAIN", retrain))
    elif retrain == "off":
        overrides.append("stack.layers.retrain.enabled=false")
    else:
        overrides.append(f"stack.layers.retrain.every={retrain}")
    return overrides


def scenario(users: int, items: int, days: float, retrain: str, all_layers: bool = False, extra=()):
    return load_scenario(
        "quickstart", overrides(users, items, days, retrain, all_layers) + list(extra)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--retrain", nargs="+", default=["1d", "1h"])
    parser.add_argument("--naive-seconds", type=float, default=120.0)
    parser.add_argument(
        "--all-layers",
        nargs="*",
        default=["1d", "1h"],
        metavar="RETRAIN",
        help="also run with every layer on, for these retrain cadences",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="an override for every run, as in `recloop run --set` (e.g. "
        "stack.policy.params.explore=0 stack.policy.params.score_noise=0 to compare serving "
        "speed on the same workload as a ranker that does not explore)",
    )
    args = parser.parse_args()

    rows = []
    runs = [(retrain, False) for retrain in args.retrain]
    runs += [(retrain, True) for retrain in args.all_layers]
    for retrain, all_layers in runs:
        result = run_scenario(
            scenario(args.users, args.items, args.days, retrain, all_layers, args.set)
        )
        s = result.summary
        served = s["requests"]
        label = "all layers, " if all_layers else ""
        rows.append(
            {
                "engine": f"recloop ({label}retrain every {retrain})",
                "requests": served,
                "simulated_days": args.days,
                "wall_seconds": s["wall_seconds"],
                "requests_per_second": s["requests_per_second"],
                "wall_by_component": s["wall_seconds_by_component"],
                "windows": s["windows"],
            }
        )
        print(f"{rows[-1]['engine']}: {s['requests_per_second']:,.0f} requests/s", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # the same single-thread setting recloop runs with
        naive = run_naive(
            scenario(args.users, args.items, args.days, args.retrain[0], extra=args.set),
            args.naive_seconds,
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
        "overrides": args.set,
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
    print(f"\nrecloop / naive: {report['speedup_vs_naive']}x\n")
    print("wall seconds by component:")
    for row in rows:
        if "wall_by_component" in row:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in row["wall_by_component"].items())
            print(f"- {row['engine']}: {parts}")


if __name__ == "__main__":
    main()
