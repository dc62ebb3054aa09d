"""recloop against T-RECS and RecSim on comparable workloads, in the same run on this machine.

    python bench/simulators.py --other-python .bench-venv/bin/python [--seconds 30]

T-RECS (pins pandas 1.0.5) and RecSim (needs gym) cannot share recloop's environment, so they run
in their own: ``make bench-simulators`` builds it and runs this. Workloads:

- T-RECS ``ContentFiltering``, 10,000 users x 1,000 items, 10 items per user per step (its
  default), 50 attributes: user-slates per second (each user shown 10 items and responding).
- RecSim ``interest_evolution``, 1,000 candidates, slates of 10, a random agent: slates per second.
- recloop, the same catalogue and population (10,000 users x 1,000 items, slates of 10), one
  simulated day served by the embedding ranker retrained hourly: requests (slates) per second,
  at the quickstart's traffic (a median 2 sessions per user per day: about 14 requests per
  10-second serving window, where fixed per-window costs dominate) and at 20 sessions a day.
  recloop does more per slate than either (a trained ranker, a retrain layer, sessions).

Prints a Markdown table and writes bench/results/simulators.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import write_results  # noqa: E402

from sim.scenario.loader import load_scenario  # noqa: E402
from sim.serving.runner import run_scenario  # noqa: E402

USERS, ITEMS, SLATE = 10_000, 1_000, 10

TRECS = f"""
import time
from trecs.models import ContentFiltering
model = ContentFiltering(num_users={USERS}, num_items={ITEMS}, num_attributes=50, seed=1)
steps, started = 0, time.perf_counter()
while time.perf_counter() - started < SECONDS:
    model.run(timesteps=1, disable_tqdm=True)
    steps += 1
print(steps * {USERS} / (time.perf_counter() - started))
"""

RECSIM = f"""
import time
import numpy as np
from recsim.environments import interest_evolution
config = {{"num_candidates": {ITEMS}, "slate_size": {SLATE}, "resample_documents": True, "seed": 1}}
env = interest_evolution.create_environment(config)
rng = np.random.default_rng(1)
env.reset()
slates, started = 0, time.perf_counter()
while time.perf_counter() - started < SECONDS:
    if env.step(rng.choice({ITEMS}, {SLATE}, replace=False).tolist())[2]:
        env.reset()
    slates += 1
print(slates / (time.perf_counter() - started))
"""


def other(python: str, code: str, seconds: float) -> float:
    """Run ``code`` with the other environment's Python; it prints its rate on the last line.
    (In a scratch directory: T-RECS writes a trecs.log where it runs.)"""
    with tempfile.TemporaryDirectory() as scratch:
        completed = subprocess.run(
            [
                str(Path(python).absolute()),
                "-W",
                "ignore",
                "-c",
                code.replace("SECONDS", str(seconds)),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=scratch,
        )
    return float(completed.stdout.strip().splitlines()[-1])


def recloop_rate(sessions_per_day: float) -> float:
    scenario = load_scenario(
        "quickstart",
        [
            f"world.users.count={USERS}",
            f"world.catalog.items={ITEMS}",
            f"world.users.sessions_per_day.median={sessions_per_day}",
            f"stack.slate_size={SLATE}",
            "duration=1d",
            "warmup=0s",
            "output.events=false",
        ],
    )
    started = time.perf_counter()
    result = run_scenario(scenario)
    return result.summary["requests"] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other-python", required=True, help="Python with trecs and recsim")
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time per simulator")
    args = parser.parse_args()
    ours = recloop_rate(2)
    rows = [
        {"simulator": "recloop, 2 sessions/user/day (quickstart)", "slates_per_second": ours},
        {"simulator": "recloop, 20 sessions/user/day", "slates_per_second": recloop_rate(20)},
        {
            "simulator": "T-RECS ContentFiltering",
            "slates_per_second": other(args.other_python, TRECS, args.seconds),
        },
        {
            "simulator": "RecSim interest_evolution (random agent)",
            "slates_per_second": other(args.other_python, RECSIM, args.seconds),
        },
    ]
    dense = rows[1]["slates_per_second"]
    print("| simulator | slates/s | recloop at 2 / 20 sessions a day is |")
    print("|---|---|---|")
    for row in rows:
        row["recloop_ratio"] = round(ours / row["slates_per_second"], 1)
        row["recloop_dense_ratio"] = round(dense / row["slates_per_second"], 1)
        ratios = f"{row['recloop_ratio']}x / {row['recloop_dense_ratio']}x"
        print(f"| {row['simulator']} | {row['slates_per_second']:,.0f} | {ratios} |")
    path = write_results(
        "simulators", USERS, f"{USERS:,} users x {ITEMS:,} items, slates of {SLATE}", rows
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
