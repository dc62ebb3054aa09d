"""Writing a results directory; every file is written atomically (temporary, then rename).

The directory is readable without recloop. At the top: ``scenario.yaml`` (fully resolved, with
its variants), ``summary.json`` (comparisons), ``runs.parquet`` (one row per variant ×
replication), ``variants.parquet`` (means, intervals and paired deltas), and the concatenated
``propagation``, ``exposure``, ``suppression``, ``timeseries`` and ``layers`` tables with
``variant`` and ``replication`` columns. Each run also has its own folder under ``variants/``
with its resolved scenario, ``events.parquet`` and tables. A ``summary.json`` is always written
last, so its presence marks a complete run or sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.domain import Kind, Scope
from sim.measuring.compare import (
    NO_INTERVAL,
    compare_variants,
    instant_beaten,
    interval,
    metric_kind,
    metric_resolution,
    numeric_metrics,
    propagation_efficiency,
)
from sim.measuring.effects import (
    EFFECT_COLUMNS,
    Cells,
    effect_sentences,
    estimate_effects,
    grid_factors,
    harm_metric,
    largest_effect,
    measured_updates,
    never_fires,
)
from sim.measuring.metrics import RunMetrics
from sim.measuring.replications import precision_notes
from sim.measuring.replications import replication_plan as plan_of
from sim.measuring.responsiveness import PROBE_BIN, exposure_table, responsiveness
from sim.scenario.loader import resolved_yaml
from sim.scenario.spec import Scenario
from sim.serving.runner import RunResult
from sim.sweeps.plan import RunOutcome, grid_levels

__all__ = [
    "write_run",
    "write_sweep",
    "write_report",
    "atomic_write",
    "environment",
    "scenario_hash",
    "METRIC_TABLES",
]

#: layers.parquet: one row per published layer version and cohort (see sim.serving.layers.Version).
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
        ("origin", pa.string()),
        ("since", pa.float64()),
        ("changed", pa.string()),
        ("changed_users", pa.int64()),
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


#: The per-run metric tables, written beside each run and concatenated at the top level.
METRIC_TABLES = ("propagation", "exposure", "suppression", "timeseries")


def write_run(
    result: RunResult, metrics: RunMetrics, folder: str | Path, row: dict[str, Any]
) -> Path:
    """Write one run into ``folder``: its scenario, events, layer versions, metric tables, and
    ``summary.json`` last (its presence marks the run complete; it keeps the run's
    ``runs.parquet`` row, so a resumed sweep need not run it again)."""
    folder = Path(folder)
    atomic_write(folder / "scenario.yaml", lambda p: p.write_text(resolved_yaml(result.scenario)))
    if result.scenario.output.events:
        table = _events_table(result)
        _write_parquet(folder / "events.parquet", table)
    else:  # an earlier run's event log in the same directory would be mistaken for this one's
        (folder / "events.parquet").unlink(missing_ok=True)
    layers = pa.table(
        {name: [getattr(v, name) for v in result.versions] for name in VERSION_SCHEMA.names},
        schema=VERSION_SCHEMA,
    )
    _write_parquet(folder / "layers.parquet", layers)
    for name in METRIC_TABLES:
        _write_parquet(folder / f"{name}.parquet", metrics.tables[name])
    files = ["scenario.yaml", "summary.json", "layers.parquet"]
    files += [f"{name}.parquet" for name in METRIC_TABLES]
    if result.scenario.probes:
        probes = exposure_table(
            result.probes,
            result.events,
            result.catalog(),
            result.scenario.end,
            min(result.scenario.metrics.timeseries_bin, PROBE_BIN),
        )
        _write_parquet(folder / "probes.parquet", probes)
        files.append("probes.parquet")
    files += ["events.parquet"] if result.scenario.output.events else []
    summary = dict(
        result.summary,
        metrics=metrics.scalars,
        missing={**result.summary["missing"], **metrics.missing},
        recloop_version=_version(),
        scenario_hash=scenario_hash(result.scenario),
        row=row,
        files=files,
    )
    _write_json(folder / "summary.json", summary)
    return folder


def write_sweep(
    out: str | Path,
    scenario: Scenario,
    labels: list[str],
    baseline: str,
    outcomes: list[RunOutcome],
    wall_seconds: float,
    replication_plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the sweep's top level: every run's row, the comparisons, the concatenated tables,
    and ``summary.json`` last. Returns the summary.

    ``replication_plan`` says how the number of replications was reached
    (:func:`sim.measuring.replications.replication_plan`); without it, a fixed count.
    """
    out = Path(out)
    atomic_write(out / "scenario.yaml", lambda p: p.write_text(resolved_yaml(scenario)))
    every = outcomes
    # probe twins are measured against their runs only (responsiveness), not as variants
    outcomes = [outcome for outcome in every if not outcome.plan.twin]
    rows = [outcome.row for outcome in outcomes]
    finished = [outcome for outcome in outcomes if outcome.error is None]
    replications = len({outcome.plan.replication for outcome in finished})
    if replication_plan is None:
        replication_plan = plan_of(replications)
    notes = [] if replications > 1 else [NO_INTERVAL + ": intervals are null"]
    notes += precision_notes(replication_plan, replications)
    if "frozen" in labels and "instant" in labels:
        efficiency = propagation_efficiency(rows)
        for row in rows:
            row["propagation_efficiency"] = efficiency.get((row["variant"], row["replication"]))
        for replication, beaten in sorted(instant_beaten(rows).items()):
            notes.append(
                f"replication {replication}: {', '.join(beaten)} let through fewer bad "
                "impressions than the instant bound: faster propagation is not better everywhere "
                "in this world (propagation efficiency is measured against the best run)"
            )
    runs = pa.Table.from_pylist(rows)
    _write_parquet(out / "runs.parquet", runs)
    for name in (*METRIC_TABLES, "layers"):
        _concatenate(out, name, finished)
    comparisons = compare_variants([o.row for o in finished], labels, baseline)
    variants = pa.Table.from_pylist(
        [
            _variant_row(label, metric, entry)
            for label, metrics in comparisons.items()
            for metric, entry in metrics.items()
        ],
        schema=VARIANT_SCHEMA,
    )
    _write_parquet(out / "variants.parquet", variants)
    effects = _write_effects(out, scenario, baseline, finished)
    responsive = _write_responsiveness(out, labels, every) if scenario.probes else {}
    missing: dict[str, str] = {}
    for outcome in finished:
        for metric, reason in outcome.missing.items():
            missing.setdefault(metric, reason)
    summary = {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": scenario.seed,
        "replications": replications,
        "replication_plan": replication_plan,
        "variants": labels,
        "baseline": baseline,
        "runs": len(every),
        "failed_runs": [
            {
                "variant": o.plan.variant,
                "replication": o.plan.replication,
                "error": o.error,
                **({"twin": True} if o.plan.twin else {}),
            }
            for o in every
            if o.error is not None
        ],
        "run_folders": {
            f"{o.plan.variant} r{o.plan.replication}{' twin' * o.plan.twin}": o.plan.folder
            for o in every
        },
        "interventions": {event.name: event.at for event in scenario.interventions},
        "oracle_variants": sorted({o.plan.variant for o in finished if o.row.get("oracle")}),
        # how each variant reached the start of measurement (stack.warm.mode)
        "warm_mode": {
            o.plan.variant: o.plan.scenario.stack.warm.mode if o.plan.scenario.warmup else "none"
            for o in outcomes
        },
        "interval": "95% Student-t over replications, cut to the metric's range; deltas paired "
        "within a replication; relative changes from paired log ratios (sim/measuring/compare.py)",
        "unreliable": replications < 3,
        "unreliable_reason": _unreliable_reason(replications),
        "headline_metric": scenario.metrics.headline,
        "metric_kinds": {metric: metric_kind(metric) for metric in numeric_metrics(rows)},
        "metric_resolution": metric_resolution(
            numeric_metrics(rows), scenario.metrics.suppression_bin
        ),
        **effects,
        **responsive,
        "comparisons": comparisons,
        "missing": missing,
        "notes": notes,
        "wall_seconds": round(wall_seconds, 3),
        "recloop_version": _version(),
        "scenario_hash": scenario_hash(scenario),
        "environment": environment(),
        "files": [
            "scenario.yaml",
            "summary.json",
            "runs.parquet",
            "variants.parquet",
            *(["effects.parquet"] if "effects" in effects else []),
            *(["responsiveness.parquet"] if responsive else []),
            "layers.parquet",
            *(f"{name}.parquet" for name in METRIC_TABLES),
        ],
    }
    _write_json(out / "summary.json", summary)
    return summary


