"""Fingerprints of the event logs every packaged scenario's quick configuration writes.

A refactor that must not change behaviour (moving modules, re-plumbing the layers) is checked by
running every packaged scenario's ``--quick`` configuration and comparing a hash of each run's
event log, column by column, with the hashes recorded in ``tests/data/quick_event_logs.json``.
The hash covers the column names, types and values, not the Parquet file's metadata (which names
the writing library's version).

    python -m tests.fingerprints --record        # re-record after a change that should alter runs
    python -m tests.fingerprints [NAME ...]      # compare; exit 1 and name the runs that differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "data" / "quick_event_logs.json"


def event_log_hash(path: Path) -> str:
    """SHA-256 of an event log's columns: name, Arrow type, values and where they are null."""
    table = pq.read_table(path).combine_chunks()
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns, strict=True):
        digest.update(f"{name}:{column.type};".encode())
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type):  # the labels, then each row's index
                digest.update("\0".join(chunk.dictionary.to_pylist()).encode())
                chunk = chunk.indices
            if not (
                pa.types.is_integer(chunk.type)
                or pa.types.is_floating(chunk.type)
                or pa.types.is_boolean(chunk.type)
            ):
                raise TypeError(f"{path}: column {name!r} of type {chunk.type} has no fingerprint")
            filled = chunk.fill_null(pa.scalar(0).cast(chunk.type))
            digest.update(filled.to_numpy(zero_copy_only=False).tobytes())
            digest.update(chunk.is_null().to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def quick_run_hashes(name: str) -> dict[str, str]:
    """Run ``recloop run NAME --quick`` in a fresh process, its event logs written even where the
    scenario turns them off (writing them changes no draw); each run's event-log hash by its
    folder under ``variants/`` (``VARIANT/rK``)."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "sim.cli",
            "run",
            name,
            "--quick",
            "--set",
            "output.events=true",
            "-q",
            "--workers",
            "2",
            "--out",
            out,
        ]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
        logs = sorted(Path(out).glob("variants/*/r*/events.parquet"))
        return {str(p.parent.relative_to(Path(out) / "variants")): event_log_hash(p) for p in logs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="packaged scenarios (default: all)")
    parser.add_argument("--record", action="store_true", help="write the hashes as the reference")
    args = parser.parse_args()
    from sim.scenario.loader import packaged_scenarios

    names = args.names or sorted(packaged_scenarios())
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    differ = []
    for name in names:
        hashes = quick_run_hashes(name)
        print(f"{name}: {len(hashes)} runs", flush=True)
        if args.record:
            recorded[name] = hashes
        elif recorded.get(name) != hashes:
            differ.append(name)
    if args.record:
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        RECORDED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return 0
    if differ:
        print("event logs differ from the recorded ones: " + ", ".join(differ))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
