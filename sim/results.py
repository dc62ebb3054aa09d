"""Writing a run's results directory; every file is written atomically (temporary, then rename).

The directory is readable without recloop: ``scenario.yaml`` (fully resolved), ``summary.json``,
``events.parquet`` (one row per impression or abandoned session) and ``layers.parquet`` (every
published version). ``summary.json`` is written last, so its presence marks a complete run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.domain import Kind, Scope
from sim.loader import resolved_yaml
from sim.runner import RunResult

__all__ = ["write_results", "atomic_write"]

#: layers.parquet: one row per published layer version and cohort (see sim.layers.Version).
VERSION_SCHEMA = pa.schema(
    [
        ("layer", pa.string()),
        ("version", pa.int32()),
        ("triggered_at", pa.float64()),
        ("horizon", pa.float64()),
        ("live_at", pa.float64()),
        ("cohort", pa.string()),
        ("events", pa.int64()),
        ("cost", pa.float64()),
        ("wall_seconds", pa.float64()),
    ]
)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_results(result: RunResult, out: str | Path) -> Path:
    """Write ``result`` into directory ``out`` (created if needed); returns its path."""
    out = Path(out)
    atomic_write(out / "scenario.yaml", lambda p: p.write_text(resolved_yaml(result.scenario)))
    if result.scenario.output.events:
        table = _events_table(result)
        atomic_write(out / "events.parquet", lambda p: pq.write_table(table, p))
    else:  # an earlier run's event log in the same directory would be mistaken for this one's
        (out / "events.parquet").unlink(missing_ok=True)
    layers = pa.table(
        {name: [getattr(v, name) for v in result.versions] for name in VERSION_SCHEMA.names},
        schema=VERSION_SCHEMA,
    )
    atomic_write(out / "layers.parquet", lambda p: pq.write_table(layers, p))
    summary = dict(result.summary, recloop_version=_version(), files=_files(result))
    text = json.dumps(summary, indent=2, allow_nan=False)
    atomic_write(out / "summary.json", lambda p: p.write_text(text + "\n"))
    return out


def _files(result: RunResult) -> list[str]:
    files = ["scenario.yaml", "summary.json", "layers.parquet"]
    return files + (["events.parquet"] if result.scenario.output.events else [])


def _events_table(result: RunResult) -> pa.Table:
    events = result.events
    item = events.item
    on_item = item >= 0
    topic = np.where(on_item, result.item_topic[np.where(on_item, item, 0)], -1).astype(np.int16)
    creator = np.where(on_item, result.item_creator[np.where(on_item, item, 0)], -1)
    kinds = pa.array([kind.name.lower() for kind in Kind])
    scopes = pa.array([scope.name.lower() for scope in Scope])
    columns: dict[str, Any] = {
        "time": events.time,
        "user": events.user,
        "session": events.session,
        "item": item,
        "topic": topic,
        "creator": creator.astype(np.int32),
        "position": events.position,
        "kind": pa.DictionaryArray.from_arrays(pa.array(events.kind), kinds),
        "scope": pa.DictionaryArray.from_arrays(pa.array(events.scope), scopes),
        "dwell": events.dwell,
    }
    columns.update({f"v_{layer}": values for layer, values in events.versions.items()})
    return pa.table(columns)


def _version() -> str:
    try:
        return version("recloop")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"
