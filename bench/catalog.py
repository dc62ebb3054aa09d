"""Ranking cost and recall against catalogue size: every item scored, or a retrieval stage.

    python bench/catalog.py [--users 20000] [--items 5000 20000 100000 1000000]

The quickstart world with the given catalogue, daily retrain (warm-started), every production
layer on, for two simulated hours after a one-hour warm-up. Per configuration: the ranking step's
wall time per request (scores, the layers' adjustments, the bandit, the top-k; not the time spent
measuring recall or building an index per model version, reported apart) and, with retrieval, its
recall@k against scoring every item (measured on 8 requests of every 20th batch). Exhaustive
scoring (and exact retrieval) is skipped above 200,000 items (an (n, items) score matrix per
batch). Prints a Markdown
table and writes bench/results/catalog.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import write_results  # noqa: E402
from throughput import ALL_LAYERS  # noqa: E402

from sim.scenario.loader import load_scenario  # noqa: E402
from sim.serving.runner import run_scenario  # noqa: E402

#: (label, retrieval setting or None for scoring every item)
CONFIGURATIONS = (
    ("every item", None),
    ("exact top-200 + pools", "{index: exact}"),
    ("FAISS IVF, nprobe 4", "{index: ivf, nprobe: 4}"),
    ("FAISS IVF, nprobe 16", "{index: ivf, nprobe: 16}"),
)
EXHAUSTIVE_UP_TO = 200_000


def run_one(users: int, items: int, retrieval: str | None) -> dict:
    overrides = [
        f"world.users.count={users}",
        f"world.catalog.items={items}",
        "duration=2h",
        "warmup=1h",
        "output.events=false",
        ALL_LAYERS.replace("RETRAIN", "1d"),
    ]
    if retrieval is not None:
        overrides.append(f"stack.policy.params.retrieval={retrieval}")
    summary = run_scenario(load_scenario("quickstart", overrides)).summary
    diagnostics = summary["policy_diagnostics"]
    retrieval = diagnostics.get("retrieval", {})
    # Serving only: measuring recall and building an index per model version are not serving.
    building = retrieval.get("index_build_wall_seconds", 0.0)
    ranking = summary["wall_seconds_by_component"]["ranking"]
    serving = ranking - retrieval.get("recall_wall_seconds", 0.0) - building
    return {
        "requests": summary["requests"],
        "ranking_us_per_request": round(1e6 * serving / summary["requests"], 2),
        "index_build_seconds": building,
        "requests_per_second": summary["requests_per_second"],
        "items_scored_per_request": diagnostics.get("items_scored_per_request"),
        "recall_at_k": retrieval.get("recall_at_k", 1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, nargs="+", default=[5_000, 20_000, 100_000])
    args = parser.parse_args()
    rows = []
    print("| items | ranking | scored/request | ranking us/request | recall@k | requests/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for items in args.items:
        for label, retrieval in CONFIGURATIONS:
            if (retrieval is None or "exact" in retrieval) and items > EXHAUSTIVE_UP_TO:
                continue
            row = {"items": items, "ranking": label, **run_one(args.users, items, retrieval)}
            rows.append(row)
            print(
                f"| {items:,} | {label} | {row['items_scored_per_request']:,.0f} "
                f"| {row['ranking_us_per_request']:.1f} | {row['recall_at_k']:.3f} "
                f"| {row['requests_per_second']:,.0f} |",
                flush=True,
            )
    scenario = "quickstart, every layer on, daily retrain, 2h after a 1h warm-up"
    write_results("catalog", args.users, scenario, rows)


if __name__ == "__main__":
    main()
