"""Readers for a results directory, usable without the simulator (pyarrow and json only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ResultsError", "read_summary", "read_events", "read_layers"]


class ResultsError(Exception):
    """A results directory is missing a file or holds one that cannot be read."""


def read_summary(folder: str | Path) -> dict[str, Any]:
    """``summary.json`` as a dict."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise ResultsError(f"{folder}: no summary.json (not a results directory, or unfinished)")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: unreadable ({error})") from None


def read_events(folder: str | Path, columns: list[str] | None = None) -> pa.Table:
    """``events.parquet`` as an Arrow table (``.to_pandas()`` for a DataFrame)."""
    return _parquet(Path(folder) / "events.parquet", columns)


def read_layers(folder: str | Path) -> pa.Table:
    """``layers.parquet``: one row per published layer version."""
    return _parquet(Path(folder) / "layers.parquet", None)


def _parquet(path: Path, columns: list[str] | None) -> pa.Table:
    if not path.is_file():
        raise ResultsError(f"{path}: missing (was the run written with output.events: false?)")
    return pq.read_table(path, columns=columns)
