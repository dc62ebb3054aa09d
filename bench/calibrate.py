"""`recloop calibrate` on a large generated log: wall time of the fit and of the whole command.

    python bench/calibrate.py [--rows 10000000] [--base-users 8000] [--keep DIR]

The log: the known world of examples/calibrate (a uniformly random policy) simulated for
``--base-users`` users over four days, then tiled with fresh user and session ids until it has
``--rows`` rows (tiling keeps every per-user, per-session and per-impression statistic; only the
generation is shortened by it). Then `recloop calibrate LOG --out world.yaml --report fit.html`
runs in this process with its progress bar. Prints the times and writes
bench/results/calibrate.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import write_results  # noqa: E402

from sim.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KNOWN = ROOT / "examples" / "calibrate" / "known-world.yaml"
COLUMNS = ["time", "user", "session", "item", "topic", "creator", "position", "kind", "dwell"]


def generate(path: Path, rows: int, base_users: int) -> float:
    """Write a log of at least ``rows`` rows to ``path``; the seconds it took."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        code = main(
            ["run", str(KNOWN), "-q", "--out", scratch, "--set", f"world.users.count={base_users}"]
        )
        if code:
            raise SystemExit(code)
        (events,) = Path(scratch).glob("variants/*/r0/events.parquet")
        base = pq.read_table(events, columns=COLUMNS)
    copies = -(-rows // base.num_rows)
    user = base.column("user").to_numpy()
    session = base.column("session").to_numpy()
    users, sessions = int(user.max()) + 1, int(session.max()) + 1
    with pq.ParquetWriter(path, base.schema, compression="zstd") as writer:
        for copy in range(copies):
            take = min(base.num_rows, rows - copy * base.num_rows)
            part = base.slice(0, take)
            part = part.set_column(1, "user", pa.array(user[:take] + copy * users))
            part = part.set_column(2, "session", pa.array(session[:take] + copy * sessions))
            writer.write_table(part)
    return time.perf_counter() - started


def bench(rows: int, base_users: int, keep: Path | None) -> dict:
    folder = keep or Path(tempfile.mkdtemp(prefix="recloop-calibrate-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"log-{rows}.parquet"
    generated = None  # the log of an earlier run, reused
    if not log.is_file():
        generated = generate(log, rows, base_users)
    started = time.perf_counter()
    code = main(
        [
            "calibrate", str(log), "--out", str(folder / "world.yaml"),
            "--report", str(folder / "fit.html"),
        ]
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if code:
        raise SystemExit(code)
    return {
        "rows": pq.ParquetFile(log).metadata.num_rows,
        "log_mb": round(log.stat().st_size / 1e6, 1),
        "generate_seconds": None if generated is None else round(generated, 1),
        "calibrate_seconds": round(seconds, 1),
        "folder": str(folder),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--base-users", type=int, default=8000)
    parser.add_argument("--keep", type=Path, help="keep the log and outputs here (reused if there)")
    args = parser.parse_args()
    row = bench(args.rows, args.base_users, args.keep)
    made = row["generate_seconds"]
    print(
        f"calibrate: {row['rows']:,} rows ({row['log_mb']} MB) in {row['calibrate_seconds']:.0f} s"
        + (f" (the log took {made:.0f} s to generate)" if made is not None else " (log reused)")
    )
    del row["folder"]
    path = write_results(
        "calibrate",
        0,
        f"recloop calibrate --report on {row['rows']:,} rows tiled from examples/calibrate's "
        "known world",
        [row],
    )
    print(f"results: {path}")