def _unreliable_reason(replications: int) -> str | None:
    if replications >= 3:
        return None
    if replications < 2:
        return f"{replications} replication: no interval can be computed; run at least 3"
    return (
        f"only {replications} replications: a 95% interval over fewer than 3 is too wide and "
        "too fragile to act on; run at least 3"
    )


def _write_effects(
    out: Path, scenario: Scenario, baseline: str, finished: list[RunOutcome]
) -> dict[str, Any]:
    """``effects.parquet`` and the summary's ``effects`` when the variants form a grid with an
    axis of two levels or more; else ``effects_absent`` with the reason (and no file)."""
    levels = grid_levels(scenario)
    factors = grid_factors(levels, baseline)
    if not any(len(factor.levels) > 1 for factor in factors):
        (out / "effects.parquet").unlink(missing_ok=True)
        if scenario.variants is None:
            reason = "the scenario has one variant: there is no lever to compare"
        elif scenario.variants.cases:
            reason = "the variants are a list of cases, not a grid"
        else:
            reason = "no grid axis has two levels or more"
        return {"effects_absent": reason}
    rows = [o.row for o in finished]
    effects = estimate_effects(rows, factors, levels)
    cells = Cells(rows, factors, levels)
    _write_parquet(out / "effects.parquet", pa.Table.from_pylist(effects, schema=EFFECT_SCHEMA))
    layers = (
        pq.read_table(out / "layers.parquet", columns=["variant", "layer", "origin", "live_at"])
        if (out / "layers.parquet").is_file()
        else pa.table({"variant": [], "layer": [], "origin": [], "live_at": []})
    )
    updates = measured_updates(
        layers.to_pydict(),
        {o.plan.variant: (o.plan.scenario.warmup, o.plan.scenario.end) for o in finished},
    )
    active = {o.plan.variant: set(o.plan.scenario.stack.layers.active()) for o in finished}
    never = never_fires(factors, levels, active, updates)
    harm = harm_metric(rows, scenario.metrics.headline)
    return {
        "effects": {
            "factors": [
                {
                    "factor": f.name,
                    "path": f.path,
                    "levels": list(f.levels),
                    "reference": f.reference,
                    "never_fires": never[f.name],
                }
                for f in factors
            ],
            "variants": {
                label: {f.name: cell[f.path] for f in factors} for label, cell in levels.items()
            },
            "headline": effect_sentences(effects, factors, harm, never, scenario.duration, cells),
            "largest": largest_effect(effects, harm),
        }
    }


