"""Readers for a results directory, usable without the simulator (pyarrow and json only).

A results directory holds a sweep (a single run is a sweep of one variant, ``default``, and one
replication): the top-level tables have ``variant`` and ``replication`` columns, and each run's
own files (its ``events.parquet`` among them) are in the folder :func:`run_folder` finds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ResultsError",
    "read_summary",
    "read_table",
    "run_folder",
    "read_run_summary",
    "read_events",
    "read_layers",
    "read_probes",
]


class ResultsError(Exception):
    """A results directory is missing a file or holds one that cannot be read."""


def read_summary(folder: str | Path) -> dict[str, Any]:
    """The top-level ``summary.json`` (the sweep: variants, comparisons, failed runs)."""
    return _json(Path(folder) / "summary.json", folder)


def read_table(folder: str | Path, name: str, columns: list[str] | None = None) -> pa.Table:
    """A top-level table (``runs``, ``variants``, ``propagation``, ``exposure``,
    ``suppression``, ``timeseries``, ``layers``) as Arrow (``.to_pandas()`` for pandas)."""
    return _parquet(Path(folder) / f"{name}.parquet", columns)


def run_folder(
    folder: str | Path, variant: str | None = None, replication: int = 0, twin: bool = False
) -> Path:
    """The folder of one run: ``variant`` (default: the baseline) and ``replication``; with
    ``twin``, the run's twin without the probe users' controls (a sweep with probes)."""
    summary = read_summary(folder)
    variant = summary["baseline"] if variant is None else variant
    key = f"{variant} r{replication}" + (" twin" if twin else "")
    try:
        return Path(folder) / summary["run_folders"][key]
    except KeyError:
        runs = ", ".join(summary["run_folders"])
        raise ResultsError(f"{folder}: no run {key!r}; runs: {runs}") from None


def read_run_summary(
    folder: str | Path, variant: str | None = None, replication: int = 0
) -> dict[str, Any]:
    """One run's ``summary.json``: its counts, layers, metrics and wall time."""
    run = run_folder(folder, variant, replication)
    return _json(run / "summary.json", run)


def read_events(
    folder: str | Path,
    variant: str | None = None,
    replication: int = 0,
    columns: list[str] | None = None,
) -> pa.Table:
    """One run's ``events.parquet`` (one row per impression and abandoned session)."""
    return _parquet(run_folder(folder, variant, replication) / "events.parquet", columns)


def read_layers(folder: str | Path) -> pa.Table:
    """``layers.parquet``: one row per published layer version, of every run."""
    return read_table(folder, "layers")


def read_probes(
    folder: str | Path, variant: str | None = None, replication: int = 0, twin: bool = False
) -> pa.Table:
    """One run's ``probes.parquet`` (or its twin's): per probe and bin of time since the
    control, the probe users' impressions of their target item, its topic and its creator."""
    return _parquet(run_folder(folder, variant, replication, twin) / "probes.parquet", None)


def _json(path: Path, folder: str | Path) -> dict[str, Any]:
    if not path.is_file():
        unfinished = (Path(folder) / "scenario.yaml").is_file()
        raise ResultsError(
            f"{folder}: no summary.json: an unfinished sweep; finish it with recloop run "
            f"--resume {folder}"
            if unfinished
            else f"{folder}: no summary.json (not a results directory)"
        )
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: unreadable ({error})") from None


def _parquet(path: Path, columns: list[str] | None) -> pa.Table:
    if not path.is_file():
        raise ResultsError(f"{path}: missing (was the run written with output.events: false?)")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise ResultsError(
            f"{path}: unreadable ({' '.join(str(error).split())[:200]}); the file was damaged "
            "after it was written (recloop writes every file whole): run the scenario again"
        ) from None
