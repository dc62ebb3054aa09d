"""Write examples/calibrate/log.parquet: the event log of known-world.yaml (one run, seed 11).

    python examples/calibrate/generate.py [--out examples/calibrate/log.parquet]

The log keeps the columns a team's log would have (no scope, no layer versions), compressed.
`recloop calibrate examples/calibrate/log.parquet --out world.yaml` should recover the known
world's parameters; tests/test_calibrate.py checks that it does, within stated tolerances.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from sim.cli import main

HERE = Path(__file__).resolve().parent
COLUMNS = ["time", "user", "session", "item", "topic", "creator", "position", "kind", "dwell"]


def generate(out: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        code = main(["run", str(HERE / "known-world.yaml"), "--out", scratch, "-q"])
        if code:
            return code
        (events,) = Path(scratch).glob("variants/*/r0/events.parquet")
        table = pq.read_table(events, columns=COLUMNS)
    pq.write_table(table, out, compression="zstd")
    print(f"{out}: {table.num_rows:,} rows, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "log.parquet")
    sys.exit(generate(parser.parse_args().out))