#: effects.parquet: main effects and two-way interactions per metric (sim/measuring/effects.py).
EFFECT_SCHEMA = pa.schema(
    [
        (name, pa.int64() if name == "n" else pa.string())
        if name
        in ("metric", "kind", "factor", "level", "reference", "relative_method", "note", "n")
        else (name, pa.float64())
        for name in EFFECT_COLUMNS
    ]
)

#: variants.parquet: one row per variant and metric, with the comparison against the baseline.
VARIANT_SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("metric", pa.string()),
        ("n", pa.int64()),
        ("mean", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("delta", pa.float64()),
        ("delta_ci_low", pa.float64()),
        ("delta_ci_high", pa.float64()),
        ("relative", pa.float64()),
        ("relative_ci_low", pa.float64()),
        ("relative_ci_high", pa.float64()),
        ("relative_method", pa.string()),
        ("relative_missing", pa.string()),
    ]
)


def _variant_row(label: str, metric: str, entry: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": label, "metric": metric, "n": entry["n"]}
    for prefix, part in (
        ("", entry),
        ("delta", entry.get("delta")),
        ("relative", entry.get("relative")),
    ):
        if part is None:
            continue
        low, high = part["ci95"] or (None, None)
        row[prefix or "mean"] = part["mean"]
        row[f"{prefix}_ci_low".lstrip("_")] = low
        row[f"{prefix}_ci_high".lstrip("_")] = high
    if "relative" in entry:
        row["relative_method"] = entry["relative"]["method"]
    row["relative_missing"] = entry.get("relative_missing")
    return row


def _write_responsiveness(
    out: Path, labels: list[str], outcomes: list[RunOutcome]
) -> dict[str, Any]:
    """``responsiveness.parquet`` from every finished run and twin's ``probes.parquet``, and the
    summary's ``responsiveness`` (see :func:`sim.measuring.responsiveness.responsiveness`)."""
    tables = {
        (o.plan.variant, o.plan.replication, not o.plan.twin): pq.read_table(
            out / o.plan.folder / "probes.parquet"
        )
        for o in outcomes
        if o.error is None
    }
    table, summary = responsiveness(tables, labels)
    for label, probes in summary.items():  # deletion propagation, over replications
        runs = [
            json.loads((out / o.plan.folder / "summary.json").read_text(encoding="utf-8"))
            for o in outcomes
            if o.error is None and not o.plan.twin and o.plan.variant == label
        ]
        for name, entry in probes.items():
            found = [run["deletions"][name] for run in runs if name in run.get("deletions", {})]
            if found:
                entry["deleted_events"] = [run["deleted_events"] for run in found]
                entry["deletion_delay_seconds"] = _deletion_delays(found)
    _write_parquet(out / "responsiveness.parquet", table)
    return {
        "responsiveness": summary,
        "responsiveness_method": "each run paired with its twin (same seed, the probe users' "
        "controls withheld); prevented share = 1 - with/without of the probe users' exposures "
        "to their targets within the horizon; mean and 95% Student-t interval over "
        "replications, cut at 1",
    }


def _deletion_delays(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per layer, the mean deletion delay with its interval over the replications, or why it is
    missing (the first reason a replication gave)."""
    delays: dict[str, Any] = {}
    for layer in runs[0]["delay_seconds"]:
        values = [run["delay_seconds"].get(layer) for run in runs]
        reasons = [value["missing"] for value in values if isinstance(value, dict)]
        if reasons or None in values:
            delays[layer] = {"missing": reasons[0] if reasons else "not measured in every run"}
            continue
        mean, low, high = interval([float(value) for value in values], low=0.0)
        delays[layer] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
    return delays


def _concatenate(out: Path, name: str, outcomes: list[RunOutcome]) -> None:
    """``name``.parquet at the top level: every run's table with its variant and replication."""
    tables = []
    for outcome in outcomes:
        table = pq.read_table(out / outcome.plan.folder / f"{name}.parquet")
        rows = table.num_rows
        table = table.add_column(
            0, "replication", pa.array([outcome.plan.replication] * rows, pa.int32())
        )
        table = table.add_column(0, "variant", pa.array([outcome.plan.variant] * rows, pa.string()))
        tables.append(table)
    if not tables:
        (out / f"{name}.parquet").unlink(missing_ok=True)
        return
    _write_parquet(out / f"{name}.parquet", pa.concat_tables(tables, promote_options="permissive"))


def write_report(
    folder: str | Path, out: str | Path | None = None, plotlyjs: str = "inline"
) -> Path:
    """Write the HTML report of a results directory (default ``FOLDER/report.html``)."""
    from reports.page import build_report

    path = Path(out) if out is not None else Path(folder) / "report.html"
    page = build_report(folder, plotlyjs)
    atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))
    return path


def _write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda p: pq.write_table(table, p))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, allow_nan=False)
    atomic_write(path, lambda p: p.write_text(text + "\n"))


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
    if events.arrival is not None:  # label delays: when each event reached the logs
        arrived = np.isfinite(events.arrival)  # lost, or its session never ended: null
        columns["arrival"] = pa.array(np.where(arrived, events.arrival, 0.0), mask=~arrived)
        columns["lost"] = np.isposinf(events.arrival)
    return pa.table(columns)


#: Packages whose versions can change results; recorded with every sweep.
RECORDED_PACKAGES = (
    "recloop", "numpy", "torch", "simpy", "pydantic", "pyarrow", "river", "mabwiser", "scipy",
    "pandas", "plotly",
)  # fmt: skip


def environment() -> dict[str, str]:
    """Python and the versions of the packages results depend on."""
    found = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def scenario_hash(scenario: Scenario) -> str:
    """SHA-256 of the fully resolved scenario: equal hashes, equal inputs."""
    return hashlib.sha256(resolved_yaml(scenario).encode("utf-8")).hexdigest()


def _version() -> str:
    try:
        return version("recloop")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"
